#!/usr/bin/env bash
# What a synced row costs, in instructions: the same writes into a plain and
# into a synced table, each in a fresh single-user backend under callgrind,
# which counts every user-space instruction, and the flush that publishes
# them. Unlike wall-clock or CPU time, the count is the same from one
# run to the next on a shared, noisy machine, so two builds can be compared
# exactly. It leaves out the kernel (page writes, WAL flushes) and runs the
# CPU as valgrind presents it (SHA-256 without SHA-NI, so the checksum's share
# is larger than natively); compare builds with it, not with pgbench.
#
#   bench/instructions.sh    one INSERT ... SELECT of 100,000 rows (INSTR_ROWS) and
#                            10,000 single-row INSERT transactions (INSTR_TXNS),
#                            each into a plain and a synced table; then
#                            syncline.flush() publishing what the synced runs staged;
#                            and client write batches as the gateway sends them:
#                            INSTR_GROUPS (20) statements of 32 single-op batches, each
#                            applied by syncline.apply_writes (per batch)
# Writes build/bench/instructions.md. Needs valgrind (installed with apt when
# missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/bench
mkdir -p "$OUT"
ROWS=${INSTR_ROWS:-100000}
TXNS=${INSTR_TXNS:-10000}
STATEMENTS=${INSTR_GROUPS:-20}

. scripts/pgenv.sh
if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
  else
    echo "valgrind is missing (apt-get install valgrind)" >&2
    exit 1
  fi
fi


work=$(mktemp -d /tmp/syncline-instr.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
as_owner "$PGBIN/initdb" -D "$work/template" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
  >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
cat >>"$work/template/postgresql.conf" <<'CONF'
shared_preload_libraries = 'syncline'
syncline.database = 'postgres'
fsync = off
synchronous_commit = off
CONF
# One statement per line: single-user mode ends a statement at each newline.
as_owner "$PGBIN/postgres" --single -D "$work/template" postgres >"$work/setup.log" 2>&1 <<'SQL'
CREATE EXTENSION syncline
CREATE TABLE plain_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text, at timestamptz NOT NULL DEFAULT '2026-12-02 10:00:00.123+00')
CREATE TABLE synced_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text, at timestamptz NOT NULL DEFAULT '2026-12-02 10:00:00.123+00')
SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner', ARRAY['SELECT * FROM synced_t WHERE owner = bucket.owner'])
CREATE TABLE wb_items (id text PRIMARY KEY, owner text NOT NULL, v text)
GRANT SELECT, INSERT, UPDATE, DELETE ON wb_items TO syncline_writer
SELECT syncline.create_bucket('wb_user', 'SELECT syncline.user_id() AS user_id', ARRAY['SELECT * FROM wb_items WHERE owner = bucket.user_id'])
SQL
if grep -qE 'ERROR|FATAL' "$work/setup.log"; then cat "$work/setup.log" >&2; exit 1; fi

# count DIR: the instructions of one single-user session on data directory
# DIR running the statements on stdin (one per line), start-up included.
count() {
  as_owner valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$PGBIN/postgres" --single -D "$1" postgres >"$work/run.log" 2>&1
  if grep -q 'ERROR' "$work/run.log"; then cat "$work/run.log" >&2; exit 1; fi
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/run.log"
}
fresh() { rm -rf "$work/$1" && cp -a "$work/template" "$work/$1"; }
bulk_sql() { echo "INSERT INTO $1 (owner, val, payload) SELECT 'u' || (g % 1000), g, 'payload text of a typical row' FROM generate_series(1, $2) g"; }
rows_sql() { for i in $(seq 1 "$2"); do echo "INSERT INTO $1 (owner, val, payload) VALUES ('u$((i % 1000))', $i, 'payload text of a typical row')"; done; }
# batches_sql N: N statements shaped as the gateway's write groups (gateway/writes.cpp,
# kApplyGroup), each applying 32 single-op batches of 32 clients (client i's seq k in
# statement k), the jsonb array inlined as a literal since single-user mode has no parameters.
batches_sql() {
  python3 - "$1" <<'PY'
import json, sys
for k in range(1, int(sys.argv[1]) + 1):
    group = [{"c": {"sub": f"wb{i}", "iat": 1, "exp": 2000000000}, "i": f"client-{i}",
              "b": {"seq": k, "ops": [{"op": "PUT", "type": "wb_items", "id": f"w-{i}-{k}",
                                       "data": {"owner": f"wb{i}", "v": "payload text of a typical row"}}]}}
             for i in range(32)]
    literal = json.dumps(group).replace("'", "''")
    print("SELECT count(syncline.apply_writes(e -> 'c', e ->> 'i', e -> 'b')) FROM "
          "(SELECT pg_catalog.set_config('lock_timeout', '1000', true)) AS l(lock_timeout), "
          f"pg_catalog.jsonb_array_elements('{literal}'::pg_catalog.jsonb) WITH ORDINALITY AS t(e, n)")
PY
}
# per N COUNT_N COUNT_1: instructions per unit, the one-unit session subtracted.
per() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", (a - b) / (n - 1) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== instructions: $ROWS-row INSERT ... SELECT and $TXNS single-row INSERTs, plain and synced, single-user backends under callgrind"
declare -A n
for t in plain_t synced_t; do
  for size in 1 "$ROWS"; do
    fresh "bulk_${t}_$size"
    n[bulk_${t}_$size]=$(bulk_sql "$t" "$size" | count "$work/bulk_${t}_$size")
  done
  for size in 1 "$TXNS"; do
    fresh "rows_${t}_$size"
    n[rows_${t}_$size]=$(rows_sql "$t" "$size" | count "$work/rows_${t}_$size")
  done
