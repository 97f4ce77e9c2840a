#!/usr/bin/env bash
# Write-path benchmark (figures only, nothing asserted): single-op batches from
# WRITE_CLIENTS (100) concurrent websocket clients through the release gateway
# (each its own token subject and client id, one batch in flight each: waits
# for the WriteAck before the next seq), against the same single-row INSERT
# sent straight to Postgres by WRITE_CLIENTS pgbench connections. Both write the
# same synced table, in the same throwaway cluster, alternating runs.
#   bench/write_bench.sh          writes build/bench/writes.md
# Knobs: WRITE_CLIENTS (100), WRITE_SECONDS (10 per run), WRITE_REPEAT (2 runs
#        per side), WRITE_POOL (gateway --pool-size, its default 4),
#        PG_FSYNC (off: the disk is not what we measure; on for a real disk),
#        WRITE_FLUSH_DELAY (syncline.flush_delay for the run, e.g. 2ms; default: the GUC's),
#        WRITE_MIXED_TPS (0; N: direct INSERTs at N/s into the same table during the gateway
#        runs, as an app writing alongside its clients),
#        WRITE_DEPTH (1: each client waits for a batch's WriteAck before sending the next;
#        N: keeps N batches unacknowledged, as a client uploading its offline queue).
#        WRITE_DIRECT=0 skips the direct runs (the ratio is then not computed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/bench
mkdir -p "$OUT"
. scripts/pgenv.sh
CLIENTS=${WRITE_CLIENTS:-100}
SECONDS_PER_RUN=${WRITE_SECONDS:-10}
REPEAT=${WRITE_REPEAT:-2}
POOL=${WRITE_POOL:-4}
DEPTH=${WRITE_DEPTH:-1}
export PG_FSYNC=${PG_FSYNC:-off}
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"

make --no-print-directory -f gateway/gateway.mk build/gateway/syncline-gateway \
  build/gateway/obj/tests/e2e/ws_client.o build/gateway/obj/proto.pb.o \
  >"$OUT/gateway_build.log" 2>&1 || { tail -n 30 "$OUT/gateway_build.log"; exit 1; }
g++ -std=c++17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I. -Ibuild/gateway/gen \
  bench/write_bench.cpp build/gateway/obj/tests/e2e/ws_client.o build/gateway/obj/proto.pb.o \
  -lwebsockets -lev -lprotobuf -lssl -lcrypto -lpthread -o "$OUT/write_bench"

