#!/usr/bin/env bash
# Syncline benchmarks (`make bench`). Figures only: nothing here passes or fails
# on timing. Each part starts its own throwaway cluster (database `syncline`, so
# the background worker flushes) and writes build/bench/<part>.md; the results
# table build/bench/results.md is assembled from the parts that ran.
#
#   bench/run.sh                 every part
#   bench/run.sh write oplog     only those parts (write, cost, oplog, checkpoint, paging, writes,
#                                instructions, maintenance, backlog)
# Knobs: BENCH_SECONDS (pgbench run length, 10), BENCH_REPEAT (alternating
#        plain / PL/pgSQL-trigger / synced runs per figure, 3), BENCH_CLIENTS (8),
#        OPLOG_ROWS (1000000), OPLOG_BATCH (10000), CHECKPOINT_BUCKETS (1000), CHECKPOINT_CALLS (200),
#        COST_WRITES (20000), SUBXACT_ROWS (50000), SUBXACT_MEM_ROWS (1000000), MAINT_ROWS (1000000),
#        BACKLOG_ROWS (1000000),
#        PAGING_OPS (1000000), PAGING_PAGE (10000); the writes part (gateway vs direct
#        write path, bench/write_bench.sh): WRITE_CLIENTS, WRITE_SECONDS, WRITE_REPEAT, WRITE_POOL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/bench
mkdir -p "$OUT"

. scripts/pgenv.sh
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-8}
OPLOG_ROWS=${OPLOG_ROWS:-1000000}
OPLOG_BATCH=${OPLOG_BATCH:-10000}
CHECKPOINT_BUCKETS=${CHECKPOINT_BUCKETS:-1000}
CHECKPOINT_CALLS=${CHECKPOINT_CALLS:-200}
PAGING_OPS=${PAGING_OPS:-1000000}
PAGING_PAGE=${PAGING_PAGE:-10000}
COST_WRITES=${COST_WRITES:-20000}
SUBXACT_ROWS=${SUBXACT_ROWS:-50000}
SUBXACT_MEM_ROWS=${SUBXACT_MEM_ROWS:-1000000}
MAINT_ROWS=${MAINT_ROWS:-1000000}
BACKLOG_ROWS=${BACKLOG_ROWS:-1000000}

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(write cost oplog checkpoint paging writes instructions maintenance backlog)

HARNESS=$OUT/syncline_bench
g++ -std=c++17 -O2 -Wall -Wextra -I"$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" \
  bench/syncline_bench.cpp -lpq -o "$HARNESS"

