#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against a real Kafka-API broker and a
# real S3-API store started here on loopback (installed first when missing) and stopped after.
#
#   usage: deploy/local/test.sh [extra cargo test args]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

bash "$here/install.sh"
dir="$(mktemp -d -t cce-test.XXXXXX)"
status=0
cleanup() {
  if [ "$status" -ne 0 ]; then
    for f in "$dir"/logs/*.log; do
      [ -f "$f" ] && { log "last lines of $f:"; tail -n 30 "$f" >&2; }
    done
  fi
  bash "$here/down.sh" "$dir" --purge
}
trap cleanup EXIT
bash "$here/up.sh" "$dir" >/dev/null

export CCE_STACK_ENV="$dir/stack.env"
export CCE_PYTHON="$CCE_VENV/bin/python"
cd "$root"
log "running the test suite against the stack in $dir"
cargo build --locked --workspace --bins
export CCE_BIN_DIR="$root/target/debug"
cargo test --workspace --locked "$@" || status=$?
exit "$status"
