#!/usr/bin/env bash
# Counts what one delivery costs a server under the standard fanout, in figures that a busy
# machine moves less than wall-clock CPU: system calls, context switches and (with --allocs)
# heap allocations per delivery, besides CPU time, all from `perf stat` on the server processes
# (the product's workers and its Redis, or the floor) over a window in the middle of the run.
#   bash scripts/delivery-cost.sh [product|floor|socketioxide] [--rate R] [--seconds N]
#                                 [--allocs] [--runs N]
# Load: 1000 clients in 10 rooms, 100 senders at --rate `say`/s each (default 5, the standard
# load: 50,000 deliveries/s) for 14 s; perf counts --seconds (default 6) from the 6th second,
# when every client has joined and the senders are steady, and the deliveries of that window are
# the fanout's steady rate times its length. --allocs counts malloc/realloc calls with uprobes on
# glibc (each costs a trap, so CPU figures of that run are not comparable and are not printed).
# --callgrind (product or floor) runs the profiled process under valgrind's callgrind instead
# (the product's worker 0, the other worker native) at a rate it can follow (default 0.5 `say`/s
# per sender, where, as at the standard load, every delivery is a send of its own) and counts
# the user-space instructions it executes per delivery over the window: a figure that does not
# depend on what else the machine runs. The product's worker 0 makes half of the deliveries
# (each room has half its members on each worker). The profile is kept in
# bench/results/callgrind-<server>-<UTC stamp>.out for `callgrind_annotate`.
# CHAT_BIN=<path> measures that chat-cluster binary instead of this tree's release build.
# Loopback only; every process started is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${1:-product}
[ $# -eq 0 ] || shift
rate= seconds=6 allocs=0 runs=1 callgrind=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --allocs) allocs=1; shift ;;
    --callgrind) callgrind=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "delivery-cost.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$server" in product|floor|socketioxide) ;; *) echo "delivery-cost.sh: server is product, floor or socketioxide" >&2; exit 2 ;; esac
[ "$seconds" -ge 1 ] && [ "$seconds" -le 8 ] || { echo "delivery-cost.sh: --seconds between 1 and 8" >&2; exit 2; }
if [ "$callgrind" = 1 ]; then
  [ "$server" != socketioxide ] || { echo "delivery-cost.sh: --callgrind is for product or floor" >&2; exit 2; }
  command -v valgrind >/dev/null || { echo "delivery-cost.sh: valgrind is not installed" >&2; exit 1; }
  rate=${rate:-0.5}
fi
rate=${rate:-5}

command -v perf >/dev/null || { echo "delivery-cost.sh: perf is not installed (linux-perf)" >&2; exit 1; }
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
# With CHAT_BIN set, nothing is built: the generator is this tree's release chat-bench as it is.
if [ -z "${CHAT_BIN:-}" ] || [ ! -x "$target_dir/release/chat-bench" ]; then
  cargo build --locked --release -p chat-cluster -p chat-bench 2>/dev/null
fi
if [ "$server" = socketioxide ]; then
  cargo build --locked --release --manifest-path bench/socketioxide-peer/Cargo.toml --target-dir "$target_dir" 2>/dev/null
fi
bin=$target_dir/release
# CHAT_BIN: another chat-cluster binary to measure (an earlier build, for a before/after).
cluster=${CHAT_BIN:-$bin/chat-cluster}
events=task-clock,context-switches,raw_syscalls:sys_enter
if [ "$allocs" = 1 ]; then
  libc=$(ldd "$cluster" | awk '/libc.so.6/ {print $3}')
  perf probe -q -x "$libc" --add malloc 2>/dev/null || true
  perf probe -q -x "$libc" --add realloc 2>/dev/null || true
  events=context-switches,raw_syscalls:sys_enter,probe_libc:malloc,probe_libc:realloc
fi

started=()
cleanup() {
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  started=()
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }

