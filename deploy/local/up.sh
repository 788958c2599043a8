#!/usr/bin/env bash
# Starts the local stack: the Kafka-API broker (tansu, sqlite storage) and the S3-API store
# (garage, single node) on loopback, with their data under DATA_DIR. Creates the bucket, an
# access key and the topics, and writes the endpoints and credentials to DATA_DIR/stack.env.
#
#   usage: deploy/local/up.sh [DATA_DIR]      (default: a new temporary directory)
#
# Prints the env file's path as its last line. Stop with deploy/local/down.sh DATA_DIR.
# Ports are chosen free at start unless CCE_KAFKA_PORT / CCE_S3_PORT are set.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"

dir="${1:-$(mktemp -d -t cce-stack.XXXXXX)}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
[ -x "$TANSU_BIN" ] && [ -x "$GARAGE_BIN" ] || die "servers not installed: run deploy/local/install.sh first"
if [ -f "$dir/pids" ]; then
  die "$dir already has a running stack (pids file present): stop it with deploy/local/down.sh $dir"
fi
mkdir -p "$dir/logs" "$dir/tansu" "$dir/garage"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kafka_port="${CCE_KAFKA_PORT:-$(free_port)}"
s3_port="${CCE_S3_PORT:-$(free_port)}"
rpc_port="$(free_port)"
admin_port="$(free_port)"

wait_for() { # description seconds command...
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s (logs: $dir/logs)"
    sleep 0.2
  done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- Kafka API: tansu with sqlite storage (never memory://, see docs/servers.md) ---------------
log "starting tansu $TANSU_VERSION on 127.0.0.1:$kafka_port"
(
  cd "$dir/tansu"
  exec "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine "sqlite://tansu.db"
) >"$dir/logs/tansu.log" 2>&1 &
echo "$!" >>"$dir/pids"

# --- S3 API: garage, one node -------------------------------------------------------------------
rpc_secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
cat >"$dir/garage/garage.toml" <<EOF
metadata_dir = "$dir/garage/meta"
data_dir = "$dir/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$admin_token"
EOF
garage() { "$GARAGE_BIN" -c "$dir/garage/garage.toml" "$@"; }
log "starting garage $GARAGE_VERSION on 127.0.0.1:$s3_port"
"$GARAGE_BIN" -c "$dir/garage/garage.toml" server >"$dir/logs/garage.log" 2>&1 &
echo "$!" >>"$dir/pids"

wait_for "garage" 60 garage status
node_id="$(garage node id -q | cut -d@ -f1)"
garage layout assign -z local -c 1G "$node_id" >/dev/null
garage layout apply --version 1 >/dev/null
bucket="compliance"
wait_for "garage bucket creation" 30 garage bucket create "$bucket"
key_info="$(garage key create cce-services)"
access_key="$(printf '%s\n' "$key_info" | sed -n 's/^Key ID: *//p' | head -n1)"
secret_key="$(printf '%s\n' "$key_info" | sed -n 's/^Secret key: *//p' | head -n1)"
[ -n "$access_key" ] && [ -n "$secret_key" ] || die "could not read the key garage created: $key_info"
garage bucket allow --read --write --owner "$bucket" --key cce-services >/dev/null
wait_for "garage S3 endpoint" 30 port_open "$s3_port"

# --- topics -------------------------------------------------------------------------------------
wait_for "tansu" 60 port_open "$kafka_port"
create_topic() { # name partitions [config]; an existing topic (a reused DATA_DIR) is fine
  local out
  out="$("$TANSU_BIN" topic create "$1" --broker "tcp://127.0.0.1:$kafka_port" --partitions "$2" \
    ${3:+--config "$3"} 2>&1)" || grep -q "already exists" <<<"$out"
}
for topic in chat-events:4 chat-events-dlq:1 export-notifications:1; do
  wait_for "topic ${topic%%:*}" 30 create_topic "${topic%%:*}" "${topic##*:}"
done
# The export service's state (settings, access, jobs, audit): one partition, kept forever (the
# service refuses a state topic whose retention would drop records).
wait_for "topic export-state" 30 create_topic export-state 1 retention.ms=-1
# Running exports' liveness and progress: read from its end, never replayed, so an hour is plenty.
wait_for "topic export-liveness" 30 create_topic export-liveness 1 retention.ms=3600000

# --- the env file the services, the demo and the tests read ------------------------------------
# A fresh signing key for this stack's admin tokens (the admin portal's key in production): 32
# random bytes as 64 hex characters, used as they are (the service refuses keys under 32 bytes
# and published ones).
token_key="$(cat "$dir/token.key" 2>/dev/null || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tee "$dir/token.key"; })"
# A fresh Ed25519 key the export service signs archives' manifests with (docs/export-format.md,
# "Signature"), readable by this user only (the service refuses a key every user can read).
# Without openssl, the same PKCS#8 form by hand: a fixed 16-byte prefix and 32 random bytes.
signing_key="$dir/archive-signing.pem"
if [ ! -s "$signing_key" ]; then
  (
    umask 077
    if command -v openssl >/dev/null; then
      openssl genpkey -algorithm ed25519 -out "$signing_key"
    else
      {
        echo "-----BEGIN PRIVATE KEY-----"
        { printf '\060\056\002\001\000\060\005\006\003\053\145\160\004\042\004\040'; head -c 32 /dev/urandom; } | base64
        echo "-----END PRIVATE KEY-----"
      } >"$signing_key"
    fi
  )
fi
cat >"$dir/stack.env" <<ENV
CCE_STACK_DIR=$dir
CCE_KAFKA_BROKERS=127.0.0.1:$kafka_port
CCE_EVENTS_TOPIC=chat-events
CCE_DEAD_LETTER_TOPIC=chat-events-dlq
CCE_INGEST_GROUP=cce-ingestion
CCE_STATE_TOPIC=export-state
CCE_LIVENESS_TOPIC=export-liveness
CCE_NOTIFICATIONS_TOPIC=export-notifications
CCE_TOKEN_SIGNING_KEY=$token_key
CCE_ARCHIVE_SIGNING_KEY_FILES=$signing_key
CCE_S3_ENDPOINT=http://127.0.0.1:$s3_port
CCE_S3_REGION=garage
CCE_S3_BUCKET=$bucket
CCE_S3_FORCE_PATH_STYLE=true
AWS_ACCESS_KEY_ID=$access_key
AWS_SECRET_ACCESS_KEY=$secret_key
CCE_GARAGE_ADMIN_ENDPOINT=http://127.0.0.1:$admin_port
ENV
log "stack is up: kafka 127.0.0.1:$kafka_port, s3 http://127.0.0.1:$s3_port (bucket $bucket)"
echo "$dir/stack.env"
