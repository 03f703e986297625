#!/usr/bin/env bash
# The soak: holds N clients with steady churn and traffic for a given time on a private Redis and
# a release build, and prints the workers' RSS every second (JSON lines) and a summary.
#   bash scripts/soak.sh [--clients 1000] [--seconds 120] [--churn-per-sec 20] [--says-per-sec 100] [--workers 2]
# A short run is part of the test command (tests/e2e/soak.test.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --locked --release -p chat-cluster
(cd tests && npm ci --no-audit --no-fund --loglevel=error)
# Many clients need many file descriptors (a client and its server side are two).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd tests
CHAT_BIN="$PWD/../target/release/chat-cluster" exec node soak/run.mjs "$@"
