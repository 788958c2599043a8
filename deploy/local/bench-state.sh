#!/usr/bin/env bash
# Export service start-up benchmark on a fresh local stack, release build: time until /readyz with
# a state topic of N historical records, from a snapshot and (for the smaller N) without one.
#   usage: deploy/local/bench-state.sh [--records 100000,1000000,10000000] [--heartbeats-per-job N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

bash "$here/install.sh"
(cd "$root" && cargo build --locked --release --quiet -p export -p tests --bin cce-export --bin cce-state-bench)
dir="$(mktemp -d -t cce-bench.XXXXXX)"
trap 'bash "$here/down.sh" "$dir" --purge' EXIT
set -a; source "$(bash "$here/up.sh" "$dir")"; set +a
"$root/target/release/cce-state-bench" --cce-export "$root/target/release/cce-export" "$@"
