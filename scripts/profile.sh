#!/usr/bin/env bash
# Records a perf profile of one server process under the standard fanout load and prints where
# its time goes: kernel against user space, the send system call, and the top symbols.
#   bash scripts/profile.sh [product|floor] [--rate SAY_PER_SEC_PER_SENDER] [--seconds N]
# product: worker 0 of `chat-cluster supervise --workers 2` with a private Redis; floor: the
# single-process bare-websocket floor. Load: 1000 clients in 10 rooms, 100 senders at --rate
# (default 5, the standard load) for 12 s; perf samples the server for --seconds (default 4) in
# the middle, at 999 Hz with DWARF call graphs. Loopback only; the profile is kept in
# bench/results/profile-<server>-<UTC stamp>.data for `perf report -i`.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${1:-product}
[ $# -eq 0 ] || shift
rate=5 seconds=4
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$server" in product|floor) ;; *) echo "profile.sh: server is product or floor" >&2; exit 2 ;; esac
[ "$seconds" -ge 1 ] && [ "$seconds" -le 8 ] || { echo "profile.sh: --seconds between 1 and 8" >&2; exit 2; }

bash scripts/install-deps.sh
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (linux-perf)" >&2; exit 1; }
cargo build --locked --release -p chat-cluster -p chat-bench
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
mkdir -p bench/results
data=bench/results/profile-$server-$(date -u +%Y%m%dT%H%M%SZ).data

started=()
cleanup() {
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }

if [ "$server" = product ]; then
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --logfile /dev/null &
  started+=($!)
  redis_pid=$!
  # Two workers need two consecutive ports: bench.sh's fixed base, as there.
  base=17001
  "$bin/chat-cluster" supervise --workers 2 --base-port "$base" --admin-port "$(free_port)" \
    --redis-url "redis://127.0.0.1:$redis_port" --rate-burst 1000 --rate-per-sec 1000 > /dev/null 2>&1 &
  started+=($!)
  wait_port "$base"
  wait_port $((base + 1))
  sleep 1
  server_pids="$(pgrep -d, -P "${started[1]}"),$redis_pid"
  profiled=${server_pids%%,*}
  load=(--target "127.0.0.1:$base,127.0.0.1:$((base + 1))")
else
  base=$(free_port)
  "$bin/chat-bench" floor --listen "127.0.0.1:$base" > /dev/null 2>&1 &
  started+=($!)
  wait_port "$base"
  server_pids=${started[0]}
  profiled=$server_pids
  load=(--raw --target "127.0.0.1:$base")
fi

"$bin/chat-bench" fanout "${load[@]}" --clients 1000 --rooms 10 --senders 100 --rate "$rate" \
  --duration-secs 12 --drain-secs 3 --server-pids "$server_pids" > "$data.json" 2>/dev/null &
load_pid=$!
sleep 5
perf record -F 999 --call-graph dwarf,16384 -o "$data" -p "$profiled" -- sleep "$seconds" 2>&1 | tail -1
wait "$load_pid"

python3 - "$data.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"load: {r['deliveries_per_sec']:.0f} deliveries/s, lost {r['lost']}, p50 {r['latency_ms_p50']:.1f} ms, "
      f"p99 {r['latency_ms_p99']:.1f} ms, server CPU {r['server_cpu_us_per_delivery']:.2f} us/delivery")
PY
echo "== where the profiled process spends its time (share of samples)"
perf report -i "$data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5
perf report -i "$data" --children --sort sym -g none 2>/dev/null | grep -v '^#' \
  | grep -E '\[k\] (__sys_sendto|tcp_sendmsg|net_rx_action)$' || true
echo "== top symbols (self)"
perf report -i "$data" --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 | cut -c1-150
echo "profile: $data (perf report -i $data)"
