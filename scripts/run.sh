#!/usr/bin/env bash
# Runs the product on this machine: installs what is missing, builds, starts a private Redis
# (unless one is given or already answers on 6379), the supervisor (one worker per CPU) and nginx
# in front, then shows the supervisor's live console until Ctrl-C or SIGTERM, when it stops
# everything it started, by PID, and only that.
#
# Relies on these chat-cluster commands and flags:
#   chat-cluster supervise --workers N --base-port P --admin-port P --redis-url URL --console-note TEXT
#   chat-cluster nginx-config --hosts 127.0.0.1 --workers N --base-port P --listen HOST:PORT
#                             --runtime-dir DIR [--ping-cycle-secs S]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

usage() {
  cat <<'EOF'
Usage: bash scripts/run.sh [options] [-- extra supervise flags]

Builds and runs the chat cluster: Redis (private, unless given), one worker per CPU under the
supervisor, and nginx in front. Open the printed URL; Ctrl-C stops what this script started.

  --redis-url URL     use this Redis (also CHAT_REDIS_URL); default: the one answering on
                      127.0.0.1:6379, else a private redis-server on the first free port from 6379
  --workers N         worker processes (default: CHAT_WORKERS, else the number of CPUs)
  --base-port P       port of the first worker; workers use P..P+N-1 (default 6001)
  --admin-port P      supervisor admin port: console http://127.0.0.1:P/, /status, /metrics (default 9100)
  --http-port P       nginx port, where browsers connect (default 8080)
  --no-build          use the existing target/release/chat-cluster, do not run cargo
  --bin PATH          run this chat-cluster binary instead (implies --no-build)
  --run-dir DIR       runtime files (logs, pid files, nginx.conf, lock) here (default: run/)
  -h, --help          this text

Flags after `--` go to `chat-cluster supervise` as they are (see `chat-cluster supervise --help`),
e.g. `bash scripts/run.sh -- --rate-per-sec 20`. Any CHAT_* variable (README.md, Configuration)
is passed on to the supervisor and its workers. Runtime files (logs, pids, nginx.conf) are in run/.
EOF
}

say() { echo "run.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

redis_url=${CHAT_REDIS_URL:-}
workers=${CHAT_WORKERS:-}
base_port=${CHAT_BASE_PORT:-6001}
admin_port=${CHAT_ADMIN_PORT:-9100}
http_port=8080
build=1
bin=
run_dir=$repo/run
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --redis-url|--workers|--base-port|--admin-port|--http-port|--bin|--run-dir)
      if [ $# -lt 2 ] || [ -z "$2" ]; then usage >&2; die "$1 needs a value"; fi
      case "$1" in
        --redis-url) redis_url=$2 ;;
        --workers) workers=$2 ;;
        --base-port) base_port=$2 ;;
        --admin-port) admin_port=$2 ;;
        --http-port) http_port=$2 ;;
        --bin) bin=$2 build=0 ;;
        --run-dir) run_dir=$2 ;;
      esac
      shift 2 ;;
    --redis-url=*) redis_url=${1#*=}; shift ;;
    --workers=*) workers=${1#*=}; shift ;;
    --base-port=*) base_port=${1#*=}; shift ;;
    --admin-port=*) admin_port=${1#*=}; shift ;;
    --http-port=*) http_port=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[ -n "$workers" ] || workers=$(nproc)
if ! [[ $workers =~ ^[0-9]+$ ]] || [ "$workers" -lt 1 ]; then
  die "--workers must be a positive number, not '$workers'"
fi
for p in "$base_port" "$admin_port" "$http_port"; do
  is_port "$p" || die "'$p' is not a port number"
done
last_worker_port=$((base_port + workers - 1))
[ "$last_worker_port" -le 65535 ] || die "workers $base_port..$last_worker_port run past port 65535"

