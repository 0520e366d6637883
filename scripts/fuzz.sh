#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time: scripts/fuzz.sh [SECONDS] (60 each
# by default; CI passes 30). Each target starts from its committed seeds
# (fuzz/seeds/TARGET, made from the tests' inputs by fuzz/seeds/make) and the inputs of
# crashes found before (fuzz/regressions/TARGET, replayed first), and grows its corpus in
# fuzz/corpus/TARGET (not committed). A crash fails the script (exit 1, once the other
# targets ran) and leaves its input in fuzz/artifacts/TARGET (fuzz/daemon/artifacts/ for
# the daemon's targets); fix it and move the input to fuzz/regressions/TARGET.
#
# Needs the nightly toolchain (-Zsanitizer=address); installs cargo-fuzz if missing.
# Longer by hand: scripts/fuzz.sh 3600, or one target:
#   cargo +nightly fuzz run shm_records fuzz/corpus/shm_records fuzz/seeds/shm_records
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
# A fuzzing process's RSS limit (MiB) and the longest one input may take (s).
rss_limit_mb=2048
input_timeout_s=10

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# (project directory, sanitizer): the daemon's parsers build without one (fuzz/daemon/Cargo.toml
# says why). RIM_FUZZ_PROJECTS narrows the run to some of them (CI: "fuzz", because
# fuzz/daemon builds the whole daemon, librdkafka included, a second time on nightly).
projects=()
for dir in ${RIM_FUZZ_PROJECTS:-fuzz fuzz/daemon}; do
  case "$dir" in
    fuzz) projects+=("fuzz address") ;;
    fuzz/daemon) projects+=("fuzz/daemon none") ;;
    *) echo "fuzz: unknown project $dir (fuzz, fuzz/daemon)" >&2; exit 2 ;;
  esac
done

failed=()
for project in "${projects[@]}"; do
  read -r dir sanitizer <<<"$project"
  fuzz=(cargo +nightly fuzz)
  flags=(--fuzz-dir "$dir" -s "$sanitizer" -O)
  echo "== building $dir (nightly, sanitizer: $sanitizer)"
  CARGO_INCREMENTAL=0 "${fuzz[@]}" build "${flags[@]}"
  for target in $("${fuzz[@]}" list --fuzz-dir "$dir"); do
    corpus="fuzz/corpus/$target" seeds="fuzz/seeds/$target" regressions="fuzz/regressions/$target"
    mkdir -p "$corpus" "$seeds" "$regressions"
    echo "== $target: ${seconds}s"
    # Corpus directories: the first one receives new inputs; the others are only read.
    if ! "${fuzz[@]}" run "${flags[@]}" "$target" "$corpus" "$seeds" "$regressions" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" -timeout="$input_timeout_s" \
        -print_final_stats=1 2>"$corpus.log"; then
      tail -n 40 "$corpus.log"
      failed+=("$target")
    else
      grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$corpus.log" | tr '\n' ' '
      echo
    fi
  done
done

if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