dir=$(mktemp -d /tmp/syncline-wbench.XXXXXX)
gw_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  bash scripts/pgcluster.sh stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$(SYNCLINE_WORKER_DB=syncline bash scripts/pgcluster.sh start "$dir")"
export PGHOST PGPORT PGUSER PGDATA PGDATABASE=syncline  # pgcluster.sh created it
sql() { psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION syncline;
CREATE TABLE wb_items (id text PRIMARY KEY, owner text NOT NULL, v text);
CREATE SEQUENCE wb_direct_seq;
GRANT SELECT, INSERT, UPDATE, DELETE ON wb_items TO syncline_writer;
SELECT syncline.create_bucket('wb_user', 'SELECT syncline.user_id() AS user_id',
  ARRAY['SELECT * FROM wb_items WHERE owner = bucket.user_id']);
SELECT syncline.flush();
SQL
if [ -n "${WRITE_FLUSH_DELAY:-}" ]; then
  psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET syncline.flush_delay = '$WRITE_FLUSH_DELAY'" \
    -c "SELECT pg_reload_conf()" >/dev/null
fi
# The flusher attaches to database "syncline" as the server starts: make sure it is up.
for _ in $(seq 1 150); do
  [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncline flusher' AND datname = 'syncline'")" -ge 1 ] && break
  sleep 0.1
done
sql "INSERT INTO wb_items VALUES ('warmup', 'nobody', 'x')" && sleep 1

drain() {
  local i
  for i in $(seq 1 600); do
    [ "$(sql "SELECT count(*) FROM syncline_internal.pending")" = 0 ] && return 0
    sleep 0.1
  done
  echo "warning: staged ops still pending after 60 s" >&2
}
# Between runs: everything flushed, and the previous run's dead tuples and
# statistics dealt with, so autovacuum does not land in the next run.
settle() { drain; sql "VACUUM ANALYZE"; }

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/gateway/syncline-gateway --listen "127.0.0.1:$port" --jwt-hs256-secret "$secret" \
  --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" \
  --max-connections 1000 --pool-size "$POOL" >"$OUT/write_gateway.log" 2>&1 &
gw_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { tail -n 20 "$OUT/write_gateway.log"; exit 1; }

# The direct side: the row the gateway's PUT inserts, one autocommit INSERT per transaction.
cat >"$OUT/write_direct.sql" <<'EOF'
INSERT INTO wb_items (id, owner, v) VALUES ('d-' || nextval('wb_direct_seq'), 'wb' || :client_id, 'payload text of a typical row');
EOF

echo "== write path: $CLIENTS clients (depth $DEPTH), ${SECONDS_PER_RUN} s x $REPEAT per side, $(nproc) cores, fsync $PG_FSYNC, gateway pool $POOL"
: >"$OUT/write_bench.log"
gws=() directs=() lines=()
for r in $(seq 1 "$REPEAT"); do
  mixed_pid=""
  if [ "${WRITE_MIXED_TPS:-0}" -gt 0 ]; then
    # Direct writes alongside, rate-limited, into the same synced table.
    "$PGBIN/pgbench" -n -M prepared -c 4 -j 1 -R "$WRITE_MIXED_TPS" -T $((SECONDS_PER_RUN + 2)) \
      -f "$OUT/write_direct.sql" syncline >"$OUT/write_mixed.log" 2>&1 &
    mixed_pid=$!
  fi
  line=$(SYNCLINE_GW_HOST=127.0.0.1 SYNCLINE_GW_PORT=$port SYNCLINE_JWT_SECRET=$secret \
    "$OUT/write_bench" "$CLIENTS" "$SECONDS_PER_RUN" 2 "r$r" "$DEPTH" 2>>"$OUT/write_bench.log") ||
    echo "warning: gateway run $r had errors (see $OUT/write_bench.log)" >&2
  if [ -n "$mixed_pid" ]; then
    wait "$mixed_pid" || true
    line="$line mixed_direct_tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/write_mixed.log")"
  fi
  echo "gateway run $r: $line"
  lines+=("$line")
  gws+=("$(echo "$line" | tr ' ' '\n' | sed -n 's/^per_s=//p')")
  settle
  [ "${WRITE_DIRECT:-1}" = 0 ] && continue
  log=$("$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -f "$OUT/write_direct.sql" syncline 2>&1) || true
  printf '%s\n' "$log" >>"$OUT/write_bench.log"
  tps=$(printf '%s\n' "$log" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
  echo "direct  run $r: tps=${tps:-0}"
  directs+=("${tps:-0}")
  settle
done
curl -fs "http://127.0.0.1:$port/metrics" >"$OUT/write_metrics.txt" 2>/dev/null || true
mean() { printf '%s\n' "$@" | awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n; else print 0 }'; }
gw=$(mean "${gws[@]}")
direct=$(mean "${directs[@]}")
ratio=$(awk -v a="$gw" -v b="$direct" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
p50=$(printf '%s\n' "${lines[@]}" | tr ' ' '\n' | sed -n 's/^p50_ms=//p' | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n }')
p99=$(printf '%s\n' "${lines[@]}" | tr ' ' '\n' | sed -n 's/^p99_ms=//p' | sort -g | tail -n 1)
bad=$(printf '%s\n' "${lines[@]}" | tr ' ' '\n' | sed -n 's/^not_applied=//p' | awk '{ s += $1 } END { print s + 0 }')
rows=$(sql "SELECT count(*) FROM wb_items")
metric() { sed -n "s/^$1 //p" "$OUT/write_metrics.txt" 2>/dev/null | head -n 1; }
groups=$(metric syncline_write_groups_total)
grouped=$(metric syncline_write_group_batches_total)
regrouped=$(metric syncline_write_group_retries_total)
{
  echo "### Write path ($CLIENTS concurrent clients, single-op batches, mean of $REPEAT alternating ${SECONDS_PER_RUN} s runs per side)"
  echo
  echo "| path | batches/s | p50 ms | p99 ms |"
  echo "|---|---:|---:|---:|"
  echo "| gateway: WriteBatch -> WriteAck ($CLIENTS websockets, $DEPTH in flight each, pool $POOL) | $gw | $p50 | $p99 |"
  echo "| direct: INSERT over libpq (pgbench -c $CLIENTS -M prepared) | $direct | | |"
  echo "| **gateway / direct** | **$ratio** | | |"
  echo
  echo "$(nproc) cores, fsync $PG_FSYNC, synchronous_commit on; client, gateway and Postgres on the same machine."
  echo "Runs: gateway ${gws[*]}, direct $(printf '%.0f ' "${directs[@]}")batches/s. p50: mean over gateway runs, p99: worst run."
  echo "Batches not APPLIED: $bad. Rows written: $rows. Target: >= 0.6 of direct."
  echo "Gateway: ${grouped:-0} batches went in ${groups:-0} group statements" \
    "($(awk -v a="${grouped:-0}" -v b="${groups:-0}" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print 0 }') per group)," \
    "${regrouped:-0} groups re-run batch by batch."
} >"$OUT/writes.md"
echo
cat "$OUT/writes.md"
