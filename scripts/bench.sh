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
# and ramp only). `--history-off` adds product-history-off: the product with `--history-size 0`
# (no room history, so no recovery), fanout and ramp only, for the cost of rooms that remember.
# `--metrics-off` adds product-metrics-off: the product built without its `metrics` feature
# (no counters, histograms or delivery probe; /metrics shows zeros), fanout and ramp only, for
# the cost of the metrics.
# The socketioxide peer's own reports of what it dropped (fred's "lagged by N",
# the adapter's "dropped a message") are counted from its log after each scenario. Writes the
# JSON lines to bench/results/<UTC stamp>.jsonl, draws latency against delivered rate from the
# ramps (bench/results/<UTC stamp>.svg, copied to bench/chart.svg) and prints a comparison.
#
#   bash scripts/bench.sh [--workers N] [--clients C] [--rooms R] [--senders S] [--rate R]
#                         [--seconds T] [--idle N] [--ramp R1,R2,...] [--step-seconds T]
#                         [--p99-limit-ms MS] [--servers a,b,...] [--tuned] [--history-off]
#                         [--metrics-off] [--no-nginx]
#                         [--sections all|three-way|topologies]
#                         [--dm-ramp R1,R2,...] [--wide-ramp R1,R2,...]
# `--sections topologies` runs only the last section (Redis Cluster and Sentinel-style
# replication, durability, Redis as the bottleneck: see the comment above it); `three-way`
# (the name predates the peers) only the comparison of servers.
# Everything targets 127.0.0.1 and every run is bounded in clients and seconds. Builds into
# $CARGO_TARGET_DIR when it is set (target/ otherwise), the socketioxide peer too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

workers=2 clients=1000 rooms=10 senders=100 rate=5 seconds=10 idle=4000
ramp=1,2,4,8,10,12,16,24,32,40,48 step_seconds=4 p99_limit_ms=50
servers=product,node,node-adapter,socketioxide,floor tuned=0 nginx=1 history_off=0 metrics_off=0
sections=all dm_rates=5,10,20,40,80,160 wide_ramp=0.5,1,2,4,8,16
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
    --history-off) history_off=1; shift ;;
    --metrics-off) metrics_off=1; shift ;;
    --no-nginx) nginx=0; shift ;;
    --sections) sections=$2; shift 2 ;;
    --dm-ramp) dm_rates=$2; shift 2 ;;
    --wide-ramp) wide_ramp=$2; shift 2 ;;
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
if [ "$metrics_off" = 1 ]; then
  cargo build --locked --release -p chat-cluster --no-default-features --target-dir "$target_dir/no-metrics"
fi
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

# Between two scenarios on the same servers, until the first one's clients have left their
# rooms everywhere: the product keeps a member whose connection dropped for
# --presence-grace-ms (5 s by default, for a recovery) before its `broadcast_quit`, so the
# quits of the previous scenario's 1000 clients would otherwise reach the next one's members
# in the middle of its first step (measured: p99 337 ms instead of 2.3 ms). Every server
# waits the same.
settle() { sleep 6; }

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
  settle
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
  settle
  echo "bench.sh: $name: fanout through nginx" >&2
  "$bin/chat-bench" fanout --target "127.0.0.1:$port" --sources 64 --clients "$clients" --rooms "$rooms" \
    --senders "$senders" --rate "$rate" --duration-secs "$seconds" --drain-secs 3 \
    --server-pids "$pids,$redis_pid,$master,$(pgrep -d, -P "$master")" 2>/dev/null \
    | tag "$name+nginx" >> "$out"
}

if [ "$sections" != topologies ]; then
# The product. $1: its name in the results; $2: extra flags for the supervisor; $3: skip-idle
# and nginx (for variants); $4: the binary (the release build by default).
product_run() {
  local name=$1 flags=$2 variant=${3:-} binary=${4:-$bin/chat-cluster}
  start_redis
  # shellcheck disable=SC2086 # $flags is a list of flags
  "$binary" supervise --workers "$workers" --base-port "$base" --admin-port "$(free_port)" \
    --redis-url "$redis_url" --rate-burst 1000 --rate-per-sec 1000 $flags > /dev/null 2>&1 &
  supervisor=$!
  started=("$supervisor")
  wait_ports "$base" "$last"
  sleep 1
  product_pids=$(pgrep -d, -P "$supervisor")
  if [ -n "$variant" ]; then
    run_scenarios "$name" "$product_pids" "$targets" "$flags" skip-idle  # the flags are chat-bench's too
  else
    run_scenarios "$name" "$product_pids"
    fanout_via_nginx "$name" "$product_pids"
  fi
  stop_all
}
if wanted product; then
  product_run product ""
  if [ "$history_off" = 1 ]; then
    product_run product-history-off "--history-size 0" variant
  fi
  if [ "$metrics_off" = 1 ]; then
    product_run product-metrics-off "" variant "$target_dir/no-metrics/release/chat-cluster"
  fi
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
order = ["product", "product-history-off", "product-metrics-off", "node", "node-adapter", "socketioxide", "socketioxide-tuned", "floor"]
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
fi

