#!/usr/bin/env bash
# What a room with full history costs Redis (bytes per room, per message, per member), measured
# on a private redis-server and a release build. Figures in BENCHMARKS.md.
#   bash scripts/room-memory.sh [--rooms 20] [--members 10] [--text-chars 60] [--history-size 50]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --locked --release -p chat-cluster
(cd tests && npm ci --no-audit --no-fund --loglevel=error)
cd tests
CHAT_BIN="$PWD/../target/release/chat-cluster" exec node bench/room-memory.mjs "$@"
