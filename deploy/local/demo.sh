#!/usr/bin/env bash
# The main job end to end on a local stack: start the broker and the store and both services,
# then run as far as the services go today (see README's status line), and stop everything.
#
#   usage: deploy/local/demo.sh [DATA_DIR]     (default: a temporary directory, removed after)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "installing the broker and the object store (first time only)"
bash "$here/install.sh"

keep="${1:-}"
dir="${1:-$(mktemp -d -t cce-demo.XXXXXX)}"
pids=()
cleanup() {
  step "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$keep" ]; then bash "$here/down.sh" "$dir"; else bash "$here/down.sh" "$dir" --purge; fi
}
trap cleanup EXIT

step "starting tansu (Kafka API) and garage (S3 API)"
env_file="$(bash "$here/up.sh" "$dir")"
set -a; source "$env_file"; set +a

step "building the services"
(cd "$root" && cargo build --locked --quiet -p ingestion -p export -p loadgen -p archive)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export CCE_INGEST_OPS_ADDR="127.0.0.1:$(free_port)"
export CCE_EXPORT_OPS_ADDR="127.0.0.1:$(free_port)"
export CCE_EXPORT_GRPC_ADDR="127.0.0.1:$(free_port)"

step "starting the ingestion and export services"
"$root/target/debug/cce-ingestion" >"$dir/logs/ingestion.log" 2>&1 & pids+=("$!")
"$root/target/debug/cce-export" >"$dir/logs/export.log" 2>&1 & pids+=("$!")
for ops in "$CCE_INGEST_OPS_ADDR" "$CCE_EXPORT_OPS_ADDR"; do
  deadline=$((SECONDS + 60))
  until curl -fsS "http://$ops/readyz" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "service at $ops not ready after 60s (logs: $dir/logs)"
    sleep 0.5
  done
  log "ready: http://$ops/readyz"
done
log "export gRPC API on $CCE_EXPORT_GRPC_ADDR; metrics on http://$CCE_EXPORT_OPS_ADDR/metrics"

step "producing a sample chat history (3 companies, people, chats, teams, edits, deletes, files)"
"$root/target/debug/cce-loadgen" --events 5000 --companies 3 2>"$dir/logs/loadgen.log"
tail -n 1 "$dir/logs/loadgen.log" >&2
produced="$(sed -n 's/.*produced \([0-9]*\) events.*/\1/p' "$dir/logs/loadgen.log" | tail -n 1)"

step "ingesting into each company's compliance log on S3"
metric() { curl -fsS "http://$CCE_INGEST_OPS_ADDR/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
deadline=$((SECONDS + 120))
while :; do
  consumed="$(metric cce_ingest_events_consumed_total)"; buffered="$(metric cce_ingest_buffered_events)"
  printf '\r  consumed %s of %s, %s waiting to be durable   ' "${consumed:-0}" "$produced" "${buffered:-?}" >&2
  [ "${consumed:-0}" -ge "$produced" ] && [ "${buffered:-1}" -eq 0 ] && break
  [ $SECONDS -lt $deadline ] || die "ingestion did not catch up within 120s (logs: $dir/logs)"
  sleep 0.5
done
echo >&2
curl -fsS "http://$CCE_INGEST_OPS_ADDR/metrics" | grep -E '^cce_ingest_(events_appended_total|log_objects_written_total|dead_lettered_total\{reason="invalid)' >&2 || true

step "reading company acme's compliance log back"
"$root/target/debug/cce-log" summary --company acme

step "exporting acme's whole history into a zip archive on S3 (streamed multipart upload)"
key="exports/acme/demo-$(date +%s).zip"
"$root/target/debug/cce-archive" export --company acme --time-zone Europe/London --key "$key" >/dev/null

step "downloading it through a presigned URL with an ordinary HTTP client"
url="$("$root/target/debug/cce-archive" presign --key "$key")"
echo "  ${url%%\?*}?X-Amz-…" >&2
curl -fsS -o "$dir/export.zip" "$url"
ls -l "$dir/export.zip" >&2

step "what is inside"
unzip -l "$dir/export.zip" | awk 'NR<=12 || /People_And_Groups|Teams\/|manifest/' >&2
echo "  … $(unzip -Z1 "$dir/export.zip" | wc -l) files in all" >&2

step "verifying every file against manifest.json"
"$root/target/debug/cce-archive" verify "$dir/export.zip"

step "what comes next"
cat >&2 <<MSG
Ingested, exported, downloaded and verified. The export was requested by hand with cce-archive;
requesting, watching and downloading it through the export service's gRPC API (with access
control, jobs, 30-day expiry and the email) arrives with Step 4, and this script will use it.
MSG
