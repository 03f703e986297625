#!/usr/bin/env bash
# Installs the system packages the product and its tests need, only those missing.
# Debian's redis-server and nginx; `--with-browser` adds chromium for browser tests.
# Idempotent: a machine that has everything runs no apt command at all.
set -euo pipefail

want=()
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx)
command -v node >/dev/null 2>&1 || want+=(nodejs npm)
# The Python socket.io client of the tests runs in a venv (tests/requirements.txt).
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || want+=(python3-venv)
if [ "${1:-}" = "--with-browser" ]; then
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
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
