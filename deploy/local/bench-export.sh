#!/usr/bin/env bash
# Export benchmark on a fresh local stack, release build: export throughput next to raw deflate
# of the same bytes on one core, and the peak RSS of exports ten times apart in size (same
# density, and ten times denser days).
#   usage: deploy/local/bench-export.sh [--events N]
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