# --- what is needed -----------------------------------------------------------------------------
bash scripts/install-deps.sh
nginx_bin=$(command -v nginx || true)
[ -n "$nginx_bin" ] || [ ! -x /usr/sbin/nginx ] || nginx_bin=/usr/sbin/nginx
[ -n "$nginx_bin" ] || die "nginx is not installed (scripts/install-deps.sh should have installed it)"

[ -n "$bin" ] || bin=$repo/target/release/chat-cluster
if [ "$build" = 1 ]; then
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && PATH=$HOME/.cargo/bin:$PATH
  fi
  command -v cargo >/dev/null 2>&1 ||
    die "cargo is not installed: install the Rust toolchain (https://rustup.rs, or rustup from your distribution), then run this again"
  say "building (cargo build --release -p chat-cluster)..."
  cargo build --locked --release -p chat-cluster ||
    die "the build failed (see above)"
fi
[ -x "$bin" ] || die "$bin does not exist: run without --no-build"

# --- runtime directory, single instance -------------------------------------------------------
mkdir -p "$run_dir/nginx"
run_dir=$(cd "$run_dir" && pwd)
# nginx's worker processes drop root privileges and still need to reach their temp directories.
chmod 755 "$run_dir" "$run_dir/nginx"
exec 9>"$run_dir/run.lock"
flock -n 9 || die "another scripts/run.sh is running with this runtime directory (lock: $run_dir/run.lock)"

# --- starting and stopping ----------------------------------------------------------------------
# No job control: a background child is then never a process-group leader, so `setsid` makes it a
# session leader in place (same PID, no fork) and $! is the PID of the program itself.
set +m
# Each child runs in its own session (setsid: same PID, no fork), so a Ctrl-C on the terminal
# reaches this script alone, which then stops the children one by one in order: the supervisor
# treats a second signal as "kill the workers now", and Redis must outlive the draining workers.
names=()
pids=()
waits=()
started() { names+=("$1"); pids+=("$2"); waits+=("$3"); echo "$2" >"$run_dir/$1.pid"; }

# shellcheck disable=SC2317 # called by the EXIT trap
stop_all() {
  local status=$?
  trap - EXIT
  # Our output may be a pipe whose reader is gone (`run.sh | tee log`, then Ctrl-C, which kills
  # tee too): a write must then fail quietly, not kill this script halfway through stopping.
  trap '' PIPE
  # Keep going whatever fails here (a `sleep` killed by a second Ctrl-C returns non-zero).
  set +e
  # A second Ctrl-C while stopping hurries the stop along instead of leaving children behind: the
  # supervisor takes a second SIGTERM as "kill the workers now".
  hurry=0
  trap 'hurry=1' INT TERM HUP
  local i name pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    name=${names[i]} pid=${pids[i]}
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      local tenths=$((waits[i] * 10)) n=0 hurried=0
      while kill -0 "$pid" 2>/dev/null && [ "$n" -lt "$tenths" ]; do
        if [ "$hurry" = 1 ] && [ "$hurried" = 0 ]; then
          say "stopping $name at once"
          kill -TERM "$pid" 2>/dev/null || true
          hurried=1 tenths=$((n + 30))
        fi
        sleep 0.1
        n=$((n + 1))
      done
      if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) did not stop in ${waits[i]} s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    wait "$pid" 2>/dev/null || true
    rm -f "$run_dir/$name.pid"
  done
  [ ${#pids[@]} -eq 0 ] || say "stopped everything this script started"
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# True if something accepts TCP connections on 127.0.0.1:$1.
port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# True if a Redis that needs no password answers PING on 127.0.0.1:$1.
redis_pong() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'PING\r\n' >&3 && IFS= read -r line <&3 && [[ \$line == +PONG* ]]" 2>/dev/null
}

# True if GET $2 on 127.0.0.1:$1 answers 200.
http_ok() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'GET $2 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && IFS= read -r line <&3 && [[ \$line == 'HTTP/1.'?' 200'* ]]" 2>/dev/null
}

