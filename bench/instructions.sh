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
#                            syncline.flush() publishing what the synced runs staged
# Writes build/bench/instructions.md. Needs valgrind (installed with apt when
# missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/bench
mkdir -p "$OUT"
ROWS=${INSTR_ROWS:-100000}
TXNS=${INSTR_TXNS:-10000}

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
echo "one INSERT ... SELECT: plain $bulk_plain, synced $bulk_synced per row ($((bulk_synced - bulk_plain)) more, $(ratio "$bulk_synced" "$bulk_plain")x); flush $flush_bulk per op"
echo "single-row transactions: plain $rows_plain, synced $rows_synced per transaction ($((rows_synced - rows_plain)) more, $(ratio "$rows_synced" "$rows_plain")x); flush $flush_rows per op"
{
  echo "### Instructions per row (callgrind, single-user backends, start-up subtracted)"
  echo
  echo "| write | plain table | synced table | added by the trigger and staging | synced / plain | syncline.flush() per op |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| one INSERT ... SELECT of $ROWS rows (per row) | $bulk_plain | $bulk_synced | $((bulk_synced - bulk_plain)) | $(ratio "$bulk_synced" "$bulk_plain") | $flush_bulk |"
  echo "| $TXNS single-row INSERT transactions (per transaction) | $rows_plain | $rows_synced | $((rows_synced - rows_plain)) | $(ratio "$rows_synced" "$rows_plain") | $flush_rows |"
  echo
  echo "User-space instructions only: no kernel work (page writes, WAL flushes; fsync is off here). Exact from run to run, so two builds compare to the instruction; the SHA-256 checksum runs without SHA-NI under valgrind and weighs more than natively. The flusher column is syncline.flush() publishing what the synced run staged (the background worker runs the same FlushStep)."
} >"$OUT/instructions.md"
