#!/usr/bin/env bash
# The fault suite: starts a private stack (up.sh), builds the services and the harness, injects
# faults while a producer keeps producing (ingestion SIGKILLed at random moments, the broker
# stopped, killed and paused, the store stopped and killed, the network to the store cut and
# blackholed), checks every acknowledged event is in its company's log exactly once and in its
# archive, prints the report and stops the stack (down.sh).
#
#   usage: deploy/local/faults.sh [--short] [--release] [-- extra cce-faults flags]
#
#   --short    the CI version: 20 kills and one or two of each other fault (a few minutes)
#   --release  build release binaries (a faster kill loop, a longer build)
#   CCE_FAULTS_REPORT  where the JSON-lines report goes (default: faults-report.jsonl here)
#
# The full run does 200 SIGKILLs (about 20 minutes on two cores). See docs/reliability.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

short="" profile="debug" build_flags=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) short="--short" ;;
    --release) profile="release" build_flags=(--release) ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1 (usage: faults.sh [--short] [--release] [-- cce-faults flags])" ;;
  esac
  shift
done

bash "$here/install.sh"
cd "$root"
log "building cce-ingestion and cce-faults ($profile)"
cargo build --locked "${build_flags[@]}" -p ingestion --bin cce-ingestion
cargo build --locked "${build_flags[@]}" -p tests --bin cce-faults

dir="$(mktemp -d -t cce-faults.XXXXXX)"
status=0
cleanup() {
  if [ "$status" -ne 0 ]; then
    for f in "$dir"/logs/*.log; do
      [ -f "$f" ] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
    done
  fi
  # The suite may leave the broker paused if it was interrupted mid-fault.
  [ -f "$dir/pids" ] && xargs -r kill -CONT <"$dir/pids" 2>/dev/null || true
  bash "$here/down.sh" "$dir" --purge
}
trap cleanup EXIT
bash "$here/up.sh" "$dir" >/dev/null

export CCE_BIN_DIR="$root/target/$profile"
# Errors as their chain of causes, without a backtrace.
export RUST_LIB_BACKTRACE=0
export RUST_LOG="${RUST_LOG:-info,librdkafka=off,rdkafka=off}"
report="${CCE_FAULTS_REPORT:-$root/faults-report.jsonl}"
# Outside the stack's directory, which down.sh purges: kept for a failed run's post-mortem.
logs="$(mktemp -d -t cce-faults-logs.XXXXXX)"
log "running the fault suite against the stack in $dir ${short:-(full)}"
"$CCE_BIN_DIR/cce-faults" --stack-env "$dir/stack.env" --report "$report" \
  --log-dir "$logs" "${extra[@]}" all $short || status=$?
exit "$status"
