#!/usr/bin/env bash
# `make run`: a database with Syncline and the example app, and the gateway.
#
#   scripts/run.sh                    throwaway cluster (removed on exit) with
#                                     database `syncline`, the extension, and
#                                     the workout example loaded
#   SYNCLINE_DATABASE_URL=postgres://... scripts/run.sh [--with-example]
#                                     use that database instead; the example is
#                                     loaded only with --with-example or
#                                     SYNCLINE_EXAMPLE=1
# Environment: SYNCLINE_JWT_SECRET (HS256 secret; a dev secret is generated and
# printed when unset), SYNCLINE_LISTEN (default 127.0.0.1:8080),
# SYNCLINE_WEB_LISTEN (default 127.0.0.1:5173) where the workout web app
# (examples/workout/web, built with npm ci + vite) and its DEV ONLY token
# endpoint are served; the gateway allows that origin (--cors-origin).
# SYNCLINE_WEB=0 skips the web app (tests, CI, no Node).
# Stays in the foreground until Ctrl-C / SIGTERM, then cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/pgenv.sh

with_example=${SYNCLINE_EXAMPLE:-0}
for arg in "$@"; do
  case "$arg" in
    --with-example) with_example=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

LISTEN=${SYNCLINE_LISTEN:-127.0.0.1:8080}
WEB=${SYNCLINE_WEB:-1}
WEB_LISTEN=${SYNCLINE_WEB_LISTEN:-127.0.0.1:5173}
GATEWAY=build/gateway/syncline-gateway
cluster_dir=""
child=""
web_child=""

# The web app first: its first build (npm ci) takes a while and may fail without the network.
if [ "$WEB" = 1 ]; then
  . scripts/node-env.sh
  . scripts/workout-web.sh
  echo "building the workout web app (examples/workout/web; SYNCLINE_WEB=0 skips it)"
  if ! { syncline_node_env && workout_web_build; }; then
    echo "building the web app failed (run with SYNCLINE_WEB=0 to skip it)" >&2
    exit 1
  fi
fi

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$web_child" ] && kill -0 "$web_child" 2>/dev/null; then
    kill -TERM "$web_child" 2>/dev/null || true
    wait "$web_child" 2>/dev/null || true
  fi
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [ -n "$cluster_dir" ]; then
    echo "stopping the throwaway cluster"
    bash "$ROOT/scripts/pgcluster.sh" stop "$cluster_dir" || true
    rm -rf "$cluster_dir"
  fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

load_example() {
  local url=$1
  psql "$url" -q -v ON_ERROR_STOP=1 -f examples/workout/schema.sql -f examples/workout/rules.sql >/dev/null
  echo "loaded examples/workout (schema.sql, rules.sql)"
}

if [ -n "${SYNCLINE_DATABASE_URL:-}" ]; then
  db_url=$SYNCLINE_DATABASE_URL
  psql "$db_url" -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS syncline"
  if [ "$with_example" = 1 ]; then load_example "$db_url"; fi
  psql_cmd="psql '$db_url'"
else
  exports=""
  for attempt in 1 2 3; do  # a cluster starting elsewhere may take our port: retry
    cluster_dir=$(mktemp -d /tmp/syncline-run.XXXXXX)
    exports=$(SYNCLINE_WORKER_DB=syncline bash scripts/pgcluster.sh start "$cluster_dir") && break
    bash scripts/pgcluster.sh stop "$cluster_dir" || true
    rm -rf "$cluster_dir"
    cluster_dir=""
    sleep 1
  done
  [ -n "$exports" ] || { echo "could not start a PostgreSQL cluster" >&2; exit 1; }
  eval "$exports"
  export PGHOST PGPORT PGUSER PGDATA
  # pgcluster.sh created database syncline (SYNCLINE_WORKER_DB) before starting.
  db_url="postgresql://postgres@127.0.0.1:$PGPORT/syncline"
  psql "$db_url" -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION syncline"
  load_example "$db_url"
  psql_cmd="psql -h $PGHOST -p $PGPORT -U postgres syncline"
fi

secret=${SYNCLINE_JWT_SECRET:-}
if [ -z "$secret" ]; then
  secret=$(openssl rand -hex 32)
  echo "generated dev JWT secret (HS256): $secret"
fi

# A dev token for user alice: HS256, expires in 24 h.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"alice","iat":%d,"exp":%d}' "$now" $((now + 86400)) | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)
token="$header.$payload.$signature"

echo
echo "database:   $db_url"
echo "psql:       $psql_cmd"
echo "dev token (sub=alice, 24 h):"
echo "  $token"

cors=()
if [ "$WEB" = 1 ]; then
  cors=(--cors-origin "http://$WEB_LISTEN")
  SYNCLINE_JWT_SECRET=$secret GATEWAY_URL="http://$LISTEN" \
    "$SYNCLINE_NODE" examples/workout/web/serve.mjs --host "${WEB_LISTEN%:*}" --port "${WEB_LISTEN##*:}" \
    --dist "$ROOT/build/workout-web/dist" >/dev/null &
  web_child=$!
  echo "web app:    http://$WEB_LISTEN/?user=alice   (also ?user=bob, ?user=carol)"
  echo "            its token endpoint /dev/token is DEV ONLY: it signs a token for anyone who asks"
fi

if [ -x "$GATEWAY" ]; then
  echo "gateway:    ws://$LISTEN and http://$LISTEN (PowerSync front)  (Ctrl-C to stop)"
  echo
  "$GATEWAY" --database-url "$db_url" --listen "$LISTEN" --jwt-hs256-secret "$secret" "${cors[@]}" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  child=""
  [ "$rc" -eq 0 ] || echo "the gateway exited with status $rc" >&2
  exit "$rc"
else
  echo "gateway:    $GATEWAY is not built; the database stays up (Ctrl-C to stop)"
  sleep infinity &
  child=$!
  wait "$child" || true
  child=""
fi
