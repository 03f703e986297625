#!/usr/bin/env bash
# Measures the product, the old node design and a bare-websocket floor side by side, at the same
# load, on this machine: a private Redis, then each server in turn (2 workers; the floor is one
# single-threaded process), the same chat-bench scenarios against each: idle (memory per
# connection), fanout (the standard load) and a ramp (steps of increasing rate on the same
# connections, until p99 goes above the limit or anything is lost); product and node also take
# the standard fanout through nginx (ip_hash, clients on 64 source addresses). Writes the JSON lines to
# bench/results/<UTC stamp>.jsonl, draws latency against delivered rate from the ramps
# (bench/results/<UTC stamp>.svg, copied to bench/chart.svg) and prints a comparison.
#
#   bash scripts/bench.sh [--workers N] [--clients C] [--rooms R] [--senders S] [--rate R]
#                         [--seconds T] [--idle N] [--ramp R1,R2,...] [--step-seconds T]
#                         [--p99-limit-ms MS]
# Everything targets 127.0.0.1 and every run is bounded in clients and seconds. Builds into
# $CARGO_TARGET_DIR when it is set (target/ otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

workers=2 clients=1000 rooms=10 senders=100 rate=5 seconds=10 idle=4000
ramp=1,2,4,8,10,12,16,24,32,40,48 step_seconds=4 p99_limit_ms=50
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
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --locked --release -p chat-cluster -p chat-bench
(cd bench/node-peer && npm ci --no-audit --no-fund --loglevel=error)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out=bench/results/$stamp.jsonl
commit=$(git rev-parse --short HEAD)
# Tracked files changed since the commit: say so in the results.
[ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit+changes"

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
nginx_dirs=()
cleanup() {
  stop_all
  [ ${#nginx_dirs[@]} -eq 0 ] || rm -rf "${nginx_dirs[@]}"
  [ -z "$redis_pid" ] || kill -TERM "$redis_pid" 2>/dev/null || true
  redis_pid=
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile /dev/null &
redis_pid=$!
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis_url=redis://127.0.0.1:$redis_port
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

run_scenarios() { # name, server pids (comma-separated), [targets], [extra fanout flags]
  local name=$1 pids=$2 to=${3:-$targets} extra=${4:-}
  # Idle first, on fresh processes: memory measured after a load run would be flattered by
  # heap already grown.
  echo "bench.sh: $name: idle" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" idle $extra --target "$to" --connections "$idle" --pids "$pids" --sources 16 2>/dev/null \
    | tag "$name" >> "$out"
  echo "bench.sh: $name: fanout" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" fanout $extra --target "$to" --clients "$clients" --rooms "$rooms" --senders "$senders" \
    --rate "$rate" --duration-secs "$seconds" --drain-secs 3 --server-pids "$pids,$redis_pid" 2>/dev/null \
    | tag "$name" >> "$out"
  echo "bench.sh: $name: ramp $ramp" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" fanout $extra --target "$to" --clients "$clients" --rooms "$rooms" --senders "$senders" \
    --ramp "$ramp" --p99-limit-ms "$p99_limit_ms" --duration-secs "$step_seconds" --drain-secs 3 \
    --server-pids "$pids,$redis_pid" 2>/dev/null \
    | tag "$name" >> "$out"
}

# The standard fanout again, through nginx (the deployment's ip_hash upstream over the same
# worker ports, generated by `chat-cluster nginx-config`), with clients spread over 64 source
# addresses that differ in the third octet so that ip_hash spreads them over the workers. The
# server CPU includes nginx's processes.
fanout_via_nginx() { # name, server pids (comma-separated)
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

# The old node design.
(cd bench/node-peer && REDIS_URL=$redis_url WORKERS=$workers BASE_PORT=$base exec node server.js) > /dev/null 2>&1 &
primary=$!
started=("$primary")
wait_ports "$base" "$last"
sleep 1
node_pids=$(pgrep -d, -P "$primary")
run_scenarios node "$node_pids"
fanout_via_nginx node "$node_pids"
stop_all

# The floor: one single-threaded process (like one product worker), plain websocket rooms, no
# Redis: the least work a room broadcaster can do per delivery (one shared frame per message,
# one flush per member per wakeup, 1 KiB read buffers).
"$bin/chat-bench" floor --listen "127.0.0.1:$base" > /dev/null 2>&1 &
floor=$!
started=("$floor")
wait_ports "$base" "$base"
run_scenarios floor "$floor" "127.0.0.1:$base" --raw
cleanup

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(r["server"], r["scenario"]): r for r in rows}
def get(server, scenario, key):
    return by.get((server, scenario), {}).get(key)
metrics = [
    ("fanout", "deliveries_per_sec", "deliveries/s"),
    ("fanout", "lost", "lost"),
    ("fanout", "latency_ms_p50", "p50 ms"),
    ("fanout", "latency_ms_p99", "p99 ms"),
    ("fanout", "server_cpu_us_per_delivery", "server CPU us/delivery"),
    ("fanout", "server_user_us_per_delivery", "  of it user space"),
    ("fanout", "server_system_us_per_delivery", "  of it kernel"),
    ("fanout", "bench_cpu_seconds", "generator CPU s"),
    ("idle", "server_rss_per_connection_bytes", "RSS bytes/connection"),
    ("ramp", "best_offered_per_sec", "ramp: best held /s"),
    ("ramp", "best_latency_ms_p99", "ramp: its p99 ms"),
]
print(f"{'metric':<26}{'product':>12}{'node':>12}{'floor':>12}{'node/product':>14}{'product/floor':>15}")
fmt = lambda v: "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
for scenario, key, label in metrics:
    p, n, f = (get(s, scenario, key) for s in ("product", "node", "floor"))
    node_ratio = f"{n / p:.2f}x" if p and n else "-"
    floor_ratio = f"{p / f:.2f}x" if p and f else "-"
    print(f"{label:<26}{fmt(p):>12}{fmt(n):>12}{fmt(f):>12}{node_ratio:>14}{floor_ratio:>15}")
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
for server in ("product", "node", "floor"):
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
