#!/usr/bin/env bash
# Holds 100,000 websocket connections on this machine and reports whether all were held.
#   bash scripts/bench-100k.sh [--connections 100000] [--workers 8] [--hold-secs 90]
# Processes may hold few file descriptors (20,000 on our CI machines), so the connections are
# split over --workers workers and as many `chat-bench idle` processes, one per worker port.
# Each generator answers engine.io pings, so connections stay open through the hold.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=100000 workers=8 hold=90
while [ $# -gt 0 ]; do
  case $1 in
    --connections) connections=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --hold-secs) hold=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
per=$((connections / workers))
[ "$per" -le 18000 ] || { echo "more than 18000 connections per worker: raise --workers" >&2; exit 2; }

bash scripts/install-deps.sh
cargo build --locked --release -p chat-cluster -p chat-bench
out=bench/results/100k-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port) admin_port=$(free_port) base_port=17201
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
pids+=($!)
target/release/chat-cluster supervise --workers "$workers" --base-port "$base_port" \
  --admin-port "$admin_port" --redis-url "redis://127.0.0.1:$redis_port" >"$out/supervisor.log" 2>&1 &
pids+=($!)
status() { curl -s --max-time 3 "http://127.0.0.1:$admin_port/status"; }
for _ in $(seq 1 100); do status | grep -q '"state":"ready"' && break; sleep 0.2; done
sleep 1
worker_pids=$(status | python3 -c 'import sys,json; print(" ".join("%d:%d" % (w["port"], w["pid"]) for w in json.load(sys.stdin)["workers"]))')

generators=()
for entry in $worker_pids; do
  port=${entry%%:*} pid=${entry##*:}
  timeout $((hold + 300)) target/release/chat-bench idle --target "127.0.0.1:$port" --connections "$per" \
    --pids "$pid" --sources 64 --hold-secs "$hold" --rooms 100 --concurrency 64 >"$out/idle-$port.log" 2>&1 &
  pids+=($!) generators+=($!)
done
running() { for pid in "${generators[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
max=0
for _ in $(seq 1 $(((hold + 240) / 5))); do
  sleep 5
  total=$(status | python3 -c 'import sys,json; print(json.load(sys.stdin)["total_connections"])' 2>/dev/null || echo 0)
  [ "$total" -gt "$max" ] && max=$total
  echo "$(date -u +%T) open: $total" >&2
  running || break
done
wait "${generators[@]}" || true
python3 - "$out" "$max" "$per" "$workers" <<'PY'
import glob, json, sys
out, peak, per, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
reports = [json.loads(open(p).readline()) for p in sorted(glob.glob(f"{out}/idle-*.log"))]
summary = {
    "scenario": "hold",
    "asked": per * workers,
    "connected": sum(r["connected"] for r in reports),
    "connect_failures": sum(r["connect_failures"] for r in reports),
    "open_after_hold": sum(r["open_after_hold"] for r in reports),
    "peak_open_seen_by_supervisor": peak,
    "worker_rss_per_connection_bytes": round(sum(r["server_rss_per_connection_bytes"] for r in reports) / max(len(reports), 1)),
}
print(json.dumps(summary))
open(f"{out}/summary.json", "w").write(json.dumps(summary) + "\n")
PY