alive_or_die() { # name pid [log]
  kill -0 "$2" 2>/dev/null && return 0
  if [ -n "${3:-}" ]; then
    say "$1 exited unexpectedly; last lines of ${3#"$repo"/}:"
    tail -n 20 "$3" >&2 2>/dev/null || true
  else
    say "$1 exited unexpectedly (its messages are above)"
  fi
  exit 1
}

# Ports are checked before anything starts, so a busy one is a clear message, not a half-started
# cluster.
port_busy "$http_port" && die "port $http_port (nginx) is in use; choose another with --http-port"
port_busy "$admin_port" && die "port $admin_port (supervisor status) is in use; choose another with --admin-port"
for ((p = base_port; p <= last_worker_port; p++)); do
  port_busy "$p" && die "port $p (worker) is in use; workers need $base_port..$last_worker_port: choose another --base-port"
done

# --- Redis --------------------------------------------------------------------------------------
if [ -n "$redis_url" ]; then
  say "using Redis at $redis_url"
  # Best effort: a Redis that cannot be reached is worth a warning (the workers keep retrying,
  # and serve each worker's own rooms meanwhile), not a refusal to start.
  if [[ $redis_url =~ ^rediss?://([^@/]*@)?([^:/?]+)(:([0-9]+))? ]]; then
    redis_host=${BASH_REMATCH[2]} redis_port=${BASH_REMATCH[4]:-6379}
    timeout 2 bash -c "exec 3<>/dev/tcp/$redis_host/$redis_port" 2>/dev/null ||
      say "warning: nothing accepts connections at $redis_host:$redis_port yet; the workers will keep retrying"
  fi
elif redis_pong 6379; then
  redis_url=redis://127.0.0.1:6379
  say "using the Redis already answering on 127.0.0.1:6379 (not started, so not stopped, by this script)"
else
  command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed"
  redis_port=6379
  while port_busy "$redis_port" || { [ "$redis_port" -ge "$base_port" ] && [ "$redis_port" -le "$last_worker_port" ]; } ||
    [ "$redis_port" = "$admin_port" ] || [ "$redis_port" = "$http_port" ]; do
    redis_port=$((redis_port + 1))
    [ "$redis_port" -le 6479 ] || die "no free port for Redis in 6379..6479"
  done
  redis_log=$run_dir/redis.log
  : >"$redis_log"
  setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$run_dir" --logfile "$redis_log" \
    </dev/null &
  started redis $! 10
  for _ in $(seq 1 50); do redis_pong "$redis_port" && break; alive_or_die redis "${pids[-1]}" "$redis_log"; sleep 0.1; done
  redis_pong "$redis_port" || die "Redis did not answer on port $redis_port within 5 s; see $redis_log"
  redis_url=redis://127.0.0.1:$redis_port
  say "started a private Redis on 127.0.0.1:$redis_port (log: $redis_log)"
fi
export CHAT_REDIS_URL=$redis_url

# --- push API key -------------------------------------------------------------------------------
# The push API answers only with a key. Unless one is given (CHAT_API_KEY or CHAT_API_KEY_FILE),
# this demo makes one, readable only by its owner, so backends can be tried at once.
if [ -z "${CHAT_API_KEY:-}" ] && [ -z "${CHAT_API_KEY_FILE:-}" ]; then
  api_key_file=$run_dir/api-key
  if [ ! -s "$api_key_file" ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$api_key_file")
  fi
  export CHAT_API_KEY_FILE=$api_key_file
fi

# --- nginx config -------------------------------------------------------------------------------
# Proxy timeouts must outlast the workers' engine.io ping cycle.
ping_cycle_secs=$(((${CHAT_PING_INTERVAL_MS:-25000} + ${CHAT_PING_TIMEOUT_MS:-20000} + 999) / 1000))
nginx_dir=$run_dir/nginx
nginx_conf=$nginx_dir/nginx.conf
"$bin" nginx-config --hosts 127.0.0.1 --workers "$workers" --base-port "$base_port" \
  --listen "127.0.0.1:$http_port" --runtime-dir "$nginx_dir" --ping-cycle-secs "$ping_cycle_secs" \
  >"$nginx_conf.new" || die "chat-cluster nginx-config failed"
mv "$nginx_conf.new" "$nginx_conf"
"$nginx_bin" -t -q -c "$nginx_conf" -p "$nginx_dir/" || die "nginx rejects $nginx_conf (see above)"

# --- supervisor ---------------------------------------------------------------------------------
chat_url="http://127.0.0.1:$http_port/?roomid=lobby"
status_url="http://127.0.0.1:$admin_port/status"
console_url="http://127.0.0.1:$admin_port/"
supervisor_log=$run_dir/supervisor.log
supervise=("$bin" supervise --workers "$workers" --base-port "$base_port" --admin-port "$admin_port"
  --redis-url "$redis_url" --console-note "chat: $chat_url   console: $console_url" ${extra[@]+"${extra[@]}"})
if [ -t 1 ]; then
  # The console redraws the terminal every second, which would wipe log lines: they go to a file.
  : >"$supervisor_log"
  setsid "${supervise[@]}" </dev/null 2>"$supervisor_log" &
  supervisor_stderr=$supervisor_log
else
  # Not a terminal: the console prints JSON lines on stdout; logs stay on stderr.
  setsid "${supervise[@]}" </dev/null &
  supervisor_log=
  supervisor_stderr="stderr"
fi
supervisor=$!
# The supervisor drains workers for CHAT_SHUTDOWN_GRACE_MS (+2 s) before killing them.
started supervisor "$supervisor" $(((${CHAT_SHUTDOWN_GRACE_MS:-5000} + 999) / 1000 + 8))
sleep 0.3
alive_or_die supervisor "$supervisor" "$supervisor_log"

# --- nginx --------------------------------------------------------------------------------------
setsid "$nginx_bin" -c "$nginx_conf" -p "$nginx_dir/" </dev/null &
started nginx $! 10
sleep 0.3
alive_or_die nginx "${pids[-1]}" "$nginx_dir/error.log"

# Ready once a worker answers through nginx and the supervisor's status endpoint answers.
ready=0
for _ in $(seq 1 150); do
  alive_or_die supervisor "$supervisor" "$supervisor_log"
  alive_or_die nginx "${pids[-1]}" "$nginx_dir/error.log"
  # With CHAT_ADMIN_TOKEN set, /status answers 401 to this unauthenticated check: the port answers.
  if http_ok "$http_port" /monitor && { http_ok "$admin_port" /status || { [ -n "${CHAT_ADMIN_TOKEN:-}" ] && port_busy "$admin_port"; }; }; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || die "the cluster did not answer through nginx within 30 s; see the supervisor's log ($supervisor_stderr) and $nginx_dir/error.log"

cat >&2 <<EOF

  chat:    $chat_url
  console: $console_url   (live counts and charts; $status_url, /metrics for Prometheus)
  push:    curl -H "Authorization: Bearer \$(cat ${CHAT_API_KEY_FILE:-<your key file>})" -H 'content-type: application/json' \\
             -d '{"category":"announcement","data":{"text":"hello"}}' http://127.0.0.1:$http_port/api/broadcast
  logs:    supervisor and workers: $supervisor_stderr; nginx: $nginx_dir/error.log
  Ctrl-C stops nginx, the cluster and any Redis this script started.

EOF
[ -t 1 ] && sleep 2 # leave the URLs readable a moment before the console takes the screen

# Foreground until the supervisor exits or a signal arrives (the traps then stop everything).
while kill -0 "$supervisor" 2>/dev/null; do
  wait "$supervisor" && code=0 || code=$?
  # `wait` also returns when a trapped signal arrives; the trap exits, so looping is safe.
  kill -0 "$supervisor" 2>/dev/null || break
done
say "the supervisor exited (status ${code:-?}); its log: $supervisor_stderr"
exit 1
