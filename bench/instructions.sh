#!/usr/bin/env bash
# What a synced row costs the writing backend, in instructions: the same
# INSERT ... SELECT into a plain and into a synced table, each in a fresh
# single-user backend under callgrind, which counts every user-space
# instruction. Unlike wall-clock or CPU time, the count is the same from one
# run to the next on a shared, noisy machine, so two builds can be compared
# exactly. It leaves out the kernel (page writes, WAL flushes) and runs the
# CPU as valgrind presents it (SHA-256 without SHA-NI, so the checksum's share
# is larger than natively); compare builds with it, not with pgbench.
#
#   bench/instructions.sh            100,000 rows (INSTR_ROWS)
# Writes build/bench/instructions.md. Needs valgrind (installed with apt when
# missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/bench
mkdir -p "$OUT"
ROWS=${INSTR_ROWS:-100000}

. scripts/pgenv.sh
if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
  else
    echo "valgrind is missing (apt-get install valgrind)" >&2
    exit 1
  fi
fi

# initdb refuses root: the data directories belong to the postgres user.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

work=$(mktemp -d /tmp/syncline-instr.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
as_owner "$PGBIN/initdb" -D "$work/template" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
  >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
cat >>"$work/template/postgresql.conf" <<'CONF'
shared_preload_libraries = 'syncline'
syncline.database = 'postgres'
CONF
# One statement per line: single-user mode ends a statement at each newline.
as_owner "$PGBIN/postgres" --single -D "$work/template" postgres >"$work/setup.log" 2>&1 <<'SQL'
CREATE EXTENSION syncline
CREATE TABLE plain_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text, at timestamptz NOT NULL DEFAULT '2026-12-02 10:00:00.123+00')
CREATE TABLE synced_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text, at timestamptz NOT NULL DEFAULT '2026-12-02 10:00:00.123+00')
SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner', ARRAY['SELECT * FROM synced_t WHERE owner = bucket.owner'])
SQL
if grep -qE 'ERROR|FATAL' "$work/setup.log"; then cat "$work/setup.log" >&2; exit 1; fi

# instructions TABLE ROWS: the whole session's count (start-up included).
instructions() {
  rm -rf "$work/run" && cp -a "$work/template" "$work/run"
  echo "INSERT INTO $1 (owner, val, payload) SELECT 'u' || (g % 1000), g, 'payload text of a typical row' FROM generate_series(1, $2) g" |
    as_owner valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
      "$PGBIN/postgres" --single -D "$work/run" postgres >"$work/run.log" 2>&1
  grep -q 'ERROR' "$work/run.log" && { cat "$work/run.log" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/run.log"
}

echo "== instructions per row: INSERT ... SELECT of $ROWS rows, plain and synced, single-user backend under callgrind"
plain0=$(instructions plain_t 1)
synced0=$(instructions synced_t 1)
plain=$(instructions plain_t "$ROWS")
synced=$(instructions synced_t "$ROWS")
read -r per_plain per_synced overhead ratio < <(awk -v p0="$plain0" -v s0="$synced0" -v p="$plain" -v s="$synced" -v n="$ROWS" \
  'BEGIN { a = (p - p0) / (n - 1); b = (s - s0) / (n - 1); printf "%.0f %.0f %.0f %.2f\n", a, b, b - a, b / a }')
echo "plain $per_plain, synced $per_synced instructions per row: $overhead more, $ratio x"
{
  echo "### Instructions per row written ($ROWS-row INSERT ... SELECT, callgrind, start-up subtracted)"
  echo
  echo "| plain table | synced table | added by Syncline | synced / plain |"
  echo "|---:|---:|---:|---:|"
  echo "| $per_plain | $per_synced | $overhead | $ratio |"
  echo
  echo "User-space instructions of the writing backend only: no kernel work, no flusher. Exact from run to run, so two builds compare to the instruction; the SHA-256 checksum runs without SHA-NI under valgrind and weighs more than natively."
} >"$OUT/instructions.md"
