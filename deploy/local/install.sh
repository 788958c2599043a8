#!/usr/bin/env bash
# Installs, when missing, the pinned Kafka-API broker (tansu) and S3-API store (garage) into the
# cache, plus the Python clients the tests use as independent Kafka clients.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

install_crate() { # name version bin root [cargo-args...]
  local name="$1" version="$2" bin="$3" root="$4"; shift 4
  if [ -x "$bin" ]; then
    log "$name $version already installed at $bin"
    return
  fi
  log "building $name $version from crates.io (first time only; takes ~10 minutes)"
  local start=$SECONDS
  # A private target dir per crate: a failed build resumes instead of starting over.
  CARGO_TARGET_DIR="$CCE_CACHE/build/$name-$version" \
    cargo install --locked --quiet "$name" --version "$version" --root "$root" "$@"
  rm -rf "$CCE_CACHE/build/$name-$version"
  log "built $name $version in $((SECONDS - start))s"
}

mkdir -p "$CCE_CACHE"
# tansu: `libsql` gives the sqlite:// storage engine. The memory:// engine loses messages when a
# consumer resumes inside a record batch (docs/servers.md), so we never use it.
install_crate tansu "$TANSU_VERSION" "$TANSU_BIN" "$CCE_CACHE/tansu-$TANSU_VERSION" --features libsql
install_crate garage "$GARAGE_VERSION" "$GARAGE_BIN" "$CCE_CACHE/garage-$GARAGE_VERSION"

# Independent Kafka clients for tests (Debian's kcat is too old to talk to tansu).
if ! "$CCE_VENV/bin/python" -c 'import kafka, confluent_kafka' 2>/dev/null; then
  log "installing the Python test clients into $CCE_VENV"
  python3 -m venv "$CCE_VENV"
  "$CCE_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

# Independent ZIP readers the archive tests use (unzip, 7z; Java and Python are on the machine).
missing=()
command -v unzip >/dev/null || missing+=(unzip)
command -v 7z >/dev/null || missing+=(p7zip-full)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} from Debian"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq "${missing[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else sudo apt-get install -y -qq "${missing[@]}" >/dev/null; fi
fi
