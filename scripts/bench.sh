#!/usr/bin/env bash
# Measures the product, the old node design and a bare-websocket floor side by side, at the same
# load, on this machine: a private Redis, then each server in turn (2 workers; the floor is one
# process with a thread per CPU), the same chat-bench scenarios against each. Writes the JSON lines to bench/results/<UTC date>.jsonl and prints a comparison.
#
#   bash scripts/bench.sh [--workers N] [--clients C] [--rooms R] [--senders S] [--rate R]
#                         [--seconds T] [--idle N]
# Everything targets 127.0.0.1 and every run is bounded in clients and seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

workers=2 clients=1000 rooms=10 senders=100 rate=5 seconds=10 idle=4000
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --rooms) rooms=$2; shift 2 ;;
    --senders) senders=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh
cargo build --locked --release -p chat-cluster -p chat-bench
(cd bench/node-peer && npm ci --no-audit --no-fund --loglevel=error)
bin=$repo/target/release
mkdir -p bench/results
out=bench/results/$(date -u +%Y-%m-%dT%H%M%SZ).jsonl
commit=$(git rev-parse --short HEAD)

started=()
stop_all() {
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  started=()
}
trap stop_all EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile /dev/null &
redis_pid=$!
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis_url=redis://127.0.0.1:$redis_port
base=17001
targets=$(seq -s, "$base" $((base + workers - 1)) | sed "s/\([0-9]*\)/127.0.0.1:\1/g")

wait_ports() {
  for port in $(seq "$base" $((base + workers - 1))); do
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  done
}

run_scenarios() { # name, server pids (comma-separated), [targets], [extra fanout flags]
  local name=$1 pids=$2 to=${3:-$targets} extra=${4:-}
  # Idle first, on fresh processes: memory measured after a load run would be flattered by
  # heap already grown.
  echo "bench.sh: $name: idle" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" idle $extra --target "$to" --connections "$idle" --pids "$pids" --sources 16 2>/dev/null \
    | sed "s/^{/{\"server\":\"$name\",\"commit\":\"$commit\",/" >> "$out"
  echo "bench.sh: $name: fanout" >&2
  # shellcheck disable=SC2086 # $extra is a list of flags
  "$bin/chat-bench" fanout $extra --target "$to" --clients "$clients" --rooms "$rooms" --senders "$senders" \
    --rate "$rate" --duration-secs "$seconds" --drain-secs 3 --server-pids "$pids,$redis_pid" 2>/dev/null \
    | sed "s/^{/{\"server\":\"$name\",\"commit\":\"$commit\",/" >> "$out"
}

# The product.
"$bin/chat-cluster" supervise --workers "$workers" --base-port "$base" --admin-port "$(free_port)" \
  --redis-url "$redis_url" --rate-burst 1000 --rate-per-sec 1000 > /dev/null 2>&1 &
supervisor=$!
started=("$supervisor")
wait_ports
sleep 1
run_scenarios product "$(pgrep -d, -P "$supervisor")"
stop_all

# The old node design.
(cd bench/node-peer && REDIS_URL=$redis_url WORKERS=$workers BASE_PORT=$base exec node server.js) > /dev/null 2>&1 &
primary=$!
started=("$primary")
wait_ports
sleep 1
run_scenarios node "$(pgrep -d, -P "$primary")"
stop_all

# The floor: one single-threaded process (like one product worker), plain websocket rooms, no
# Redis: the least work a room broadcaster can do per delivery.
"$bin/chat-bench" floor --listen "127.0.0.1:$base" > /dev/null 2>&1 &
floor=$!
started=("$floor")
wait_ports
run_scenarios floor "$floor" "127.0.0.1:$base" --raw
stop_all
kill -TERM "$redis_pid" 2>/dev/null || true

python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {(r["server"], r["scenario"]): r for r in rows}
def get(server, scenario, key):
    return by.get((server, scenario), {}).get(key)
metrics = [
    ("fanout", "deliveries_per_sec", "deliveries/s", False),
    ("fanout", "lost", "lost", False),
    ("fanout", "latency_ms_p50", "p50 ms", True),
    ("fanout", "latency_ms_p99", "p99 ms", True),
    ("fanout", "server_cpu_us_per_delivery", "server CPU us/delivery", True),
    ("idle", "server_rss_per_connection_bytes", "RSS bytes/connection", True),
]
print(f"{'metric':<26}{'product':>12}{'node':>12}{'floor':>12}{'node/product':>14}{'product/floor':>15}")
fmt = lambda v: "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
for scenario, key, label, lower_is_better in metrics:
    p, n, f = (get(s, scenario, key) for s in ("product", "node", "floor"))
    node_ratio = f"{n / p:.2f}x" if p and n else "-"
    floor_ratio = f"{p / f:.2f}x" if p and f else "-"
    print(f"{label:<26}{fmt(p):>12}{fmt(n):>12}{fmt(f):>12}{node_ratio:>14}{floor_ratio:>15}")
print(f"\nresults: {sys.argv[1]}")
EOF
