#!/usr/bin/env bash
# A journal sync that stalls, on purpose: the kafka suite's shm-50k row (50,000 events/s
# through a shared-memory producer, publish to decision) with the daemon's data directory
# on a file system of its own, which is frozen (fsfreeze) for FREEZE_MS one second into
# the row. Every write and sync to it waits until it thaws, as on a disk that stalls.
# Prints the row's latency, whether the shards held events back, and the slowest journal
# commit. Needs root (loop mount, fsfreeze) and the Kafka venv (scripts/pyenv.sh).
#
#   scripts/sync-stall.sh [FREEZE_MS=700] [RIM_BENCH_SETS overrides, e.g.
#                          "persist.reflex_ring_bytes=4194304;persist.journal_ring_bytes=4194304"]
set -euo pipefail
freeze_ms=${1:-700}
sets=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
bench="$root/target/release/rim-bench"
[ -x "$bench" ] || cargo build --release -p rim-bench --manifest-path "$root/Cargo.toml"
export RIM_PYENV=${RIM_PYENV:-$root/target/pyenv-kafka}
work=$(mktemp -d)
img="$work/fs.img" mnt="$work/mnt" out="$work/bench.out"
cleanup() {
    fsfreeze -u "$mnt" 2>/dev/null || true
    umount "$mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt"
truncate -s 3G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
mkdir -p "$mnt/data"
RIM_BENCH_SETS="persist.data_dir=\"$mnt/data\"${sets:+;$sets}" \
    "$bench" kafka --quick --rows shm-50k >"$out" 2>&1 &
pid=$!
# The row starts once the warm-up (the Kafka consumer group's join) is over.
for _ in $(seq 1200); do grep -q "warm-up" "$out" && break; sleep 0.1; done
sleep 1
fsfreeze -f "$mnt"
sleep "$(awk -v ms="$freeze_ms" 'BEGIN { print ms / 1000 }')"
fsfreeze -u "$mnt"
wait "$pid"
grep -E '^name|^shm-50k' "$out"
grep -o 'ingest held back[^)]*' "$out" || true
