#!/usr/bin/env bash
# Starts a 3-node raftkv cluster on loopback, initializes it, waits until
# every node is ready and prints the endpoints. Ctrl-C stops the nodes
# gracefully; data stays in $RAFTKV_LOCAL_DIR for the next start.
#
#   scripts/local-cluster.sh            plaintext
#   scripts/local-cluster.sh --secure   TLS on both ports (mutual TLS between
#                                       the nodes), a CA made by `kvnode certs`,
#                                       auth enabled with a root user
set -euo pipefail
secure=0
case "${1:-}" in
  --secure) secure=1 ;;
  "") ;;
  *) echo "usage: $0 [--secure]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
DATA="${RAFTKV_LOCAL_DIR:-$PWD/data/local-cluster}"
PROFILE_DIR="$CARGO_TARGET_DIR/${RAFTKV_PROFILE:-debug}"

# Installs what is missing (libclang for RocksDB's bindings, curl), then
# builds the workspace as the tests do, with progress.
if [ "${RAFTKV_PROFILE:-debug}" = release ]; then scripts/build.sh --release; else scripts/build.sh; fi
KVNODE="$PROFILE_DIR/kvnode"
KVCTL="$PROFILE_DIR/kvctl"

mkdir -p "$DATA"
scheme=http
curl_tls=()
kvctl_tls=()
if [ "$secure" = 1 ]; then
  # A CA and certificates for 127.0.0.1, made once and kept with the data.
  PKI="$DATA/pki"
  "$KVNODE" certs ca --dir "$PKI" >&2
  for i in 1 2 3; do
    [ -f "$PKI/node$i.crt" ] || "$KVNODE" certs node --dir "$PKI" --name "node$i" --san 127.0.0.1 --san localhost >&2
  done
  [ -f "$PKI/root.crt" ] || "$KVNODE" certs client --dir "$PKI" --name root >&2
  scheme=https
  curl_tls=(--cacert "$PKI/ca.crt")
  kvctl_tls=(--cacert "$PKI/ca.crt" --cert "$PKI/root.crt" --key "$PKI/root.key")
fi
pids=()
stop() {
  trap - INT TERM
  echo; echo "stopping (SIGTERM, leadership handed over first)..." >&2
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "stopped; data kept in $DATA" >&2
  exit 0
}
trap stop INT TERM

endpoints=()
for i in 1 2 3; do
  cport=$((7379 + (i - 1) * 10)); pport=$((cport + 1))
  tls_args=()
  if [ "$secure" = 1 ]; then
    tls_args=(--cert-file "$PKI/node$i.crt" --key-file "$PKI/node$i.key" --trusted-ca-file "$PKI/ca.crt"
              --peer-cert-file "$PKI/node$i.crt" --peer-key-file "$PKI/node$i.key" --peer-trusted-ca-file "$PKI/ca.crt")
  fi
  # shellcheck disable=SC2086 # RAFTKV_NODE_ARGS: extra flags, one per word
  "$KVNODE" --id "$i" --name "node$i" --data-dir "$DATA/node$i" \
    --client-addr "127.0.0.1:$cport" --peer-addr "127.0.0.1:$pport" \
    "${tls_args[@]}" ${RAFTKV_NODE_ARGS:-} 2>>"$DATA/node$i.log" &
  pids+=($!)
  endpoints+=("$scheme://127.0.0.1:$cport")
done
EP=$(IFS=,; echo "${endpoints[*]}")

for ep in "${endpoints[@]}"; do
  for _ in $(seq 100); do curl -sf "${curl_tls[@]}" "$ep/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
done
# kvctl finds the three nodes' ids itself; idempotent: on a restart with
# kept data the cluster is already initialized.
"$KVCTL" "${kvctl_tls[@]}" --endpoints "$EP" init >/dev/null 2>&1 || true
# Ready = initialized, a leader known, caught up with what was committed
# before a restart: then the first request after "raftkv is running" works.
for ep in "${endpoints[@]}"; do
  for _ in $(seq 300); do curl -sf "${curl_tls[@]}" "$ep/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
"$KVCTL" "${kvctl_tls[@]}" --endpoints "$EP" status
if [ "$secure" = 1 ]; then
  # Auth on, as the operator does: a root user whose password is kept with
  # the CA, then the switch. kvctl is identified by the root client
  # certificate (CN root); curl by a token (see below). The password goes
  # to curl on stdin, never on a command line.
  PW_FILE="$PKI/root-password"
  [ -s "$PW_FILE" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$PW_FILE")
  if ! curl -sf "${curl_tls[@]}" "${endpoints[0]}/v1/auth/status" | grep -q '"enabled":true'; then
    printf '{"name":"root","password":"%s","roles":["root"]}' "$(cat "$PW_FILE")" |
      curl -s "${curl_tls[@]}" -H 'content-type: application/json' --data-binary @- \
        "${endpoints[0]}/v1/auth/users" >/dev/null
    curl -sf "${curl_tls[@]}" -X POST "${endpoints[0]}/v1/auth/enable" >/dev/null
    echo "auth enabled; root's password is in $PW_FILE" >&2
  fi
fi
tls_env=""
token_hint=""
curl_auth=""
if [ "$secure" = 1 ]; then
  tls_env="
  export KVCTL_CACERT=$PKI/ca.crt KVCTL_CERT=$PKI/root.crt KVCTL_KEY=$PKI/root.key"
  curl_auth=' -H "Authorization: Bearer $TOKEN"'
  token_hint="
  TOKEN=\$(printf '{\"name\":\"root\",\"password\":\"%s\"}' \"\$(cat $PW_FILE)\" | curl -s ${curl_tls[*]} --data-binary @- ${endpoints[0]}/v1/auth/authenticate | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')"
fi
cat <<MSG

raftkv is running: 3 nodes, data in $DATA (logs: node*.log)
  export KVCTL_ENDPOINTS=$EP$tls_env
  $KVCTL put hello world && $KVCTL get hello$token_hint
  curl ${curl_tls[*]}$curl_auth -X PUT --data-binary world ${endpoints[0]}/v1/kv/hello
Ctrl-C stops the cluster (data is kept for the next start).
MSG
wait
