#!/usr/bin/env bash
# Creates (or refreshes) tests/.venv with the pinned packages of tests/requirements.txt: the
# Python socket.io clients the end-to-end tests run. Idempotent: does nothing when the venv
# already holds exactly what the requirements file pins.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=tests/.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

# python3 with venv and ensurepip comes from scripts/install-deps.sh (python3-venv).
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r tests/requirements.txt
"$venv/bin/python" -c 'import socketio, engineio, aiohttp, websocket, requests'
echo "$want" > "$stamp"
