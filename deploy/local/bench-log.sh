#!/usr/bin/env bash
# Log-cost benchmark on a fresh local stack, release build: an export's store requests and time
# for one month and for all history, before and after compaction, and the time of compacting.
#   usage: deploy/local/bench-log.sh [--events N] [--companies N] [--days N] [--flush-minutes N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

bash "$here/install.sh"
(cd "$root" && cargo build --locked --release --quiet -p tests --bin cce-log-bench)
dir="$(mktemp -d -t cce-bench.XXXXXX)"
trap 'bash "$here/down.sh" "$dir" --purge' EXIT
set -a; source "$(bash "$here/up.sh" "$dir")"; set +a
"$root/target/release/cce-log-bench" "$@"
