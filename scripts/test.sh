#!/usr/bin/env bash
# The whole test suite, as CI runs it: every crate's unit and integration tests, then the
# loom models of the ring protocols and the stats seqlock (its own target directory: --cfg loom rebuilds
# everything, and sharing target/ would throw the normal build away each time).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build -p rim-ring (librim_ring.so for the C ABI test)"
cargo build -p rim-ring

echo "== cargo test --workspace"
cargo test --workspace --all-targets

echo "== loom models: the ring protocols, the stats segment's seqlock"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p rim-ring --test loom_protocol --release
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p rim-stats --test loom_seqlock --release
