#!/usr/bin/env bash
# Installs the system packages the product and its tests need, only those missing.
# Debian's redis-server and nginx; `--with-browser` adds what the tests need: chromium,
# python3-venv and systemd-analyze.
# Idempotent: a machine that has everything runs no apt command at all.
set -euo pipefail

want=()
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
# redis-cli builds the Redis Cluster of the topology tests (`redis-cli --cluster create`).
command -v redis-cli >/dev/null 2>&1 || want+=(redis-tools)
# `ip netns` makes the network namespaces that stand for hosts in the multi-host tests.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || want+=(iproute2)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx)
command -v node >/dev/null 2>&1 || want+=(nodejs npm)
# The Python socket.io clients of the tests live in a venv (scripts/python-env.sh).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || want+=(python3 python3-venv)
if [ "${1:-}" = "--with-browser" ]; then
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
  # The tests' Python venv (tests/requirements.txt) and the systemd unit's check.
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || want+=(python3-venv)
  command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
fi

if [ ${#want[@]} -gt 0 ]; then
  echo "install-deps: installing ${want[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
fi

# Debian's nginx package starts a system nginx on port 80; the product runs its own instance
# with its own config, so the packaged service is left alone (neither stopped nor used).
