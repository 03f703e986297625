#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs every test.
#   1. Rust: unit tests, workers in process, real processes against a real redis-server
#   2. JavaScript: the official socket.io client against real workers, Redis and nginx, and
#      the chat page in headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s ====\n' "$*"; }

section "system packages"
bash scripts/install-deps.sh --with-browser

section "build"
cargo build --locked -p chat-cluster

section "rust tests"
cargo test --locked --workspace

section "javascript end-to-end tests"
(cd tests && npm ci --no-audit --no-fund --loglevel=error)
# The Python socket.io client (python-socketio from PyPI, pinned), used by some e2e tests.
[ -x tests/.venv/bin/python ] || python3 -m venv tests/.venv
tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
(cd tests && CHAT_BIN="$PWD/../target/debug/chat-cluster" npm test)
