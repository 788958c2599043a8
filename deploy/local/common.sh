#!/usr/bin/env bash
# Shared settings for the local (Docker-free) stack. Sourced by the other scripts in this folder.
#
# Servers are built from crates.io at pinned versions into a cache outside the repository, so a
# fresh machine builds them once (~20 minutes on 2 cores) and every later run reuses them.

CCE_CACHE="${CCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-compliance-exports}"
TANSU_VERSION="0.6.0"
GARAGE_VERSION="2.5.0"
TANSU_BIN="$CCE_CACHE/tansu-$TANSU_VERSION/bin/tansu"
GARAGE_BIN="$CCE_CACHE/garage-$GARAGE_VERSION/bin/garage"

log() { printf '[local-stack] %s\n' "$*" >&2; }
die() { printf '[local-stack] error: %s\n' "$*" >&2; exit 1; }

# Python with the independent Kafka clients the tests use (kafka-python, confluent-kafka).
CCE_VENV="$CCE_CACHE/venv"
