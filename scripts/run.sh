#!/usr/bin/env bash
# Runs the product on this machine: installs what is missing, builds, starts a private Redis
# (unless one is given), the supervisor (one worker per CPU) and nginx in front, then shows the
# supervisor's live console until Ctrl-C, when it stops everything it started, and only that.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

usage() {
  cat <<'EOF'
Usage: bash scripts/run.sh [options]

  --redis-url URL     use this Redis (also CHAT_REDIS_URL); default: start a private one
  --workers N         worker processes (default: number of CPUs)
  --base-port P       port of the first worker (default 6001)
  --admin-port P      supervisor /status port (default 9100)
  --http-port P       nginx port, where browsers connect (default 8080)
  -h, --help          this text

Any CHAT_* variable (see README.md, Configuration) is passed on to the workers.
EOF
}

redis_url=${CHAT_REDIS_URL:-}
workers=$(nproc)
base_port=6001
admin_port=9100
http_port=8080
while [ $# -gt 0 ]; do
  case "$1" in
    --redis-url) redis_url=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --base-port) base_port=$2; shift 2 ;;
    --admin-port) admin_port=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then
  echo "run.sh: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "run.sh: building (release)..." >&2
cargo build --locked --release -p chat-cluster
bin=$repo/target/release/chat-cluster

run_dir=$repo/run
mkdir -p "$run_dir/nginx"
chmod 755 "$run_dir" "$run_dir/nginx"

started_pids=()
nginx_conf=$run_dir/nginx/nginx.conf
stop_all() {
  trap - EXIT INT TERM
  # Reverse start order: nginx, supervisor (drains its workers), then Redis.
  for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do
    pid=${started_pids[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  echo "run.sh: stopped" >&2
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "$redis_url" ]; then
  if redis-cli -p 6379 ping 2>/dev/null | grep -q PONG; then
    redis_url=redis://127.0.0.1:6379
    echo "run.sh: using the Redis already answering on 127.0.0.1:6379" >&2
  else
    redis_port=6379
    while port_in_use "$redis_port"; do redis_port=$((redis_port + 1)); done
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize no --logfile "$run_dir/redis.log" &
    started_pids+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || { echo "run.sh: redis did not start; see $run_dir/redis.log" >&2; exit 1; }
    redis_url=redis://127.0.0.1:$redis_port
    echo "run.sh: started a private Redis on 127.0.0.1:$redis_port" >&2
  fi
fi

"$bin" nginx-config --hosts 127.0.0.1 --workers "$workers" --base-port "$base_port" \
  --listen "127.0.0.1:$http_port" --runtime-dir "$run_dir/nginx" > "$nginx_conf"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
"$nginx_bin" -t -q -c "$nginx_conf" -p "$run_dir/nginx/"

"$bin" supervise --workers "$workers" --base-port "$base_port" --admin-port "$admin_port" \
  --redis-url "$redis_url" \
  --console-note "chat: http://127.0.0.1:$http_port/?roomid=lobby   status: http://127.0.0.1:$admin_port/status" &
supervisor=$!
started_pids+=($supervisor)

"$nginx_bin" -c "$nginx_conf" -p "$run_dir/nginx/" &
started_pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$http_port/monitor" >/dev/null 2>&1 && break
  kill -0 "$supervisor" 2>/dev/null || { echo "run.sh: the supervisor exited" >&2; exit 1; }
  sleep 0.1
done
cat >&2 <<EOF

  chat:    http://127.0.0.1:$http_port/?roomid=lobby
  status:  http://127.0.0.1:$admin_port/status
  Ctrl-C stops nginx, the cluster and the Redis this script started.

EOF
wait "$supervisor"
