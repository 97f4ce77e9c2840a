#!/usr/bin/env bash
# `make demo`: the workout tracker in a real (headless) browser. Starts a throwaway cluster with
# the workout example, the gateway (with --cors-origin for the app) and the app's DEV ONLY
# server (examples/workout/web/serve.mjs), then examples/workout/web/demo.mjs drives Chromium
# (/usr/bin/chromium, or SYNCLINE_CHROMIUM) as alice's two devices and bob's: offline writes,
# a conflicting delete, a rejected write, a forbidden write, a column added under an old client.
# Prints each step and what each device holds; screenshots and logs go to build/demo/.
# Exits non-zero on any broken expectation. Also a suite of scripts/run-tests.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/demo
mkdir -p "$OUT"
rm -f "$OUT"/*.png "$OUT"/*.log
CHROMIUM=${SYNCLINE_CHROMIUM:-/usr/bin/chromium}
GATEWAY=$ROOT/build/gateway/syncline-gateway
start=$SECONDS

fail() { echo "demo: $1" >&2; exit 1; }
[ -x "$CHROMIUM" ] || fail "no Chromium at $CHROMIUM (scripts/install-deps.sh installs Debian's chromium)"
if [ ! -x "$GATEWAY" ]; then
  make --no-print-directory -f gateway/gateway.mk all >"$OUT/gateway-build.log" 2>&1 ||
    { tail -n 30 "$OUT/gateway-build.log"; fail "building the gateway failed"; }
fi
. scripts/pgenv.sh
. scripts/node-env.sh
. scripts/workout-web.sh
syncline_node_env || fail "no Node >= 20 (see scripts/node-env.sh)"
echo "== building the web app (examples/workout/web)"
workout_web_build >"$OUT/web-build.log" 2>&1 || { tail -n 40 "$OUT/web-build.log"; fail "building the web app failed"; }

cluster_dir=""
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_cluster
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_cluster: a throwaway cluster with database syncline, the extension and the example.
start_cluster() {
  local exports="" attempt
  for attempt in 1 2 3; do  # a cluster starting elsewhere may take our port: retry
    cluster_dir=$(mktemp -d /tmp/syncline-demo.XXXXXX)
    exports=$(SYNCLINE_WORKER_DB=syncline bash scripts/pgcluster.sh start "$cluster_dir") && break
    stop_cluster
    sleep 1
  done
  [ -n "$exports" ] || fail "could not start a PostgreSQL cluster"
  eval "$exports"
  export PGHOST PGPORT PGUSER PGDATA PGDATABASE=syncline
  psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION syncline" \
    -f examples/workout/schema.sql -f examples/workout/rules.sql >"$OUT/setup.log" 2>&1 ||
    { cat "$OUT/setup.log"; fail "loading examples/workout failed"; }
  # The flusher (background worker) must be attached, or live updates depend on its timing.
  for _ in $(seq 1 150); do
    [ "$(psql -X -q -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncline flusher' AND datname = 'syncline'")" -ge 1 ] && break
    sleep 0.1
  done
  psql -X -q -tAc "SELECT syncline.flush()" >/dev/null
}
stop_cluster() {
  [ -n "$cluster_dir" ] || return 0
  bash "$ROOT/scripts/pgcluster.sh" stop "$cluster_dir" >/dev/null 2>&1 || true
  rm -rf "$cluster_dir"
  cluster_dir=""
}

# Before any browser starts: alice's buckets on the server hold what the tables say (the
# initial copy of the buckets rules.sql declares; a copy used to be lost now and then when a
# bucket was declared during a flush, specs/copy_vs_declare.spec).
buckets_as_expected() {
  local got want
  got=$(psql -X -q -tAc "SELECT string_agg(b->>'bucket' || '=' || (b->>'count'), ' ' ORDER BY b->>'bucket')
          FROM jsonb_array_elements(syncline.checkpoint('{\"sub\": \"alice\"}')->'buckets') b")
  want=$(psql -X -q -tAc "SELECT 'exercises[]=' || (SELECT count(*) FROM exercises) || ' user_workouts[\"alice\"]=' ||
          ((SELECT count(*) FROM users WHERE id = 'alice') + (SELECT count(*) FROM workouts WHERE user_id = 'alice') +
           (SELECT count(*) FROM sets WHERE user_id = 'alice'))")
  echo "== alice's buckets on the server: $got"
  [ "$got" = "$want" ] || fail "alice's buckets on the server: expected '$want', got '$got'"
}
start_cluster
buckets_as_expected

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw_port=$(free_port)
web_port=$(free_port)
web_url="http://127.0.0.1:$web_port"
secret="demo-$(openssl rand -hex 16)"

"$GATEWAY" --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" \
  --listen "127.0.0.1:$gw_port" --jwt-hs256-secret "$secret" --cors-origin "$web_url" >"$OUT/gateway.log" 2>&1 &
pids+=($!)
SYNCLINE_JWT_SECRET=$secret GATEWAY_URL="http://127.0.0.1:$gw_port" \
  "$SYNCLINE_NODE" examples/workout/web/serve.mjs --port "$web_port" --dist "$ROOT/build/workout-web/dist" >"$OUT/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$gw_port/healthz" >/dev/null 2>&1 && curl -fsS "$web_url/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$gw_port/healthz" >/dev/null 2>&1 || { tail -n 20 "$OUT/gateway.log"; fail "the gateway did not become healthy"; }
curl -fsS "$web_url/" >/dev/null 2>&1 || { tail -n 20 "$OUT/serve.log"; fail "serve.mjs did not answer"; }
echo "== gateway 127.0.0.1:$gw_port, app $web_url (setup took $((SECONDS - start)) s)"

rc=0
DEMO_URL=$web_url CHROMIUM=$CHROMIUM OUT_DIR=$OUT MIGRATION="$ROOT/examples/workout/migrate-001-set-rpe.sql" \
  "$SYNCLINE_NODE" examples/workout/web/demo.mjs || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "---- gateway log tail ($OUT/gateway.log)"
  tail -n 25 "$OUT/gateway.log"
  echo "---- server log errors"
  grep -E 'ERROR|PANIC|TRAP' "$cluster_dir/server.log" 2>/dev/null | tail -n 15 || true
fi
echo "== make demo took $((SECONDS - start)) s"
exit "$rc"
