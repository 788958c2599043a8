#!/usr/bin/env bash
# Export benchmark on a fresh local stack, release build. Seeds format-2 logs (written through
# the v2 log writer, then compacted) and exports each case with the release cce-archive in its
# own process: throughput next to deflate of the same bytes on one core and to reading the same
# log objects without rendering (the I/O floor), and peak RSS by export size.
#   usage: deploy/local/bench-export.sh [--cases small,large,long,huge-day,big-directory,year]
#            [--events N] [--huge-day-posts N] [--directory-people N] [--year-events N]
#            [--rss-cap-mib MIB] [--memory-budget-mib MIB] [--disk-budget-mib MIB] [--threads N]
#            [--format json|eml|csv]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

bash "$here/install.sh"
(cd "$root" && cargo build --locked --release --quiet -p archive -p tests --bin cce-archive --bin cce-export-bench)
dir="$(mktemp -d -t cce-bench.XXXXXX)"
trap 'bash "$here/down.sh" "$dir" --purge' EXIT
set -a; source "$(bash "$here/up.sh" "$dir")"; set +a
"$root/target/release/cce-export-bench" --cce-archive "$root/target/release/cce-archive" "$@"