echo "delivery-cost.sh: $server at $rate/s per sender, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for run in $(seq 1 "$runs"); do
  base=17001
  case "$server-$callgrind" in
    product-1)
      redis_port=$(free_port)
      redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --logfile /dev/null &
      started+=($!)
      cg_out=$(mktemp)
      worker=(worker --redis-url "redis://127.0.0.1:$redis_port" --rate-burst 1000 --rate-per-sec 1000)
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg_out" \
        "$cluster" "${worker[@]}" --port "$base" --worker-id 0 > /dev/null 2>&1 &
      started+=($!)
      profiled=$!
      "$cluster" "${worker[@]}" --port $((base + 1)) --worker-id 1 > /dev/null 2>&1 &
      started+=($!)
      wait_port "$base"; wait_port $((base + 1)); sleep 1
      pids=$profiled share=0.5
      load=(--target "127.0.0.1:$base,127.0.0.1:$((base + 1))")
      ;;
    floor-1)
      base=$(free_port)
      cg_out=$(mktemp)
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg_out" \
        "$bin/chat-bench" floor --listen "127.0.0.1:$base" > /dev/null 2>&1 &
      started+=($!)
      profiled=$! pids=$! share=1
      wait_port "$base"
      load=(--raw --target "127.0.0.1:$base")
      ;;
    product-0)
      redis_port=$(free_port)
      redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --logfile /dev/null &
      started+=($!)
      redis_pid=$!
      "$cluster" supervise --workers 2 --base-port "$base" --admin-port "$(free_port)" \
        --redis-url "redis://127.0.0.1:$redis_port" --rate-burst 1000 --rate-per-sec 1000 > /dev/null 2>&1 &
      started+=($!)
      wait_port "$base"; wait_port $((base + 1)); sleep 1
      pids="$(pgrep -d, -P "${started[1]}"),$redis_pid"
      load=(--target "127.0.0.1:$base,127.0.0.1:$((base + 1))")
      ;;
    socketioxide-0)
      redis_port=$(free_port)
      redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --logfile /dev/null &
      started+=($!)
      redis_pid=$!
      sleep 0.3
      for port in $base $((base + 1)); do
        REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$port "$bin/socketioxide-peer" > /dev/null 2>&1 &
        started+=($!)
      done
      wait_port "$base"; wait_port $((base + 1)); sleep 1
      pids="${started[1]},${started[2]},$redis_pid"
      load=(--target "127.0.0.1:$base,127.0.0.1:$((base + 1))")
      ;;
    floor-0)
      base=$(free_port)
      "$bin/chat-bench" floor --listen "127.0.0.1:$base" > /dev/null 2>&1 &
      started+=($!)
      wait_port "$base"
      pids=${started[0]}
      load=(--raw --target "127.0.0.1:$base")
      ;;
  esac
  report=$(mktemp)
  if [ "$callgrind" = 1 ]; then
    # Connects and joins are slower under valgrind: 20 s of load, the window from the 10th s.
    "$bin/chat-bench" fanout "${load[@]}" --clients 1000 --rooms 10 --senders 100 --rate "$rate" \
      --duration-secs 20 --drain-secs 5 > "$report.json" 2>/dev/null &
    load_pid=$!
    sleep 10
    callgrind_control -i on "$profiled" > /dev/null
    sleep "$seconds"
    callgrind_control -i off "$profiled" > /dev/null
    wait "$load_pid"
    kill -TERM "$profiled"; wait "$profiled" 2>/dev/null || true
    mkdir -p bench/results
    kept=bench/results/callgrind-$server-$(date -u +%Y%m%dT%H%M%SZ).out
    cp "$cg_out" "$kept"; rm -f "$cg_out"
    python3 - "$report.json" "$kept" "$seconds" "$share" "$run" <<'PY'
import json, sys
fanout, kept, seconds, share, run = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.load(open(fanout))
ir = 0
for line in open(kept):
    if line.startswith("summary:") or line.startswith("totals:"):
        ir = int(line.split()[1])
deliveries = r["deliveries_per_sec"] * seconds * share
print(f"run {run}: {r['deliveries_per_sec']:.0f} deliveries/s, lost {r['lost']}, p50 {r['latency_ms_p50']:.1f} ms, "
      f"p99 {r['latency_ms_p99']:.1f} ms (under valgrind)")
print(f"  per delivery: {ir / deliveries:,.0f} user-space instructions ({ir:,} over {deliveries:,.0f} deliveries; {kept})")
PY
    rm -f "$report" "$report.json"
    cleanup
    continue
  fi
  "$bin/chat-bench" fanout "${load[@]}" --clients 1000 --rooms 10 --senders 100 --rate "$rate" \
    --duration-secs 14 --drain-secs 3 --server-pids "$pids" > "$report.json" 2>/dev/null &
  load_pid=$!
  sleep 6
  ticks() { for pid in ${pids//,/ }; do cut -d' ' -f14,15 "/proc/$pid/stat"; done | awk '{u += $1; s += $2} END {print u, s}'; }
  before=$(ticks)
  perf stat -x, -e "$events" -p "$pids" -- sleep "$seconds" 2> "$report" || true
  echo "$before $(ticks) $(getconf CLK_TCK)" > "$report.ticks"
  wait "$load_pid"
  python3 - "$report" "$report.json" "$seconds" "$allocs" "$run" "$report.ticks" <<'PY'
import json, sys
stat, fanout, seconds, allocs, run = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
u0, s0, u1, s1, hz = (float(x) for x in open(sys.argv[6]).read().split())
r = json.load(open(fanout))
counts = {}
for line in open(stat):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0] and parts[0][0].isdigit():
        counts[parts[2]] = float(parts[0])
deliveries = r["deliveries_per_sec"] * seconds
def per(name, scale=1.0):
    return counts.get(name, 0.0) * scale / deliveries
out = [f"run {run}: {r['deliveries_per_sec']:.0f} deliveries/s, lost {r['lost']}, p50 {r['latency_ms_p50']:.1f} ms, "
       f"p99 {r['latency_ms_p99']:.1f} ms"]
out.append(f"  per delivery: syscalls {per('raw_syscalls:sys_enter'):.3f}, context switches {per('context-switches'):.4f}")
if allocs:
    out.append(f"  per delivery: malloc {per('probe_libc:malloc'):.3f}, realloc {per('probe_libc:realloc'):.3f}")
else:
    # task-clock in ms; the user/kernel split from /proc/<pid>/stat (sampled at each tick).
    user, system = (u1 - u0) / hz * 1e6 / deliveries, (s1 - s0) / hz * 1e6 / deliveries
    out.append(f"  per delivery: CPU {per('task-clock', 1e3):.2f} us (user {user:.2f}, "
               f"kernel {system:.2f}); whole run: {r['server_cpu_us_per_delivery']:.2f} us "
               f"(user {r['server_user_us_per_delivery']:.2f})")
print("\n".join(out))
PY
  rm -f "$report" "$report.json" "$report.ticks"
  cleanup
done
echo "delivery-cost.sh: load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
