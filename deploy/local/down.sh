#!/usr/bin/env bash
# Stops the stack started by up.sh in DATA_DIR: SIGTERM, then SIGKILL after 10 seconds.
#   usage: deploy/local/down.sh DATA_DIR [--purge]     (--purge also deletes DATA_DIR)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

dir="${1:?usage: down.sh DATA_DIR [--purge]}"
purge="${2:-}"
if [ -f "$dir/pids" ]; then
  mapfile -t pids <"$dir/pids"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        log "pid $pid did not stop after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  done
  rm -f "$dir/pids"
  log "stack in $dir stopped"
fi
if [ "$purge" = "--purge" ]; then
  rm -rf "$dir"
fi