done
for size in 1 "$STATEMENTS"; do
  fresh "batches_$size"
  n[batches_$size]=$(batches_sql "$size" | count "$work/batches_$size")
done
# The flusher's side: syncline.flush() publishing what each synced run staged.
for run in "bulk_synced_t_1" "bulk_synced_t_$ROWS" "rows_synced_t_1" "rows_synced_t_$TXNS"; do
  n[flush_$run]=$(echo "SELECT syncline.flush()" | count "$work/$run")
done
bulk_plain=$(per "$ROWS" "${n[bulk_plain_t_$ROWS]}" "${n[bulk_plain_t_1]}")
bulk_synced=$(per "$ROWS" "${n[bulk_synced_t_$ROWS]}" "${n[bulk_synced_t_1]}")
rows_plain=$(per "$TXNS" "${n[rows_plain_t_$TXNS]}" "${n[rows_plain_t_1]}")
rows_synced=$(per "$TXNS" "${n[rows_synced_t_$TXNS]}" "${n[rows_synced_t_1]}")
flush_bulk=$(per "$ROWS" "${n[flush_bulk_synced_t_$ROWS]}" "${n[flush_bulk_synced_t_1]}")
flush_rows=$(per "$TXNS" "${n[flush_rows_synced_t_$TXNS]}" "${n[flush_rows_synced_t_1]}")
# 32 batches per statement: the one-statement session subtracted, per batch.
per_batch=$(awk -v n="$STATEMENTS" -v a="${n[batches_$STATEMENTS]}" -v b="${n[batches_1]}" 'BEGIN { printf "%.0f", (a - b) / ((n - 1) * 32) }')
echo "one INSERT ... SELECT: plain $bulk_plain, synced $bulk_synced per row ($((bulk_synced - bulk_plain)) more, $(ratio "$bulk_synced" "$bulk_plain")x); flush $flush_bulk per op"
echo "single-row transactions: plain $rows_plain, synced $rows_synced per transaction ($((rows_synced - rows_plain)) more, $(ratio "$rows_synced" "$rows_plain")x); flush $flush_rows per op"
echo "client write batches (32 single-op batches per statement, as the gateway groups them): $per_batch per batch"
{
  echo "### Instructions per row (callgrind, single-user backends, start-up subtracted)"
  echo
  echo "| write | plain table | synced table | added by the trigger and staging | synced / plain | syncline.flush() per op |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| one INSERT ... SELECT of $ROWS rows (per row) | $bulk_plain | $bulk_synced | $((bulk_synced - bulk_plain)) | $(ratio "$bulk_synced" "$bulk_plain") | $flush_bulk |"
  echo "| $TXNS single-row INSERT transactions (per transaction) | $rows_plain | $rows_synced | $((rows_synced - rows_plain)) | $(ratio "$rows_synced" "$rows_plain") | $flush_rows |"
  echo
  echo "Client write batches, $STATEMENTS statements of 32 single-op batches each (the gateway's write groups: \`syncline.apply_writes\` per batch, its exactly-once record, the synced row's trigger and staging, the statement's commit): $per_batch instructions per batch."
  echo
  echo "User-space instructions only: no kernel work (page writes, WAL flushes; fsync is off here). Exact from run to run, so two builds compare to the instruction; the SHA-256 checksum runs without SHA-NI under valgrind and weighs more than natively. The flusher column is syncline.flush() publishing what the synced run staged (the background worker runs the same FlushStep)."
} >"$OUT/instructions.md"