# ---------------------------------------------------------------------------------------------
# Redis topologies and durability (issue 12): the product alone, on
#   - standalone: a master and one replica (replica of everything, as Sentinel would run it);
#   - cluster: a Redis Cluster of 3 masters and 3 replicas (`redis-cli --cluster create`);
# 1. rooms: the standard fanout (as above) and its ramp on each, 2 workers;
# 2. direct messages (`chat-bench dm`): 100 senders writing to 100 recipients (logged in,
#    acknowledging), 5/s per sender (500 sends/s), then a ramp of the rate, under
#    `--durability local` and `replicated`, on each: acknowledged sends/s, the sender's ack
#    latency, CPU per message;
# 3. Redis as the bottleneck: 8 workers, 1001 rooms of 4 members each on 4 different workers
#    (4004 clients, one sender per room: every room message goes through Redis to 3 other
#    workers), a ramp of the room message rate on each: the Redis servers' CPU per room message
#    and their share of a core, next to the workers'; and each Redis process's CPU over the
#    whole ramp (how evenly a cluster spreads it).
# Server CPU counts every worker and every Redis process (replicas too); Redis CPU is also
# reported apart (`redis_cores`: CPU over wall time summed over the Redis processes, each of
# which runs commands on one core).
if [ "$sections" != three-way ]; then
topo_dir=$(mktemp -d /tmp/chat-bench-redis.XXXXXX)
# chat-bench's readable tables and any connection errors of this section.
topo_log=bench/results/$stamp-topologies.log
nginx_dirs+=("$topo_dir")  # removed with them by cleanup
topo_pids=()
start_redis_node() { # port, extra redis-server flags...: starts it, waits for PING
  local port=$1
  shift
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$topo_dir" \
    --dbfilename "dump-$port.rdb" --logfile /dev/null "$@" &
  topo_pids+=("$!")
  for _ in $(seq 1 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  echo "bench.sh: redis-server on $port did not start" >&2
  exit 1
}
stop_redis_nodes() {
  for pid in "${topo_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${topo_pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  topo_pids=()
}
# Redis processes are stopped by the EXIT trap too.
trap 'stop_redis_nodes; cleanup' EXIT

start_standalone() { # sets redis_url; master and replica in topo_pids
  local master replica
  master=$(free_port)
  replica=$(free_port)
  start_redis_node "$master"
  start_redis_node "$replica" --replicaof 127.0.0.1 "$master"
  for _ in $(seq 1 100); do
    redis-cli -p "$replica" info replication | grep -q master_link_status:up && break
    sleep 0.1
  done
  redis_url=redis://127.0.0.1:$master
}

start_cluster() { # sets redis_url; 6 nodes in topo_pids
  local ports=() nodes=() port
  for _ in 1 2 3 4 5 6; do ports+=("$(free_port)"); done
  for port in "${ports[@]}"; do
    # Its cluster bus port set too: by default port + 10000, which may be taken or above 65535.
    start_redis_node "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
      --cluster-node-timeout 5000 --cluster-port "$(free_port)"
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes > /dev/null
  for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
      redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break
      sleep 0.1
    done
  done
  redis_url="redis-cluster://127.0.0.1:${ports[0]}?$(printf 'node=%s&' "${nodes[@]:1}" | sed 's/&$//')"
}

topo_base=18001
start_product_on() { # workers, extra supervise flags...: sets worker_pids and topo_targets
  local count=$1
  shift
  "$bin/chat-cluster" supervise --workers "$count" --base-port "$topo_base" --admin-port "$(free_port)" \
    --redis-url "$redis_url" --rate-burst 1000 --rate-per-sec 1000 \
    --sender-rate-per-sec 100000 --sender-rate-burst 100000 "$@" > /dev/null 2>&1 &
  started=("$!")
  wait_ports "$topo_base" $((topo_base + count - 1))
  for _ in $(seq 1 100); do
    local ready=1
    for port in $(seq "$topo_base" $((topo_base + count - 1))); do
      curl -fs "http://127.0.0.1:$port/ready" > /dev/null || ready=0
    done
    [ "$ready" = 1 ] && break
    sleep 0.1
  done
  worker_pids=$(pgrep -d, -P "${started[0]}")
  topo_targets=$(seq -s, "$topo_base" $((topo_base + count - 1)) | sed "s/\([0-9]*\)/127.0.0.1:\1/g")
}

rooms_on() { # label
  local redis_pids
  redis_pids=$(IFS=,; echo "${topo_pids[*]}")
  echo "bench.sh: $1: rooms, fanout" >&2
  "$bin/chat-bench" fanout --target "$topo_targets" --clients "$clients" --rooms "$rooms" \
    --senders "$senders" --rate "$rate" --duration-secs "$seconds" --drain-secs 3 \
    --server-pids "$worker_pids,$redis_pids" --redis-pids "$redis_pids" 2>>"$topo_log" | tag "$1" >> "$out"
  echo "bench.sh: $1: rooms, ramp $ramp" >&2
  "$bin/chat-bench" fanout --target "$topo_targets" --clients "$clients" --rooms "$rooms" \
    --senders "$senders" --ramp "$ramp" --p99-limit-ms "$p99_limit_ms" --duration-secs "$step_seconds" \
    --drain-secs 3 --server-pids "$worker_pids,$redis_pids" --redis-pids "$redis_pids" 2>>"$topo_log" \
    | tag "$1" >> "$out"
}

dms_on() { # label
  local redis_pids
  redis_pids=$(IFS=,; echo "${topo_pids[*]}")
  echo "bench.sh: $1: direct messages, 5/s per sender" >&2
  "$bin/chat-bench" dm --target "$topo_targets" --senders 100 --recipients 100 --rate 5 \
    --duration-secs "$seconds" --drain-secs 5 --user-prefix "std-" \
    --server-pids "$worker_pids,$redis_pids" --redis-pids "$redis_pids" 2>>"$topo_log" \
    | sed 's/"scenario":"dm"/"scenario":"dm-standard"/' | tag "$1" >> "$out"
  echo "bench.sh: $1: direct messages, ramp $dm_rates" >&2
  "$bin/chat-bench" dm --target "$topo_targets" --senders 100 --recipients 100 --rate "$dm_rates" \
    --duration-secs "$step_seconds" --drain-secs 5 --p99-limit-ms "$p99_limit_ms" --user-prefix "ramp-" \
    --server-pids "$worker_pids,$redis_pids" --redis-pids "$redis_pids" 2>>"$topo_log" \
    | sed 's/"scenario":"dm"/"scenario":"dm-ramp"/' | tag "$1" >> "$out"
}

cpu_ticks() { # pid: user + system clock ticks so far (0 if gone)
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
wide_on() { # label: 8 workers, 1001 rooms of 4 (client i is in room i % 1001, on worker i % 8)
  local redis_pids pid before=() i=0 per=""
  redis_pids=$(IFS=,; echo "${topo_pids[*]}")
  for pid in "${topo_pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
  echo "bench.sh: $1: 8 workers, 1001 rooms, ramp $wide_ramp" >&2
  "$bin/chat-bench" fanout --target "$topo_targets" --clients 4004 --rooms 1001 --senders 1001 \
    --sources 16 --ramp "$wide_ramp" --p99-limit-ms "$p99_limit_ms" --duration-secs "$step_seconds" \
    --drain-secs 3 --room-prefix wide- --server-pids "$worker_pids,$redis_pids" --redis-pids "$redis_pids" \
    2>>"$topo_log" | sed 's/"scenario":"ramp"/"scenario":"wide-ramp"/' | tag "$1" >> "$out"
  for pid in "${topo_pids[@]}"; do
    per+="$([ -z "$per" ] || echo ,)$(( $(cpu_ticks "$pid") - before[i] ))"
    i=$((i + 1))
  done
  echo "{\"scenario\":\"wide-redis-ticks\",\"clock_ticks_per_sec\":$(getconf CLK_TCK),\"per_process\":[$per]}" \
    | tag "$1" >> "$out"
}

for topology in standalone cluster; do
  "start_$topology"
  start_product_on "$workers" --durability local
  rooms_on "$topology"
  dms_on "$topology-local"
  stop_all
  start_product_on "$workers" --durability replicated
  dms_on "$topology-replicated"
  stop_all
  start_product_on 8 --durability local
  wide_on "$topology"
  stop_all
  stop_redis_nodes
done
load=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out" "$load" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(r["server"], r["scenario"]): r for r in rows}
topologies = ("standalone", "cluster")
print(f"\nRedis topologies (load average at the end: {sys.argv[2]})")
print("\nrooms, the standard fanout (2 workers):")
print(f"  {'topology':<12}{'delivered/s':>12}{'lost':>6}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8}{'Redis us':>9}"
      f"{'Redis cores':>12}{'ramp best/s':>12}{'its p99':>8}")
for t in topologies:
    f, r = by.get((t, "fanout")), by.get((t, "ramp"))
    if f:
        best = r.get("best_offered_per_sec") if r else None
        print(f"  {t:<12}{f['deliveries_per_sec']:>12.0f}{f['lost']:>6}{f['latency_ms_p50']:>8.1f}{f['latency_ms_p99']:>8.1f}"
              f"{f['server_cpu_us_per_delivery']:>8.2f}{f['redis_cpu_us_per_delivery']:>9.2f}{f['redis_cores']:>12.2f}"
              f"{(best or 0):>12.0f}{(r or {}).get('best_latency_ms_p99') or 0:>8.1f}")
        if r:
            print(f"  {'':<12}ramp stopped: {r['stopped_because']}")
print("\ndirect messages: 100 senders to 100 recipients, 5/s per sender (2 workers), then a ramp:")
print(f"  {'setup':<24}{'acked/s':>8}{'ack p50':>8}{'ack p99':>8}{'dlv p99':>8}{'CPU us/msg':>11}{'Redis cores':>12}"
      f"{'ramp best acked/s':>18}{'its ack p99':>12}")
for t in topologies:
    for d in ("local", "replicated"):
        key = f"{t}-{d}"
        s, r = by.get((key, "dm-standard")), by.get((key, "dm-ramp"))
        if not s:
            continue
        step = s["steps"][0]
        print(f"  {key:<24}{step['acked_per_sec']:>8.0f}{step['ack_ms_p50']:>8.2f}{step['ack_ms_p99']:>8.2f}"
              f"{step['delivery_ms_p99']:>8.2f}{step['server_cpu_us_per_message']:>11.1f}{step['redis_cores']:>12.2f}"
              f"{(r or {}).get('best_acked_per_sec') or 0:>18.0f}{(r or {}).get('best_ack_ms_p99') or 0:>12.2f}")
        if step["verdict"] != "held":
            print(f"  {'':<24}standard load: {step['verdict']}")
        if r:
            print(f"  {'':<24}ramp stopped: {r['stopped_because']}")
print("\n8 workers, 1001 rooms of 4 members on 4 workers each, one sender per room (ramp):")
print(f"  {'topology':<12}{'msgs/s':>8}{'dlv/s':>9}{'p99 ms':>8}{'CPU us/dlv':>11}{'Redis us/msg':>13}{'Redis cores':>12}"
      f"{'busiest at 1 core':>18}  verdict")
for t in topologies:
    r = by.get((t, "wide-ramp"))
    if not r:
        continue
    # The busiest Redis process's share of all Redis CPU over the ramp: a Redis server runs
    # commands on one core, so the busiest one saturates first.
    ticks = by.get((t, "wide-redis-ticks"))
    secs = [n / ticks["clock_ticks_per_sec"] for n in ticks["per_process"]] if ticks else []
    share = max(secs) / sum(secs) if secs and sum(secs) > 0 else 1.0
    for s in r["steps"]:
        msgs = s["sent"] / max(s["send_seconds"], 1e-9)
        per_msg = s["redis_cpu_seconds"] * 1e6 / max(s["sent"], 1)
        at_core = 1e6 / (per_msg * share) if per_msg > 0 else 0
        print(f"  {t:<12}{msgs:>8.0f}{s['deliveries_per_sec']:>9.0f}{s['latency_ms_p99']:>8.1f}"
              f"{s['server_cpu_us_per_delivery']:>11.2f}{per_msg:>13.1f}{s['redis_cores']:>12.2f}{at_core:>18.0f}  {s['verdict']}")
    if secs:
        print(f"  {t:<12}CPU seconds of each Redis process over the ramp: {', '.join(f'{x:.1f}' for x in secs)}"
              f" (busiest: {share:.0%} of all Redis CPU)")
print(f"\nresults: {sys.argv[1]}")
PY
fi
