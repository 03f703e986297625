#!/usr/bin/env bash
# Mutation testing with cargo-mutants over the pure logic: all of chat-protocol (payloads,
# validation, frames, push bodies), and the worker's rate limiter, hub and login order
# (crates/chat-worker/src/{rate,hub}.rs, people/sessions.rs without the socket registry).
# Each mutant is one small change to the code (an operator flipped, a body replaced); a mutant
# that no test fails is "missed". Too slow for CI (about 15 minutes on 2 cores); the last
# result and what is left missed, and why, are in RELIABILITY.md.
#
#   bash scripts/mutants.sh              # both runs; results in target/mutants/{protocol,worker}
#   bash scripts/mutants.sh --protocol   # or --worker: one of them
#
# Exits non-zero if any mutant was missed or timed out (cargo-mutants' own exit codes).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null; then
  cargo install --locked cargo-mutants@27.1.0
fi
# A failing property shrinks for seconds; the first failure is enough here.
export PROPTEST_MAX_SHRINK_ITERS=32

mkdir -p target/mutants/protocol target/mutants/worker
which=${1:-all}
status=0
if [[ $which == all || $which == --protocol ]]; then
  cargo mutants --timeout 120 -p chat-protocol --output target/mutants/protocol || status=$?
fi
if [[ $which == all || $which == --worker ]]; then
  # The socket registry (Sessions, end_all) needs live sockets: the end-to-end people tests
  # cover it, not the unit tests this run uses (--lib).
  cargo mutants --timeout 120 -p chat-worker \
    -f crates/chat-worker/src/rate.rs -f crates/chat-worker/src/hub.rs \
    -f crates/chat-worker/src/people/sessions.rs --exclude-re 'Sessions::|end_all' \
    --output target/mutants/worker -- --lib || status=$?
fi
for run in protocol worker; do
  missed=target/mutants/$run/mutants.out/missed.txt
  [[ -f $missed ]] && { echo "== $run: missed"; cat "$missed"; }
done
exit "$status"
