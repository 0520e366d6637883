#!/usr/bin/env bash
# The whole test suite, as CI runs it:
# - the Python tools the Kafka tests need (a venv with the tansu broker and the independent
#   Avro client; each Kafka test starts its own broker on loopback);
# - every crate's unit and integration tests (the C ABI's tests need librim_ring.so);
# - the Python client, installed with pip from clients/python, and its pytest suite;
# - schemathesis against a running daemon's HTTP API (scripts/schemathesis.sh);
# - the loom models of the ring protocols and the stats seqlock (their own target directory:
#   --cfg loom rebuilds everything, and sharing target/ would throw the normal build away).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Python tools: the tansu Kafka broker and the independent Avro client (pinned, hashed)"
./scripts/pyenv.sh >/dev/null

echo "== cargo build -p rim-ring (librim_ring.so for the C ABI test)"
cargo build -p rim-ring

echo "== cargo test --workspace"
cargo test --workspace --all-targets

echo "== Python client: pip install clients/python, pytest against a real rimd"
./scripts/python-client.sh

echo "== schemathesis: openapi.yaml against a running rimd"
./scripts/schemathesis.sh

echo "== loom models: the ring protocols, the stats segment's seqlock"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p rim-ring --test loom_protocol --release
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p rim-stats --test loom_seqlock --release
