#!/usr/bin/env bash
# Initial sync of BENCH_PS_ROWS rows (default 100,000) in one bucket into the PowerSync Node SDK's
# SQLite from Syncline's gateway (release build), rows/s, BENCH_PS_REPEAT runs (default 3), each
# into a fresh client database. Figures only, nothing asserted. PowerSync's own service reports
# 2-20k ops/s per client. Starts its own throwaway cluster (fsync off) and writes
# build/bench/powersync.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROWS=${BENCH_PS_ROWS:-100000}
REPEAT=${BENCH_PS_REPEAT:-3}
mkdir -p build/bench
# The gateway is built with the system's PostgreSQL headers, before pgenv.sh picks the server.
make --no-print-directory -f gateway/gateway.mk build/gateway/syncline-gateway >build/bench/powersync_build.log 2>&1 ||
  { tail -n 30 build/bench/powersync_build.log; exit 1; }
. scripts/pgenv.sh
. scripts/node-env.sh
syncline_node_env
syncline_npm_ci tests/powersync "$ROOT/build/powersync" >build/bench/powersync_npm.log 2>&1 ||
  { tail -n 30 build/bench/powersync_npm.log; exit 1; }

dir=$(mktemp -d /tmp/syncline-psbench.XXXXXX)
gw_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  bash scripts/pgcluster.sh stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
eval "$(PG_FSYNC=off bash scripts/pgcluster.sh start "$dir")"
export PGHOST PGPORT PGUSER PGDATA PGDATABASE=syncline
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION syncline;
CREATE TABLE bench_rows (id text PRIMARY KEY, owner text NOT NULL, title text, n int, done boolean);
INSERT INTO bench_rows SELECT 'row-' || g, 'bench-user', 'title of row ' || g, g, g % 2 = 0
  FROM generate_series(1, $ROWS) g;
SELECT syncline.create_bucket('bench_owner', 'SELECT syncline.user_id() AS owner',
  ARRAY['SELECT * FROM bench_rows WHERE owner = bucket.owner']);
SQL
psql -X -q -tAc "SELECT syncline.wait_for_initial_copy(600000)" | grep -q t ||
  { echo "the initial copy of bench_rows did not finish" >&2; exit 1; }
psql -X -q -c "VACUUM ANALYZE" >/dev/null

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/gateway/syncline-gateway --listen "127.0.0.1:$port" --jwt-hs256-secret "$secret" \
  --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" >build/bench/powersync_gateway.log 2>&1 &
gw_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

results=()
for i in $(seq 1 "$REPEAT"); do
  line=$(PS_MODULES="$ROOT/build/powersync/node_modules" GW_URL="http://127.0.0.1:$port" GW_SECRET=$secret \
    BENCH_ROWS=$ROWS "$SYNCLINE_NODE" bench/powersync_bench.mjs)
  echo "run $i: $line"
  results+=("$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows_per_second"])')")
done
median=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
{
  echo "| what | figure | reference |"
  echo "|---|---|---|"
  echo "| initial sync of $ROWS rows into the PowerSync Node SDK (@powersync/node 1.1.0, SQLite) from the gateway, median of $REPEAT | $median rows/s (runs: ${results[*]}) | PowerSync service: 2-20k ops/s per client |"
} | tee build/bench/powersync.md
