#!/usr/bin/env bash
# A journal sync that stalls, on purpose: the kafka suite's shm-50k row (50,000 events/s
# through a shared-memory producer, publish to decision) with the daemon's data directory
# on a file system of its own, which is frozen (fsfreeze) for FREEZE_MS one second into
# the row. Every write and sync to it waits until it thaws, as on a disk that stalls.
# Prints the row's latency, whether ingest and the shards held events back, and the
# slowest journal commit. Needs root (loop mount, fsfreeze), a release build of rim-bench
# made beforehand as the usual user (`cargo build --release -p rim-bench`), and the Kafka
# venv (scripts/pyenv.sh).
#
#   sudo scripts/sync-stall.sh [FREEZE_MS=700] [RIM_BENCH_SETS overrides, e.g.
#        "persist.reflex_ring_bytes=4194304;persist.journal_ring_bytes=4194304"]
set -euo pipefail
freeze_ms=${1:-700}
sets=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
bench="$root/target/release/rim-bench"
if [ ! -x "$bench" ]; then
    echo "sync-stall: $bench not found: run \`cargo build --release -p rim-bench\` first" >&2
    exit 2
fi
export RIM_PYENV=${RIM_PYENV:-$root/target/pyenv-kafka}
work=$(mktemp -d)
img="$work/fs.img" mnt="$work/mnt" out="$work/bench.out"
pid=""
cleanup() {
    fsfreeze -u "$mnt" 2>/dev/null || true
    # The bench (and its daemon, which it stops) before the file system under them.
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if mountpoint -q "$mnt" && ! umount "$mnt"; then
        echo "sync-stall: $mnt is still mounted (busy); left in place with $work" >&2
        return
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$mnt"
truncate -s 3G "$img"
# Inode tables and the file system's journal initialised now, not by a kernel thread
# writing beside the row.
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
mount -o loop "$img" "$mnt"
mkdir -p "$mnt/data"
RIM_BENCH_SETS="persist.data_dir=\"$mnt/data\"${sets:+;$sets}" \
    "$bench" kafka --quick --rows shm-50k >"$out" 2>&1 &
pid=$!
# The row starts once the warm-up (the Kafka consumer group's join) is over.
started=no
for _ in $(seq 1200); do
    if grep -q "warm-up" "$out"; then started=yes; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ "$started" = no ]; then
    echo "sync-stall: the row did not start; the bench said:" >&2
    cat "$out" >&2
    exit 1
fi
sleep 1
fsfreeze -f "$mnt"
sleep "$(awk -v ms="$freeze_ms" 'BEGIN { print ms / 1000 }')"
fsfreeze -u "$mnt"
status=0
wait "$pid" || status=$?
pid=""
if ! grep -E '^name|^shm-50k' "$out"; then
    cat "$out"
fi
grep -o 'ingest held back[^)]*' "$out" || true
exit "$status"
