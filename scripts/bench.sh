#!/usr/bin/env bash
# Measures the product, its peers and a bare-websocket floor side by side, at the same load, on
# this machine, each server with a private Redis of its own:
#   product       chat-cluster supervise --workers N
#   node          the old node design (bench/node-peer: socket.io 4, a Redis channel per room)
#   node-adapter  node socket.io 4 with the official @socket.io/redis-adapter
#                 (bench/node-adapter-peer), one process per port
#   socketioxide  a stock socketioxide + socketioxide-redis (fred) server from the crates.io
#                 releases (bench/socketioxide-peer), one process per port
#   floor         chat-bench floor: one single-threaded process, plain websocket rooms, no Redis
# Every server but the floor runs N processes (2 by default); the same chat-bench scenarios run
# against each: idle (memory per connection), fanout (the standard load, after a join burst)
# and a ramp (steps of increasing rate on the same connections, until p99 goes above the limit
# or anything is lost); product and node also take the standard fanout through nginx (ip_hash,
# clients on 64 source addresses). `--tuned` adds a clearly labelled line, socketioxide-tuned:
# the same stock server with fred's broadcast channel raised from 32 to 4096 messages (fanout
# and ramp only). The socketioxide peer's own reports of what it dropped (fred's "lagged by N",
# the adapter's "dropped a message") are counted from its log after each scenario. Writes the
# JSON lines to bench/results/<UTC stamp>.jsonl, draws latency against delivered rate from the
# ramps (bench/results/<UTC stamp>.svg, copied to bench/chart.svg) and prints a comparison.
#
#   bash scripts/bench.sh [--workers N] [--clients C] [--rooms R] [--senders S] [--rate R]
#                         [--seconds T] [--idle N] [--ramp R1,R2,...] [--step-seconds T]
#                         [--p99-limit-ms MS] [--servers a,b,...] [--tuned] [--no-nginx]
# Everything targets 127.0.0.1 and every run is bounded in clients and seconds. Builds into
# $CARGO_TARGET_DIR when it is set (target/ otherwise), the socketioxide peer too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

workers=2 clients=1000 rooms=10 senders=100 rate=5 seconds=10 idle=4000
ramp=1,2,4,8,10,12,16,24,32,40,48 step_seconds=4 p99_limit_ms=50
servers=product,node,node-adapter,socketioxide,floor tuned=0 nginx=1
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --rooms) rooms=$2; shift 2 ;;
    --senders) senders=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --step-seconds) step_seconds=$2; shift 2 ;;
    --p99-limit-ms) p99_limit_ms=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --tuned) tuned=1; shift ;;
    --no-nginx) nginx=0; shift ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
wanted() { case ",$servers," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for server in ${servers//,/ }; do
  case "$server" in
    product|node|node-adapter|socketioxide|floor) ;;
    *) echo "bench.sh: unknown server $server (product, node, node-adapter, socketioxide, floor)" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
cargo build --locked --release -p chat-cluster -p chat-bench
if wanted socketioxide; then
  # Outside the workspace (and its [patch.crates-io]): the crates.io socketioxide.
  cargo build --locked --release --manifest-path bench/socketioxide-peer/Cargo.toml --target-dir "$target_dir"