cluster_dir=""
stop_cluster() {
  if [ -n "$cluster_dir" ]; then
    bash "$ROOT/scripts/pgcluster.sh" stop "$cluster_dir" || true
    rm -rf "$cluster_dir"
    cluster_dir=""
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

# A fresh cluster with database `syncline` and the extension.
start_cluster() {
  stop_cluster
  local exports="" attempt
  for attempt in 1 2 3; do  # a cluster starting elsewhere may take our port: retry
    cluster_dir=$(mktemp -d /tmp/syncline-bench.XXXXXX)
    exports=$(SYNCLINE_WORKER_DB=syncline bash scripts/pgcluster.sh start "$cluster_dir") && break
    exports=""
    stop_cluster
    sleep 1
  done
  [ -n "$exports" ] || { echo "could not start a cluster" >&2; exit 1; }
  eval "$exports"
  export PGHOST PGPORT PGUSER PGDATA PGDATABASE=syncline  # pgcluster.sh created it
  sql "CREATE EXTENSION syncline"
}

sql() { psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

# Waits until the background worker has flushed every staged op.
drain() {
  local i
  for i in $(seq 1 1200); do
    [ "$(sql "SELECT count(*) FROM syncline_internal.pending")" = 0 ] && return 0
    sleep 0.1
  done
  echo "warning: staged ops still pending after 120 s" >&2
}

# pgbench_tps SCRIPT [PGOPTIONS]: prints the run's tps, with a '*' when some
# clients aborted on an error (the figure then undercounts; see pgbench.log).
pgbench_tps() {
  local script=$1 opts=${2:-} log
  log=$(PGOPTIONS="$opts" "$PGBIN/pgbench" -n -c "$BENCH_CLIENTS" -j 2 -T "$BENCH_SECONDS" -f "$script" syncline 2>&1) || true
  printf '%s\n' "$log" >>"$OUT/pgbench.log"
  local tps
  tps=$(printf '%s\n' "$log" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
  [ -n "$tps" ] || tps=0
  if printf '%s\n' "$log" | grep -q 'aborted'; then
    printf '%s\n' "$log" | grep 'error' | head -3 >&2
    echo "${tps}*"
  else
    echo "$tps"
  fi
}

# mean_tps TPS...: their mean, keeping a '*' when any run had aborted clients.
mean_tps() {
  local mark=""
  case "$*" in *\**) mark='*' ;; esac
  printf '%s\n' "$@" | tr -d '*' | awk -v m="$mark" '{ s += $1; n++ } END { printf "%.0f%s", s / n, m }'
}

part_write() {
  echo "== write overhead: pgbench -c $BENCH_CLIENTS -j 2 -T $BENCH_SECONDS x $BENCH_REPEAT, single-row INSERT / UPDATE"
  start_cluster
  sql "CREATE TABLE plain_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "CREATE TABLE synced_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner',
         ARRAY['SELECT * FROM synced_t WHERE owner = bucket.owner'])"
  # The floor the issue set: a PL/pgSQL trigger appending to_jsonb(NEW) to a
  # log table (nothing reads or empties the log: less work than syncing).
  sql "CREATE TABLE floor_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "CREATE TABLE floor_log (seq bigserial PRIMARY KEY, row_data jsonb NOT NULL)"
  sql "CREATE FUNCTION floor_log_row() RETURNS trigger LANGUAGE plpgsql AS
         \$\$ BEGIN INSERT INTO floor_log (row_data) VALUES (to_jsonb(NEW)); RETURN NULL; END \$\$"
  sql "CREATE TRIGGER floor_log AFTER INSERT OR UPDATE ON floor_t FOR EACH ROW EXECUTE FUNCTION floor_log_row()"
  for t in plain_t synced_t floor_t; do
    sql "INSERT INTO $t (owner, val, payload) SELECT 'u' || (g % 1000), g, 'payload ' || md5(g::text)
           FROM generate_series(1, 100000) g"
    cat >"$OUT/insert_$t.sql" <<EOF
\\set owner random(1, 1000)
INSERT INTO $t (owner, val, payload) VALUES ('u' || :owner, :owner, 'payload text of a typical row');
EOF
    cat >"$OUT/update_$t.sql" <<EOF
\\set id random(1, 100000)
UPDATE $t SET val = val + 1 WHERE id = :id;
EOF
  done
  drain
  sql "VACUUM ANALYZE" && sql "CHECKPOINT"
  : >"$OUT/pgbench.log"
  {
    echo "### Write overhead (pgbench -c $BENCH_CLIENTS -j 2; mean of $BENCH_REPEAT alternating ${BENCH_SECONDS} s runs per side)"
    echo
    echo "| statement | synchronous_commit | plain tps | synced tps | synced / plain | each pair, lowest-highest | PL/pgSQL log trigger / plain | synced / PL/pgSQL |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
  } >"$OUT/write.md"
  local mode op plain synced
  for mode in on off; do
    for op in insert update; do
      # Alternate plain and synced runs and average, so drift (other load on
      # the machine, table growth, checkpoints) hits both sides alike.
      # The spread of the pairs' own ratios shows how far one pair can be
      # trusted on this machine.
      local plains=() synceds=() floors=() pairs=() r
      for r in $(seq 1 "$BENCH_REPEAT"); do
        plains+=("$(pgbench_tps "$OUT/${op}_plain_t.sql" "-c synchronous_commit=$mode")")
        drain
        floors+=("$(pgbench_tps "$OUT/${op}_floor_t.sql" "-c synchronous_commit=$mode")")
        synceds+=("$(pgbench_tps "$OUT/${op}_synced_t.sql" "-c synchronous_commit=$mode")")
        drain
        pairs+=("$(awk -v a="${synceds[-1]%\*}" -v b="${plains[-1]%\*}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print 0 }')")
      done
      local spread
      spread=$(printf '%s\n' "${pairs[@]}" | sort -n | sed -n '1p;$p' | paste -sd- -)
      plain=$(mean_tps "${plains[@]}")
      synced=$(mean_tps "${synceds[@]}")
      local floor floor_ratio over_floor
      floor=$(mean_tps "${floors[@]}")
      ratio=$(awk -v a="${synced%\*}" -v b="${plain%\*}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
      floor_ratio=$(awk -v a="${floor%\*}" -v b="${plain%\*}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
      over_floor=$(awk -v a="${synced%\*}" -v b="${floor%\*}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
      plain=$(printf '%.0f%s' "${plain%\*}" "$(case $plain in *\*) echo '*' ;; esac)")
      synced=$(printf '%.0f%s' "${synced%\*}" "$(case $synced in *\*) echo '*' ;; esac)")
      printf '%-7s sync_commit=%-3s plain %9s tps  synced %9s tps  ratio %s (pairs %s)  PL/pgSQL floor %s of plain, synced %s of it\n' "$op" "$mode" "$plain" "$synced" "$ratio" "$spread" "$floor_ratio" "$over_floor"
      printf '| single-row %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(echo "$op" | tr a-z A-Z)" "$mode" "$plain" "$synced" "$ratio" "$spread" "$floor_ratio" "$over_floor" >>"$OUT/write.md"
    done
  done
  echo >>"$OUT/write.md"
  echo "Targets: synced / plain >= 0.85 with synchronous_commit on, >= 0.80 off. Synced table: one parameterized bucket (by owner); the worker flushes during the run. The PL/pgSQL log trigger (to_jsonb(NEW) appended to a table nobody empties) runs in the same alternation, between each plain and synced run: the issue's floor, measured on the same machine at the same time." >>"$OUT/write.md"
  if grep -q '[0-9]\*' "$OUT/write.md"; then
    echo '(*) some pgbench clients aborted on an error (see build/bench/pgbench.log): the figure undercounts.' >>"$OUT/write.md"
  fi
}

part_oplog() {
  echo "== bulk load: INSERT ... SELECT of $OPLOG_ROWS rows, plain and synced, until all ops are visible"
  start_cluster
  sql "CREATE TABLE plain_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "CREATE TABLE synced_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner',
         ARRAY['SELECT * FROM synced_t WHERE owner = bucket.owner'])"
  sql "CHECKPOINT"
  local plain worker flush stream_plain stream
  plain=$("$HARNESS" oplog --table plain_t --rows "$OPLOG_ROWS" --plain)
  echo "plain table:       $plain"
  sql "CHECKPOINT"
  worker=$("$HARNESS" oplog --table synced_t --rows "$OPLOG_ROWS" --worker)
  echo "background worker: $worker"
  # The same rows as a stream of transactions of OPLOG_BATCH rows: the worker
  # publishes while the next ones are written.
  sql "TRUNCATE plain_t" && sql "TRUNCATE synced_t" && sql "CHECKPOINT"
  drain
  stream_plain=$("$HARNESS" oplog --table plain_t --rows "$OPLOG_ROWS" --batch "$OPLOG_BATCH" --plain)
  echo "plain, stream:     $stream_plain"
  sql "CHECKPOINT"
  # The flusher's CPU time over the stream (utime + stime from /proc): steadier
  # on a shared machine than the wall-clock rates.
  local flusher_pid cpu0 cpu1 flusher_us
  flusher_pid=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncline flusher' AND datname = 'syncline'")
  cpu0=$(awk '{print $14 + $15}' "/proc/$flusher_pid/stat")
  stream=$("$HARNESS" oplog --table synced_t --rows "$OPLOG_ROWS" --batch "$OPLOG_BATCH" --worker)
  cpu1=$(awk '{print $14 + $15}' "/proc/$flusher_pid/stat")
  flusher_us=$(awk -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v n="$OPLOG_ROWS" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  echo "synced, stream:    $stream flusher_cpu_us_per_op=$flusher_us"
  # Same again in a database without a worker, made visible by syncline.flush().
  psql -d postgres -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE noworker"
  PGDATABASE=noworker sql "CREATE EXTENSION syncline"
  PGDATABASE=noworker sql "CREATE TABLE synced_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  PGDATABASE=noworker sql "SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner',
         ARRAY['SELECT * FROM synced_t WHERE owner = bucket.owner'])"
  flush=$(PGDATABASE=noworker "$HARNESS" oplog --table synced_t --rows "$OPLOG_ROWS")
  echo "syncline.flush():  $flush"
  field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  {
    echo "### Bulk load ($OPLOG_ROWS rows, one op per row)"
    echo
    echo "| | INSERT s | until all visible s | ops/s (end to end) |"
    echo "|---|---:|---:|---:|"
    echo "| plain table, one INSERT ... SELECT | $(field "$plain" insert_s) | - | - |"
    echo "| synced, one INSERT ... SELECT, background worker | $(field "$worker" insert_s) | $(field "$worker" visible_s) | $(field "$worker" ops_per_s) |"
    echo "| synced, one INSERT ... SELECT, syncline.flush() | $(field "$flush" insert_s) | $(field "$flush" visible_s) | $(field "$flush" ops_per_s) |"
    echo "| plain table, transactions of $OPLOG_BATCH rows | $(field "$stream_plain" insert_s) | - | - |"
    echo "| synced, transactions of $OPLOG_BATCH rows, background worker | $(field "$stream" insert_s) | $(field "$stream" visible_s) | $(field "$stream" ops_per_s) |"
    echo
    echo "One INSERT ... SELECT: synced / plain time $(ratio "$(field "$worker" insert_s)" "$(field "$plain" insert_s)") (target <= 1.5); its ops become visible at $(ratio "$(field "$worker" insert_s)" "$(field "$worker" visible_s)")x the rate its rows were written (nothing is visible before it commits: the flusher starts then)."
    echo "A stream of transactions: synced / plain time $(ratio "$(field "$stream" insert_s)" "$(field "$stream_plain" insert_s)"); ops visible at $(ratio "$(field "$stream" insert_s)" "$(field "$stream" visible_s)")x the rate rows were written (target >= 0.8)."
    echo "The flusher's CPU time over that stream: $flusher_us µs per op."
  } >"$OUT/oplog.md"
}

part_checkpoint() {
  echo "== checkpoint latency: one user with $CHECKPOINT_BUCKETS buckets"
  start_cluster
  sql "CREATE TABLE memberships (user_id text NOT NULL, list_id int NOT NULL, PRIMARY KEY (user_id, list_id))"
  sql "CREATE TABLE todos (id bigserial PRIMARY KEY, list_id int NOT NULL, title text NOT NULL, done bool NOT NULL DEFAULT false)"
  sql "SELECT syncline.create_bucket('by_list',
         'SELECT list_id FROM memberships WHERE user_id = syncline.user_id()',
         ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id'])"
  sql "INSERT INTO memberships SELECT 'u1', g FROM generate_series(1, $CHECKPOINT_BUCKETS) g"
  sql "INSERT INTO memberships SELECT 'u2', g FROM generate_series(1, 10) g"
  sql "INSERT INTO todos (list_id, title) SELECT 1 + g % $CHECKPOINT_BUCKETS, 'todo ' || g
         FROM generate_series(1, $((CHECKPOINT_BUCKETS * 5))) g"
  drain
  local big small
  big=$("$HARNESS" checkpoint --claims '{"sub":"u1"}' --calls "$CHECKPOINT_CALLS")
  small=$("$HARNESS" checkpoint --claims '{"sub":"u2"}' --calls "$CHECKPOINT_CALLS")
  echo "1000 buckets: $big"
  echo "10 buckets:   $small"
  field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
  {
    echo "### syncline.checkpoint(claims) latency ($CHECKPOINT_CALLS calls, prepared, client-side timing)"
    echo
    echo "| buckets for the user | median ms | p99 ms | mean ms | document bytes |"
    echo "|---:|---:|---:|---:|---:|"
    echo "| $(field "$big" buckets) | $(field "$big" median_ms) | $(field "$big" p99_ms) | $(field "$big" mean_ms) | $(field "$big" doc_bytes) |"
    echo "| $(field "$small" buckets) | $(field "$small" median_ms) | $(field "$small" p99_ms) | $(field "$small" mean_ms) | $(field "$small" doc_bytes) |"
    echo
    echo "Each bucket holds ~5 ops. Target: < 10 ms for 1,000 buckets."
  } >"$OUT/checkpoint.md"
}

part_paging() {
  echo "== bucket_data paging: one bucket with $PAGING_OPS ops, pages of $PAGING_PAGE"
  start_cluster
  sql "CREATE TABLE events (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "SELECT syncline.create_bucket('all_events', NULL, ARRAY['SELECT * FROM events'])"
  sql "INSERT INTO events (owner, val, payload) SELECT 'u' || (g % 1000), g, 'payload ' || md5(g::text)
         FROM generate_series(1, $PAGING_OPS) g"
  drain
  sql "VACUUM ANALYZE"
  local cold warm
  cold=$("$HARNESS" paging --bucket 'all_events[]' --page "$PAGING_PAGE")
  warm=$("$HARNESS" paging --bucket 'all_events[]' --page "$PAGING_PAGE")
  echo "first pass:  $cold"
  echo "second pass: $warm"
  field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
  {
    echo "### bucket_data paging (one bucket, $(field "$warm" ops) ops, pages of $PAGING_PAGE, one connection)"
    echo
    echo "| pass | pages | data MB | seconds | ops/s |"
    echo "|---|---:|---:|---:|---:|"
    echo "| first | $(field "$cold" pages) | $(field "$cold" data_mb) | $(field "$cold" seconds) | $(field "$cold" ops_per_s) |"
    echo "| second | $(field "$warm" pages) | $(field "$warm" data_mb) | $(field "$warm" seconds) | $(field "$warm" ops_per_s) |"
    echo
    echo "Target: >= 200,000 ops/s."
  } >"$OUT/paging.md"
}

# Where a synced single-row write spends its cost, against a plain one: WAL
# bytes per write by the relation they go to (pg_waldump --relation), and
# CPU per write of the backends and of the flusher (/proc, all processes of
# the cluster), for COST_WRITES single-row INSERTs by 8 pgbench clients.
# WAL bytes are exact and repeatable; CPU time is what was consumed, not wall
# time, so it holds up on a shared machine better than tps.
part_cost() {
  echo "== cost breakdown of one synced single-row INSERT ($COST_WRITES writes)"
  start_cluster
  sql "CREATE TABLE plain_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "CREATE TABLE synced_t (id bigserial PRIMARY KEY, owner text NOT NULL, val int NOT NULL, payload text)"
  sql "SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner',
         ARRAY['SELECT * FROM synced_t WHERE owner = bucket.owner'])"
  for t in plain_t synced_t; do
    printf '\\set owner random(1, 1000)\nINSERT INTO %s (owner, val, payload) VALUES (%s, :owner, %s);\n' \
      "$t" "'u' || :owner" "'payload text of a typical row'" >"$OUT/cost_$t.sql"
  done
  local postmaster flusher
  postmaster=$(head -n 1 "$PGDATA/postmaster.pid")
  flusher=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncline flusher'")
  # CPU ticks: reaped children (backends that exited) plus live processes.
  cluster_ticks() {
    local total=0 p f
    for p in $(pgrep -P "$postmaster") "$postmaster"; do
      read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
      if [ "$p" = "$postmaster" ]; then total=$((total + f[15] + f[16])); else total=$((total + f[13] + f[14])); fi
    done
    echo "$total"
  }
  process_ticks() { local f; read -r -a f <"/proc/$1/stat"; echo $((f[13] + f[14])); }
  relpath() { sql "SELECT concat_ws('/', CASE WHEN reltablespace = 0 THEN (SELECT dattablespace FROM pg_database WHERE datname = current_database()) ELSE reltablespace END, (SELECT oid FROM pg_database WHERE datname = current_database()), pg_relation_filenode(oid)) FROM pg_class WHERE oid = '$1'::regclass"; }
  wal_bytes() {  # FROM TO [RELATION]: WAL record bytes between two LSNs (of one relation)
    "$PGBIN/pg_waldump" -p "$PGDATA/pg_wal" -s "$1" -e "$2" ${3:+--relation="$3"} 2>/dev/null |
      sed -n 's/.*len (rec\/tot): *[0-9]*\/ *\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
  }
  local -A wal cpu flush
  local table lsn0 lsn1 ticks0 ticks1 ft0 ft1
  for table in plain_t synced_t; do
    sql "CHECKPOINT" >/dev/null
    lsn0=$(sql "SELECT pg_current_wal_insert_lsn()"); ticks0=$(cluster_ticks); ft0=$(process_ticks "$flusher")
    PGOPTIONS="-c synchronous_commit=on" "$PGBIN/pgbench" -n -c 8 -j 2 -t $((COST_WRITES / 8)) \
      -f "$OUT/cost_$table.sql" syncline >>"$OUT/pgbench.log" 2>&1
    drain
    sleep 0.5
    lsn1=$(sql "SELECT pg_current_wal_insert_lsn()"); ticks1=$(cluster_ticks); ft1=$(process_ticks "$flusher")
    wal[$table]=$(wal_bytes "$lsn0" "$lsn1")
    cpu[$table]=$(( (ticks1 - ticks0) * 10000000 / $(getconf CLK_TCK) / COST_WRITES ))
    flush[$table]=$(( (ft1 - ft0) * 10000000 / $(getconf CLK_TCK) / COST_WRITES ))
    if [ "$table" = synced_t ]; then
      local -A parts
      local rel
      for rel in synced_t synced_t_pkey syncline_internal.pending syncline_internal.ops \
                 syncline_internal.ops_pkey syncline_internal.bucket_state \
                 syncline_internal.bucket_state_pkey syncline_internal.flushes syncline_internal.flushes_pkey; do
        parts[$rel]=$(wal_bytes "$lsn0" "$lsn1" "$(relpath "$rel")")
      done
    fi
  done
  per() { awk -v a="$1" -v n="$COST_WRITES" 'BEGIN { printf "%.0f", a / n }'; }
  local other=$(( wal[synced_t] ))
  for rel in "${!parts[@]}"; do other=$((other - parts[$rel])); done
  {
    echo "### Cost of one single-row INSERT, plain vs synced ($COST_WRITES writes, pgbench -c 8, synchronous_commit on)"
    echo
    echo "| | plain | synced |"
    echo "|---|---:|---:|"
    echo "| WAL bytes per write | $(per "${wal[plain_t]}") | $(per "${wal[synced_t]}") |"
    echo "| CPU µs per write, all processes | $((cpu[plain_t] / 10)) | $((cpu[synced_t] / 10)) |"
    echo "| of which the flusher | - | $((flush[synced_t] / 10)) |"
    echo
    echo "Where the synced write's WAL goes (bytes per write):"
    echo
    echo "| relation | bytes |"
    echo "|---|---:|"
    echo "| the table and its primary key | $(per $((parts[synced_t] + parts[synced_t_pkey]))) |"
    echo "| staging (syncline_internal.pending: insert, then delete) | $(per "${parts[syncline_internal.pending]}") |"
    echo "| op log (syncline_internal.ops and its key) | $(per $((parts[syncline_internal.ops] + parts[syncline_internal.ops_pkey]))) |"
    echo "| bucket state (HOT updates) | $(per $((parts[syncline_internal.bucket_state] + parts[syncline_internal.bucket_state_pkey]))) |"
    echo "| per-flush change list | $(per $((parts[syncline_internal.flushes] + parts[syncline_internal.flushes_pkey]))) |"
    echo "| commit records, full-page images of other relations, the rest | $(per "$other") |"
  } >"$OUT/cost.md"
  cat "$OUT/cost.md"
}

# Gateway WriteBatch path vs direct INSERTs; starts its own cluster and gateway.
part_writes() {
  bash "$ROOT/bench/write_bench.sh"
}

# A PL/pgSQL loop with an exception block (a subtransaction) per row, plain and
# synced; and the maintenance worker's incremental compaction of a big bucket in
# which 0.1% of the rows changed, with the latency of a commit to another bucket
# meanwhile (the flusher and the maintenance worker are separate processes).
part_maintenance() {
  echo "== maintenance: $SUBXACT_ROWS rows in exception blocks; compaction of a $MAINT_ROWS-op bucket"
  start_cluster
  sql "CREATE TABLE plain_t (id bigint PRIMARY KEY, v text)"
  sql "CREATE TABLE synced_t (id bigint PRIMARY KEY, v text)"
  sql "SELECT syncline.create_bucket('all_synced', NULL, ARRAY['SELECT * FROM synced_t'])"
  loop_ms() {  # TABLE: one transaction, one exception block per row, commit included
    local t0 t1
    t0=$(date +%s%N)
    sql "DO \$\$ BEGIN FOR g IN 1..$SUBXACT_ROWS LOOP BEGIN
           INSERT INTO $1 VALUES (g, 'payload text of a typical row');
         EXCEPTION WHEN unique_violation THEN NULL; END; END LOOP; END \$\$" >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
  }
  local plain synced plain2 synced2
  plain=$(loop_ms plain_t); sql "TRUNCATE plain_t"
  synced=$(loop_ms synced_t); drain; sql "TRUNCATE synced_t"; drain
  plain2=$(loop_ms plain_t)
  synced2=$(loop_ms synced_t); drain
  echo "exception-block loop: plain $plain / $plain2 ms, synced $synced / $synced2 ms"
  # The backend's peak memory over SUBXACT_MEM_ROWS such rows (VmHWM), plain and synced.
  peak_kb() {  # the backend reads its own /proc/self/status after the loop
    psql -X -q -v ON_ERROR_STOP=1 -At <<SQL | tail -n 1
DO \$\$ BEGIN FOR g IN 1..$SUBXACT_MEM_ROWS LOOP BEGIN
  INSERT INTO $1 VALUES (g, 'payload text of a typical row');
EXCEPTION WHEN unique_violation THEN NULL; END; END LOOP; END \$\$;
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1];
SQL
  }
  sql "TRUNCATE plain_t" && sql "TRUNCATE synced_t" && drain
  local mem_plain mem_synced
  mem_plain=$(peak_kb plain_t)
  mem_synced=$(peak_kb synced_t)
  drain
  sql "SELECT syncline.drop_bucket('all_synced')" >/dev/null  # its ops stay out of the rounds below
  echo "peak backend memory over $SUBXACT_MEM_ROWS rows: plain $mem_plain kB, synced $mem_synced kB"

  sql "CREATE TABLE big_t (id bigint PRIMARY KEY, v text)"
  sql "CREATE TABLE live_t (id bigint PRIMARY KEY, v text)"
  sql "SELECT syncline.create_bucket('big', NULL, ARRAY['SELECT * FROM big_t'])"
  sql "SELECT syncline.create_bucket('live', NULL, ARRAY['SELECT * FROM live_t'])"
  sql "INSERT INTO big_t SELECT g, 'x' FROM generate_series(1, $MAINT_ROWS) g"
  drain
  sql "ALTER SYSTEM SET syncline.compact_interval = '1s'" && sql "SELECT pg_reload_conf()" >/dev/null
  local i
  for i in $(seq 1 600); do  # the first round looks at every op
    [ "$(sql "SELECT compacted_op_id = last_op_id FROM syncline_internal.bucket_state WHERE bucket = 'big[]'")" = t ] && break
    sleep 0.1
  done
  sql "ALTER SYSTEM SET syncline.compact_interval = '60s'" && sql "SELECT pg_reload_conf()" >/dev/null
  sql "UPDATE big_t SET v = 'y' WHERE id % 1000 = 0"
  drain
  local measured
  measured=$(python3 - <<'PY'
import subprocess, time
def q(s):
    return subprocess.run(['psql', '-X', '-qAt', '-c', s], capture_output=True, text=True).stdout.strip()
q("ALTER SYSTEM SET syncline.compact_interval = '1s'"); q("SELECT pg_reload_conf()")
# Commits to another bucket while the round runs: each waits until it is visible.
start = time.time(); worst = 0.0; n = 0; active_since = None; round_s = None
while time.time() - start < 20 and round_s is None:
    state = q("SELECT state FROM pg_stat_activity WHERE backend_type = 'syncline maintenance'")
    now = time.time()
    if state == 'active' and active_since is None: active_since = now
    if state != 'active' and active_since is not None: round_s = now - active_since
    n += 1
    t0 = time.time(); q(f"INSERT INTO live_t VALUES ({n}, 'x')")
    while q(f"SELECT count(*) FROM syncline.bucket_data('live[]', 0) WHERE object_id = '{n}'") != '1':
        time.sleep(0.002)
    worst = max(worst, time.time() - t0)
q("ALTER SYSTEM RESET syncline.compact_interval"); q("SELECT pg_reload_conf()")
compacted = q("SELECT compacted_op_id = last_op_id FROM syncline_internal.bucket_state WHERE bucket = 'big[]'")
print(f"round_ms={round_s * 1000 if round_s else -1:.0f} worst_commit_visible_ms={worst * 1000:.0f} commits={n} compacted={compacted}")
PY
)
  echo "incremental compaction: $measured"
  field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
  {
    echo "### Maintenance"
    echo
    echo "| | figure |"
    echo "|---|---:|"
    echo "| $SUBXACT_ROWS single-row INSERTs, each in a PL/pgSQL exception block, one transaction: plain / synced (two runs each) | $plain, $plain2 / $synced, $synced2 ms |"
    echo "| the backend's peak memory (VmHWM) over $SUBXACT_MEM_ROWS such rows: plain / synced | $((mem_plain / 1024)) / $((mem_synced / 1024)) MB |"
    echo "| the worker's incremental compaction round, a $MAINT_ROWS-op bucket with 0.1% of its rows changed (pg_stat_activity, ~30 ms resolution) | $(field "$measured" round_ms) ms |"
    echo "| meanwhile, the slowest commit to another bucket until visible (psql polling included) | $(field "$measured" worst_commit_visible_ms) ms over $(field "$measured" commits) commits |"
  } >"$OUT/maintenance.md"
}

# The maintenance worker compacting a backlog (every row of a BACKLOG_ROWS-row
# bucket updated once) while pgbench writers insert into another bucket: in
# one transaction (syncline.compact_window past the backlog) and in windows of
# the default size, alternated twice. Per run: the longest compaction
# transaction, staging's largest size (its dead rows wait for the oldest
# snapshot, and every flush reads them) and the writers' tps while it ran.
part_backlog() {
  echo "== backlog: compacting $BACKLOG_ROWS updated rows beside pgbench writers"
  start_cluster
  sql "ALTER SYSTEM SET syncline.compact_interval = 0" && sql "SELECT pg_reload_conf()" >/dev/null
  sql "CREATE TABLE big_t (id bigint PRIMARY KEY, v text)"
  sql "CREATE TABLE live_t (id bigserial PRIMARY KEY, owner int, v text)"
  sql "SELECT syncline.create_bucket('big', NULL, ARRAY['SELECT * FROM big_t'])" >/dev/null
  sql "SELECT syncline.create_bucket('live', 'SELECT 1 AS owner', ARRAY['SELECT * FROM live_t WHERE owner = bucket.owner'])" >/dev/null
  sql "INSERT INTO big_t SELECT g, 'x' FROM generate_series(1, $BACKLOG_ROWS) g"
  drain
  sql "SELECT syncline.compact()" >/dev/null
  echo "INSERT INTO live_t (owner, v) VALUES (1, 'x');" >"$OUT/backlog_insert.sql"
  local rows=() label window run
  for run in 1 2; do
    for label in one windows; do
      window=2147483647
      [ "$label" = windows ] && window=250000
      sql "UPDATE big_t SET v = '$label$run'"
      drain
      sql "VACUUM syncline_internal.ops" && sql "VACUUM syncline_internal.pending"
      sql "ALTER SYSTEM SET syncline.compact_window = $window" && sql "SELECT pg_reload_conf()" >/dev/null
      "$PGBIN/pgbench" -n -c 4 -j 2 -T 40 -P 1 -f "$OUT/backlog_insert.sql" syncline \
        >"$OUT/backlog_pgbench.log" 2>&1 &
      local pb=$! t started="" ended="" longest=0 blocks=0 b x left
      for t in $(seq 1 80); do  # every 0.5 s; compaction on from 5 s
        sleep 0.5
        if [ "$t" = 10 ]; then
          sql "ALTER SYSTEM SET syncline.compact_interval = '1s'" && sql "SELECT pg_reload_conf()" >/dev/null
        fi
        b=$(sql "SELECT pg_relation_size('syncline_internal.pending') / 8192")
        x=$(sql "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::numeric(6,1) FROM pg_stat_activity WHERE backend_type = 'syncline maintenance' AND state = 'active'")
        left=$(sql "SELECT last_op_id > compacted_op_id FROM syncline_internal.bucket_state WHERE bucket = 'big[]'")
        [ "$b" -gt "$blocks" ] && blocks=$b
        awk -v a="$x" -v b="$longest" 'BEGIN { exit !(a > b) }' && longest=$x
        [ "$t" -ge 10 ] && [ -z "$started" ] && started=$((t / 2))
        [ -n "$started" ] && [ -z "$ended" ] && [ "$left" = f ] && ended=$(((t + 1) / 2))
      done
      wait $pb
      sql "ALTER SYSTEM SET syncline.compact_interval = 0" && sql "SELECT pg_reload_conf()" >/dev/null
      # pgbench -P 1: "progress: N.0 s, TPS tps, ..." for each second N.
      local during before
      during=$(awk -v s="$started" -v e="${ended:-40}" '/^progress/ { n = $2 + 0; if (n > s && n <= e) { t += $4; c++ } } END { printf "%.0f", c ? t / c : 0 }' "$OUT/backlog_pgbench.log")
      before=$(awk -v s="$started" '/^progress/ { n = $2 + 0; if (n <= s) { t += $4; c++ } } END { printf "%.0f", c ? t / c : 0 }' "$OUT/backlog_pgbench.log")
      echo "$label (window $window): compaction ${started}-${ended:-?} s, longest transaction ${longest} s, staging up to $blocks blocks, writers $before tps before / $during tps during"
      rows+=("| $label, run $run | $((${ended:-40} - started)) s | $longest s | $blocks | $before / $during |")
    done
  done
  {
    echo "### Compacting a backlog beside writers"
    echo
    echo "Every row of a $BACKLOG_ROWS-row bucket updated once, compacted by the maintenance worker while pgbench (-c 4) inserts into another bucket; \`one\`: one transaction (syncline.compact_window past the backlog), \`windows\`: the default 250,000 ops per transaction."
    echo
    echo "| run | compaction took (0.5 s samples) | longest compaction transaction | staging's largest size (blocks) | writers' tps before / during |"
    echo "|---|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
  } >"$OUT/backlog.md"
  cat "$OUT/backlog.md"
}

# Instructions per synced row under callgrind (exact between runs; its own
# single-user data directory).
part_instructions() {
  bash "$ROOT/bench/instructions.sh"
}

for part in "${parts[@]}"; do
  case "$part" in
    write|cost|oplog|checkpoint|paging|writes|instructions|maintenance|backlog) "part_$part"; stop_cluster ;;
    *) echo "unknown part $part (write, cost, oplog, checkpoint, paging, writes, instructions, maintenance, backlog)" >&2; exit 2 ;;
  esac
done

{
  echo "# Syncline benchmark results"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(pg_config --version 2>/dev/null | awk '{print $2}'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  for part in write cost oplog checkpoint paging writes instructions maintenance backlog; do
    [ -f "$OUT/$part.md" ] && { cat "$OUT/$part.md"; echo; }
  done
} >"$OUT/results.md"
echo
cat "$OUT/results.md"
