#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs every test.
#   1. Rust: unit tests, workers in process, real processes against a real redis-server
#   2. JavaScript: the official socket.io client against real workers, Redis and nginx, and
#      the chat page and the admin console in headless Chromium; the Python socket.io client
#      (python-socketio) and Python's prometheus_client, from the pins of tests/requirements.txt
#      in tests/.venv, driven from the same tests
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s ====\n' "$*"; }

section "system packages"
bash scripts/install-deps.sh --with-browser

section "build"
cargo build --locked -p chat-cluster
# The peers scripts/bench.sh measures the product against, for their smoke in bench_smoke.rs:
# the stock socketioxide server (outside the workspace, so built from the crates.io releases,
# into the same target directory) and node socket.io with the official Redis adapter.
cargo build --locked --manifest-path bench/socketioxide-peer/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}"
(cd bench/node-adapter-peer && npm ci --no-audit --no-fund --loglevel=error)
# The old node design itself, for the rolling migration test (tests/e2e/migration.test.mjs).
(cd bench/node-peer && npm ci --no-audit --no-fund --loglevel=error)

section "rust tests"
cargo test --locked --workspace

section "javascript end-to-end tests"
(cd tests && npm ci --no-audit --no-fund --loglevel=error)
bash scripts/python-env.sh
(cd tests && CHAT_BIN="$PWD/../target/debug/chat-cluster" npm test)
