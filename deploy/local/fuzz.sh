#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) for a bounded time each
# and prints, per target, its executions, corpus, coverage and crashes.
#
#   bash deploy/local/fuzz.sh [--seconds N] [--seeds] [target...]
#
# --seconds N  how long each target runs (default 60); the targets run one after the other.
# --seeds      regenerate the seed corpus (fuzz/corpus/) from the docs' examples first
#              (crates/archive/tests/fuzz_corpus.rs).
# target...    only these targets (default: all of `cargo fuzz list`).
#
# Works on the stable toolchain: no sanitizer (`-s none`; the address sanitizer needs nightly),
# with RUSTC_BOOTSTRAP=1 in case cargo-fuzz passes a -Z flag. Debug assertions are on, so integer
# overflow is a crash. cargo-fuzz is built once from crates.io at a pinned version into the
# cache, outside the repository. New inputs go to fuzz/target/corpus/<target> (not committed);
# the committed seeds in fuzz/corpus/<target> are read only. A crash stops its target, leaves
# the input in fuzz/artifacts/<target>/ and makes the script exit non-zero after the others ran.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

seconds=60
seeds=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --seeds) seeds=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || die "--seconds wants a whole number, not $seconds"

CARGO_FUZZ_VERSION="0.13.2"
CARGO_FUZZ_ROOT="$CCE_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
CARGO_FUZZ="$CARGO_FUZZ_ROOT/bin/cargo-fuzz"
if [ ! -x "$CARGO_FUZZ" ]; then
  log "building cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (first time only; ~2 minutes)"
  start=$SECONDS
  CARGO_TARGET_DIR="$CCE_CACHE/build/cargo-fuzz-$CARGO_FUZZ_VERSION" \
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$CARGO_FUZZ_ROOT"
  rm -rf "$CCE_CACHE/build/cargo-fuzz-$CARGO_FUZZ_VERSION"
  log "built cargo-fuzz in $((SECONDS - start))s"
fi
export PATH="$CARGO_FUZZ_ROOT/bin:$PATH"
export CARGO_INCREMENTAL=0 RUSTC_BOOTSTRAP=1

if [ "$seeds" = 1 ]; then
  log "regenerating the seed corpus from the docs' examples"
  (cd "$root" && CCE_FUZZ_CORPUS="$root/fuzz/corpus" \
    cargo test --quiet -p archive --test fuzz_corpus)
fi

cd "$root/fuzz"
fuzz=(cargo fuzz)
opts=(-s none --debug-assertions)
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${fuzz[@]}" list)
fi
log "building ${#targets[@]} fuzz targets (release, coverage-instrumented, no sanitizer)"
start=$SECONDS
"${fuzz[@]}" build "${opts[@]}" >&2
log "built in $((SECONDS - start))s; fuzz/target holds $(du -sh target | cut -f1)"

failed=()
summary=()
for target in "${targets[@]}"; do
  work="target/corpus/$target"
  mkdir -p "$work" "corpus/$target" "artifacts/$target"
  logfile="target/fuzz-$target.log"
  log "fuzzing $target for ${seconds}s (log: fuzz/$logfile)"
  before=$(find "artifacts/$target" -type f | wc -l)
  status=0
  # The work corpus first: libFuzzer adds what it finds to the first folder only.
  "${fuzz[@]}" run "${opts[@]}" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$logfile" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logfile" | tail -1)
  # The last status line: "#N DONE cov: X ft: Y corp: U/Sb ...".
  last=$(grep -E '^#[0-9]+' "$logfile" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  crashes=$(( $(find "artifacts/$target" -type f | wc -l) - before ))
  line="$target: ${execs:-?} executions (${rate:-?}/s) in ${seconds}s, coverage ${cov:-?} edges ${ft:-?} features, corpus ${corp:-?} (units/bytes), ${crashes} new crash files, exit $status"
  summary+=("$line")
  if [ "$status" != 0 ] || [ "$crashes" != 0 ]; then
    failed+=("$target")
    grep -E 'panicked at|ERROR: libFuzzer|Test unit written|^SUMMARY' "$logfile" | head -8 >&2 || true
  fi
done

echo "fuzz summary (${seconds}s per target, cargo-fuzz $CARGO_FUZZ_VERSION, fuzz/target $(du -sh target | cut -f1)):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes or errors in: ${failed[*]} (inputs in fuzz/artifacts/<target>/, logs in fuzz/target/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
