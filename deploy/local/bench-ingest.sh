#!/usr/bin/env bash
# Ingestion benchmark on a fresh local stack, release build. Prints throughput, CPU and memory of
# cce-ingestion next to a bare consumer draining the same topic from the same broker.
#   usage: deploy/local/bench-ingest.sh [--events N] [--repeat N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

bash "$here/install.sh"
(cd "$root" && cargo build --locked --release --quiet -p ingestion -p loadgen)
dir="$(mktemp -d -t cce-bench.XXXXXX)"
trap 'bash "$here/down.sh" "$dir" --purge' EXIT
set -a; source "$(bash "$here/up.sh" "$dir")"; set +a
"$CCE_VENV/bin/python" "$here/bench_ingest.py" --brokers "$CCE_KAFKA_BROKERS" \
  --loadgen "$root/target/release/cce-loadgen" --ingestion "$root/target/release/cce-ingestion" "$@"