fi
if wanted node; then (cd bench/node-peer && npm ci --no-audit --no-fund --loglevel=error); fi
if wanted node-adapter; then (cd bench/node-adapter-peer && npm ci --no-audit --no-fund --loglevel=error); fi
bin=$target_dir/release
mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out=bench/results/$stamp.jsonl
commit=$(git rev-parse --short HEAD)
# Tracked files changed since the commit: say so in the results.
[ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit+changes"
run_started=$(date +%s)
echo "bench.sh: $stamp, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

started=()
redis_pid=
stop_all() {
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  started=()
}
stop_redis() {
  [ -z "$redis_pid" ] || kill -TERM "$redis_pid" 2>/dev/null || true
  [ -z "$redis_pid" ] || wait "$redis_pid" 2>/dev/null || true
  redis_pid=
}
nginx_dirs=()
cleanup() {
  stop_all
  [ ${#nginx_dirs[@]} -eq 0 ] || rm -rf "${nginx_dirs[@]}"
  stop_redis
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A fresh private Redis for the next server: nothing left over from the one before.
start_redis() {
  stop_redis
  local port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile /dev/null &
  redis_pid=$!
  for _ in $(seq 1 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  redis_url=redis://127.0.0.1:$port
}
base=17001
last=$((base + workers - 1))
targets=$(seq -s, "$base" "$last" | sed "s/\([0-9]*\)/127.0.0.1:\1/g")

wait_ports() { # first port, last port: waits (at most 10 s each) until they accept
  for port in $(seq "$1" "$2"); do
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  done
}

# Prefixes a JSON line with the server's name, the commit and the run's stamp.
tag() { sed "s/^{/{\"server\":\"$1\",\"commit\":\"$commit\",\"date\":\"$stamp\",/"; }

# What the socketioxide peer reported dropping so far (its log files: $peer_logs), as a JSON
# line for the scenario that just ran: fred's broadcast channel "lagged by N" (N messages
# skipped) and the adapter's "dropped a message" (its per-channel buffer was full).
peer_logs=()
peer_drops() { # name, scenario
  [ ${#peer_logs[@]} -gt 0 ] || return 0
  local lagged dropped
  lagged=$(cat "${peer_logs[@]}" | sed -n 's/.*pubsub channel lagged by \([0-9]*\).*/\1/p' | awk '{s += $1} END {print s + 0}')
  dropped=$(cat "${peer_logs[@]}" | grep -c "fred driver dropped a message" || true)
  echo "{\"scenario\":\"peer_drops\",\"after\":\"$2\",\"fred_lagged_total\":$lagged,\"adapter_dropped_total\":$dropped}" \
    | tag "$1" >> "$out"
}

run_scenarios() { # name, server pids (comma-separated), [targets], [extra fanout flags], [skip idle]
  local name=$1 pids=$2 to=${3:-$targets} extra=${4:-} skip_idle=${5:-}
  # The fanout charges the servers' Redis too (none for the floor).
  local charged=$pids${redis_pid:+,$redis_pid}
  if [ -z "$skip_idle" ]; then
    # Idle first, on fresh processes: memory measured after a load run would be flattered by
    # heap already grown.
    echo "bench.sh: $name: idle" >&2
    # shellcheck disable=SC2086 # $extra is a list of flags
    "$bin/chat-bench" idle $extra --target "$to" --connections "$idle" --pids "$pids" --sources 16 2>/dev/null \
      | tag "$name" >> "$out"
    peer_drops "$name" idle
  fi
  echo "bench.sh: $name: fanout" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" fanout $extra --target "$to" --clients "$clients" --rooms "$rooms" --senders "$senders" \
    --rate "$rate" --duration-secs "$seconds" --drain-secs 3 --server-pids "$charged" 2>/dev/null \
    | tag "$name" >> "$out"
  peer_drops "$name" fanout
  echo "bench.sh: $name: ramp $ramp" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" fanout $extra --target "$to" --clients "$clients" --rooms "$rooms" --senders "$senders" \
    --ramp "$ramp" --p99-limit-ms "$p99_limit_ms" --duration-secs "$step_seconds" --drain-secs 3 \
    --server-pids "$charged" 2>/dev/null \
    | tag "$name" >> "$out"
  peer_drops "$name" ramp
}

# The standard fanout again, through nginx (the deployment's ip_hash upstream over the same
# worker ports, generated by `chat-cluster nginx-config`), with clients spread over 64 source
# addresses that differ in the third octet so that ip_hash spreads them over the workers. The
# server CPU includes nginx's processes.
fanout_via_nginx() { # name, server pids (comma-separated)
  [ "$nginx" = 1 ] || return 0
  local name=$1 pids=$2 dir port master
  dir=$(mktemp -d /tmp/chat-bench-nginx.XXXXXX)
  nginx_dirs+=("$dir")
  chmod 755 "$dir"  # nginx's workers drop root and still need their temp directories
  port=$(free_port)
  "$bin/chat-cluster" nginx-config --upstream "$targets" --listen "127.0.0.1:$port" \
    --runtime-dir "$dir" > "$dir/nginx.conf"
  "$nginx_bin" -c "$dir/nginx.conf" -p "$dir/" > /dev/null 2>&1 &
  master=$!
  started+=("$master")
  wait_ports "$port" "$port"
  echo "bench.sh: $name: fanout through nginx" >&2
  "$bin/chat-bench" fanout --target "127.0.0.1:$port" --sources 64 --clients "$clients" --rooms "$rooms" \
    --senders "$senders" --rate "$rate" --duration-secs "$seconds" --drain-secs 3 \
    --server-pids "$pids,$redis_pid,$master,$(pgrep -d, -P "$master")" 2>/dev/null \
    | tag "$name+nginx" >> "$out"
}

# The product.
if wanted product; then
  start_redis
  "$bin/chat-cluster" supervise --workers "$workers" --base-port "$base" --admin-port "$(free_port)" \
    --redis-url "$redis_url" --rate-burst 1000 --rate-per-sec 1000 > /dev/null 2>&1 &
  supervisor=$!
  started=("$supervisor")
  wait_ports "$base" "$last"
  sleep 1
  product_pids=$(pgrep -d, -P "$supervisor")
  run_scenarios product "$product_pids"
  fanout_via_nginx product "$product_pids"
  stop_all
fi

# The old node design.
if wanted node; then
  start_redis
  (cd bench/node-peer && REDIS_URL=$redis_url WORKERS=$workers BASE_PORT=$base exec node server.js) > /dev/null 2>&1 &
  primary=$!
  started=("$primary")
  wait_ports "$base" "$last"
  sleep 1
  node_pids=$(pgrep -d, -P "$primary")
  run_scenarios node "$node_pids"
  fanout_via_nginx node "$node_pids"
  stop_all
fi

# node socket.io with the official Redis adapter: one process per port.
if wanted node-adapter; then
  start_redis
  for port in $(seq "$base" "$last"); do
    (cd bench/node-adapter-peer && REDIS_URL=$redis_url PORT=$port exec node server.js) > /dev/null 2>&1 &
    started+=($!)
  done
  wait_ports "$base" "$last"
  sleep 1
  run_scenarios node-adapter "$(IFS=,; echo "${started[*]}")"
  stop_all
fi

# The stock socketioxide server: one process per port, its log kept to count what it dropped.
# $1: the server's name in the results; the rest: environment for the peer, then flags for
# run_scenarios' idle (skip-idle for the tuned line).
socketioxide_peer() {
  local name=$1 env=$2 skip_idle=${3:-} port log
  start_redis
  peer_logs=()
  for port in $(seq "$base" "$last"); do
    log=bench/results/$stamp-$name-$port.log
    peer_logs+=("$log")
    # shellcheck disable=SC2086 # $env is a list of assignments
    env REDIS_URL="$redis_url" PORT="$port" $env "$bin/socketioxide-peer" > /dev/null 2> "$log" &
    started+=($!)
  done
  wait_ports "$base" "$last"
  sleep 1
  run_scenarios "$name" "$(IFS=,; echo "${started[*]}")" "$targets" "" "$skip_idle"
  stop_all
  peer_logs=()
}
if wanted socketioxide; then
  socketioxide_peer socketioxide ""
  if [ "$tuned" = 1 ]; then
    socketioxide_peer socketioxide-tuned "FRED_BROADCAST_CAPACITY=4096" skip-idle
  fi
fi

# The floor: one single-threaded process (like one product worker), plain websocket rooms, no
# Redis: the least work a room broadcaster can do per delivery (one shared frame per message,
# one flush per member per wakeup, 1 KiB read buffers).
if wanted floor; then
  stop_redis
  "$bin/chat-bench" floor --listen "127.0.0.1:$base" > /dev/null 2>&1 &
  floor=$!
  started=("$floor")
  wait_ports "$base" "$base"
  run_scenarios floor "$floor" "127.0.0.1:$base" --raw
  stop_all
fi
cleanup
echo "bench.sh: took $(( $(date +%s) - run_started )) s; load average now: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    key = (r["server"], r["scenario"] if r["scenario"] != "peer_drops" else "drops:" + r["after"])
    by[key] = r
order = ["product", "node", "node-adapter", "socketioxide", "socketioxide-tuned", "floor"]
servers = [s for s in order if any(k[0] == s for k in by)]
def get(server, scenario, key):
    return by.get((server, scenario), {}).get(key)
def kb(v):
    return None if v is None else v / 1000
metrics = [
    ("fanout", "deliveries_per_sec", "deliveries/s", None),
    ("fanout", "lost", "lost", None),
    ("fanout", "reordered", "reordered (not lost)", None),
    ("fanout", "joins_lost", "join burst: lost", None),
    ("fanout", "joins_expected", "  of expected", None),
    ("fanout", "joins_arrived_late", "  lost ones that came late", None),
    ("fanout", "latency_ms_p50", "p50 ms", None),
    ("fanout", "latency_ms_p99", "p99 ms", None),
    ("fanout", "server_cpu_us_per_delivery", "server CPU us/delivery", None),
    ("fanout", "server_user_us_per_delivery", "  of it user space", None),
    ("fanout", "server_system_us_per_delivery", "  of it kernel", None),
    ("fanout", "bench_cpu_seconds", "generator CPU s", None),
    ("idle", "server_rss_per_connection_bytes", "RSS KB/idle connection", kb),
    ("ramp", "best_offered_per_sec", "ramp: best held /s", None),
    ("ramp", "best_latency_ms_p99", "ramp: its p99 ms", None),
    ("ramp", "joins_lost", "ramp's join burst: lost", None),
    ("ramp", "joins_arrived_late", "  lost ones that came late", None),
    ("drops:ramp", "fred_lagged_total", "fred lagged (whole run)", None),
]
fmt = lambda v: "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
widths = [max(13, len(s) + 2) for s in servers]
def line(label, cells):
    print(f"{label:<26}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
line("metric", servers)
for scenario, key, label, conv in metrics:
    values = [get(s, scenario, key) for s in servers]
    if all(v is None for v in values):
        continue
    values = [conv(v) if conv else v for v in values]
    line(label, [fmt(v) for v in values])
ratios = [
    ("fanout", "server_cpu_us_per_delivery", "server CPU per delivery"),
    ("fanout", "server_user_us_per_delivery", "  user space"),
    ("idle", "server_rss_per_connection_bytes", "RSS per idle connection"),
]
if "product" in servers:
    print()
    line("ratio to the product", servers)
    for scenario, key, label in ratios:
        p = get("product", scenario, key)
        cells = [f"{get(s, scenario, key) / p:.2f}x" if p and get(s, scenario, key) else "-" for s in servers]
        line(label, cells)
    p = get("product", "ramp", "best_offered_per_sec")
    cells = [f"{get(s, 'ramp', 'best_offered_per_sec') / p:.2f}x" if p and get(s, "ramp", "best_offered_per_sec") else "-"
             for s in servers]
    line("ramp: best held", cells)
drops = [(s, [by[k] for k in by if k[0] == s and k[1].startswith("drops:")]) for s in servers]
for server, lines in drops:
    if lines:
        print(f"\n{server}: what it reported dropping (cumulative, from its log): "
              + ", ".join(f"after {l['after']}: fred lagged {l['fred_lagged_total']}, adapter dropped "
                          f"{l['adapter_dropped_total']}" for l in lines))
through = [(s, by.get((s + "+nginx", "fanout"))) for s in ("product", "node")]
if any(r for _, r in through):
    print("\nthe standard fanout through nginx (64 source addresses; server CPU includes nginx):")
    print(f"  {'server':<10}{'delivered/s':>12}{'lost':>6}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8}{'user us':>8}"
          f"{'connect fails':>15}")
    for server, r in through:
        if r:
            print(f"  {server:<10}{r['deliveries_per_sec']:>12.0f}{r['lost']:>6}{r['latency_ms_p50']:>8.1f}"
                  f"{r['latency_ms_p99']:>8.1f}{r['server_cpu_us_per_delivery']:>8.2f}"
                  f"{r.get('server_user_us_per_delivery', 0):>8.2f}{r['connect_failures']:>15}")
for server in servers:
    ramp = by.get((server, "ramp"))
    if not ramp:
        continue
    print(f"\nramp, {server}: {ramp['stopped_because']}")
    print(f"  {'rate/sender':>11} {'offered/s':>10} {'delivered/s':>11} {'lost':>6} {'p50 ms':>8}"
          f" {'p99 ms':>8} {'CPU us':>7} {'user us':>7} {'gen busy':>8}  verdict")
    for s in ramp["steps"]:
        print(f"  {s['rate_per_sender']:>11g} {s['offered_per_sec']:>10.0f} {s['deliveries_per_sec']:>11.0f}"
              f" {s['lost']:>6} {s['latency_ms_p50']:>8.1f} {s['latency_ms_p99']:>8.1f}"
              f" {s['server_cpu_us_per_delivery']:>7.2f} {s.get('server_user_us_per_delivery', 0):>7.2f}"
              f" {s.get('generator_busy', 0):>8.2f}  {s['verdict']}")
print(f"\nresults: {sys.argv[1]}")
PY

python3 scripts/bench_chart.py "$out" "bench/results/$stamp.svg"
cp "bench/results/$stamp.svg" bench/chart.svg
echo "chart: bench/results/$stamp.svg (copied to bench/chart.svg)"
