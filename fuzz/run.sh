#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 600 s each), two at a time (or
# one at a time with PARALLEL=1, on a machine shared with other work), with the
# malformed-file corpus as seeds. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#   bash fuzz/run.sh [SECONDS]
# Not part of CI. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
corpus=crates/chainrule/tests/corpus
seed() { # target, corpus folder
  mkdir -p "fuzz/corpus/$1"
  cp "$corpus/$2"/* "fuzz/corpus/$1/" 2>/dev/null || true
}
seed npy npy; seed safetensors safetensors; seed idx idx; seed csv csv; seed model_json model; seed train_config train_json
mkdir -p fuzz/corpus/formula && cp examples/notebooks/003/network.formula fuzz/corpus/formula/
cargo +nightly fuzz build -O
run() {
  cargo +nightly fuzz run -O "$1" "fuzz/corpus/$1" -- -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 \
    > "fuzz/$1.log" 2>&1 && echo "$1: no crash in ${seconds}s" || echo "$1: FAILED, see fuzz/$1.log"
}
if [ "${PARALLEL:-2}" = 1 ]; then
  for target in formula npy safetensors idx csv model_json train_config; do run "$target"; done
else
  for pair in "npy safetensors" "idx csv" "model_json train_config" "formula"; do
    set -- $pair
    run "$1" & { [ -n "${2:-}" ] && run "$2"; } & wait
  done
fi
