#!/usr/bin/env bash
# Lifecycle tests against a real cluster: what pg_regress cannot show because
# it needs pg_dump/psql round trips or the background worker.
#   restore_round_trip      pg_dump | psql into a new database: rules and write
#                           bookkeeping survive, the op log is rebuilt, a client
#                           that synced against the original (even past the dump)
#                           converges with no checksum failure, and writes after
#                           the restore reach the op log.
#   worker_survives_errors  a flush that fails is reported and retried by the
#                           same worker process; the op log resumes by itself.
#   maintenance_survives_errors
#                           a compaction that fails is reported and retried by
#                           the same maintenance process, and flushes go on.
#   worker_compacts         the worker compacts buckets in the background
#                           (syncline.compact_interval), checksums unchanged;
#                           its next rounds look only at rows changed since.
#   worker_compacts_in_windows
#                           a backlog is compacted syncline.compact_window ops at
#                           a time, each window its own transaction: made to fail
#                           past a point, the windows before it stay compacted;
#                           once it may, the bucket ends as a full compaction
#                           leaves it, checksum unchanged.
#   flushes_go_on_during_maintenance
#                           while a maintenance round is stuck in a compaction
#                           (held here on the bucket's compaction lock), the
#                           flusher still publishes other commits: maintenance
#                           runs in a process of its own.
#   compaction_beside_writes
#                           pgbench writers churn a bucket while the flusher and
#                           the maintenance worker (a round a second) run side
#                           by side; a client syncing all along, and one from
#                           scratch at the end, see every checksum match and
#                           end equal to the table.
#   worker_sizes_staging    the worker's vacuum of staging keeps a small table's
#                           emptied pages for the next commits and truncates a
#                           table grown past 256 blocks by a backlog.
# Called by scripts/run-tests.sh with PGHOST/PGPORT/PGUSER of a running
# throwaway cluster whose worker serves database "syncline". Prints one line
# per test and "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgenv.sh
OUT=build/lifecycle
mkdir -p "$OUT"
passed=0
failed=0

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
value() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
result() {  # NAME OK(0/1) [DETAIL]
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1)); echo "ok    $1"
  else
    failed=$((failed + 1)); echo "FAIL  $1${3:+: $3}"
  fi
}
expect_eq() {  # WHAT GOT WANT
  if [ "$2" != "$3" ]; then echo "  $1: got '$2', want '$3'"; return 1; fi
}
# poll WANT QUERY [TRIES]: runs QUERY in database syncline every 0.1 s until it
# prints WANT (at most TRIES times, 100 by default); prints the last value.
poll() {
  local want=$1 query=$2 tries=${3:-100} got=""
  for _ in $(seq 1 "$tries"); do
    got=$(value -d syncline -c "$query")
    [ "$got" = "$want" ] && break
    sleep 0.1
  done
  echo "$got"
}

# The query for BUCKET's ops by kind ("CLEAR:1,PUT:40,...") and for its
# checksum and last op id ("<checksum>/<last op id>").
ops_by_kind() { echo "SELECT string_agg(op || ':' || n, ',' ORDER BY op) FROM (SELECT op, count(*) n FROM syncline.bucket_data('$1[]', 0, NULL, 100000) GROUP BY op) x"; }
checksum_last() { echo "SELECT checksum || '/' || last_op_id FROM syncline.changes(0) WHERE bucket = '$1[]'"; }

restore_round_trip() {
  local src=lc_src dst=lc_dst
  dropdb --if-exists "$src" 2>/dev/null; dropdb --if-exists "$dst" 2>/dev/null
  createdb "$src" && createdb "$dst" || return 1
  psql_q -d "$src" >"$OUT/restore-setup.log" 2>&1 <<'SQL' || { cat "$OUT/restore-setup.log"; return 1; }
CREATE EXTENSION syncline;
CREATE TABLE lists (id text PRIMARY KEY, owner text NOT NULL, name text);
CREATE TABLE members (user_id text, list_id text, PRIMARY KEY (user_id, list_id));
CREATE TABLE todos (id int PRIMARY KEY, list_id text NOT NULL, title text, done bool DEFAULT false);
GRANT SELECT, INSERT, UPDATE, DELETE ON todos TO syncline_writer;
INSERT INTO lists VALUES ('L1', 'alice', 'groceries'), ('L2', 'bob', 'chores'), ('L3', 'alice', 'work');
INSERT INTO members VALUES ('alice', 'L1'), ('alice', 'L2'), ('bob', 'L2');
INSERT INTO todos SELECT g, (ARRAY['L1', 'L2', 'L3'])[1 + g % 3], 'todo ' || g FROM generate_series(1, 300) g;
SELECT syncline.create_bucket('shared_lists',
  'SELECT list_id FROM members WHERE user_id = syncline.user_id()',
  ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id AND NOT done']);
SELECT syncline.create_bucket('own_lists', 'SELECT syncline.user_id() AS owner',
  ARRAY['SELECT id, name FROM lists WHERE owner = bucket.owner']);
SELECT syncline.flush();
UPDATE todos SET done = true WHERE id % 10 = 0;
DELETE FROM todos WHERE id % 7 = 0;
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1',
  '{"seq": 1, "ops": [{"op": "PUT", "type": "todos", "id": 1000, "data": {"list_id": "L1", "title": "from the phone"}}]}');
SELECT syncline.flush();
SQL
  # A batch applied but not yet published when the dump is taken.
  psql_q -d "$src" >/dev/null -c "SELECT syncline.apply_writes('{\"sub\": \"alice\"}', 'phone-1', '{\"seq\": 2, \"ops\": [{\"op\": \"PUT\", \"type\": \"todos\", \"id\": 1001, \"data\": {\"list_id\": \"L1\", \"title\": \"unpublished at the dump\"}}]}')" || return 1
  psql_q -d "$src" -f tests/lifecycle/client.sql >/dev/null || return 1
  local mismatches
  mismatches=$(value -d "$src" -c "SELECT count(*) FROM client.sync('{\"sub\": \"alice\"}')") || return 1
  expect_eq "mismatches before the dump" "$mismatches" 0 || return 1

  pg_dump -N client "$src" >"$OUT/dump.sql" || return 1
  local dumped_last
  dumped_last=$(value -d "$src" -c "SELECT last_op_id FROM syncline_internal.state") || return 1

  # The original goes on after the dump, and alice's client follows it: it
  # now holds ops the dump does not have.
  psql_q -d "$src" >/dev/null <<'SQL' || return 1
INSERT INTO todos VALUES (2000, 'L1', 'after the dump');
DELETE FROM todos WHERE id = 1;
UPDATE todos SET title = 'renamed after the dump' WHERE id = 2;
INSERT INTO members VALUES ('alice', 'L3');
SELECT syncline.flush();
SQL
  mismatches=$(value -d "$src" -c "SELECT count(*) FROM client.sync('{\"sub\": \"alice\"}')") || return 1
  expect_eq "mismatches after the dump" "$mismatches" 0 || return 1
  psql_q -d "$src" -c "\\copy client.objects TO '$OUT/client-objects.tsv'" \
    -c "\\copy client.buckets TO '$OUT/client-buckets.tsv'" || return 1

  psql_q -d "$dst" -f "$OUT/dump.sql" >"$OUT/restore.log" 2>&1 || { tail -n 20 "$OUT/restore.log"; return 1; }
  # No worker serves these databases: flush() makes the rebuild's copies.
  psql_q -d "$dst" -c "SELECT syncline.flush()" >/dev/null || return 1
  local rules restored_last
  rules=$(value -d "$dst" -c "SELECT string_agg(name, ',' ORDER BY name) FROM syncline_internal.bucket_definitions") || return 1
  expect_eq "restored rules" "$rules" "own_lists,shared_lists" || return 1
  restored_last=$(value -d "$dst" -c "SELECT last_op_id FROM syncline_internal.state") || return 1
  if [ "$restored_last" -le $((dumped_last + (1 << 40))) ]; then
    echo "  op ids after the restore ($restored_last) must start past $dumped_last + 2^40"; return 1
  fi

  # Alice's client, which synced against the original past the dump, syncs
  # against the restored database: every bucket's checksum matches and it
  # holds exactly the restored rows.
  psql_q -d "$dst" -f tests/lifecycle/client.sql >/dev/null || return 1
  psql_q -d "$dst" -c "\\copy client.objects FROM '$OUT/client-objects.tsv'" \
    -c "\\copy client.buckets FROM '$OUT/client-buckets.tsv'" || return 1
  mismatches=$(value -d "$dst" -c "SELECT string_agg(b, ',') FROM client.sync('{\"sub\": \"alice\"}') b") || return 1
  expect_eq "buckets failing their checksum after the restore" "$mismatches" "" || return 1
  local diff
  diff=$(value -d "$dst" <<'SQL'
WITH want AS (
  SELECT 'shared_lists["' || list_id || '"]' AS bucket, id::text AS object_id FROM todos
   WHERE NOT done AND list_id IN (SELECT list_id FROM members WHERE user_id = 'alice')
  UNION ALL
  SELECT 'own_lists["alice"]', id FROM lists WHERE owner = 'alice'),
have AS (SELECT bucket, object_id FROM client.objects)
SELECT count(*) FROM ((SELECT * FROM want EXCEPT SELECT * FROM have)
                      UNION ALL (SELECT * FROM have EXCEPT SELECT * FROM want)) d
SQL
) || return 1
  expect_eq "rows differing between alice's replica and the restored tables" "$diff" 0 || return 1

  # Writes after the restore reach the op log; the write bookkeeping came
  # along, so a batch applied before the dump is not applied twice.
  psql_q -d "$dst" >/dev/null <<'SQL' || return 1
INSERT INTO todos VALUES (3000, 'L1', 'after the restore');
SELECT syncline.flush();
SQL
  mismatches=$(value -d "$dst" -c "SELECT count(*) FROM client.sync('{\"sub\": \"alice\"}')") || return 1
  expect_eq "mismatches after a write" "$mismatches" 0 || return 1
  local found duplicate
  found=$(value -d "$dst" -c "SELECT count(*) FROM client.objects WHERE object_id = '3000'") || return 1
  expect_eq "the write after the restore in alice's replica" "$found" 1 || return 1
  duplicate=$(value -d "$dst" -c "SELECT syncline.apply_writes('{\"sub\": \"alice\"}', 'phone-1', '{\"seq\": 1, \"ops\": [{\"op\": \"PUT\", \"type\": \"todos\", \"id\": 1000, \"data\": {\"list_id\": \"L1\", \"title\": \"again\"}}]}') ->> 'duplicate'") || return 1
  expect_eq "retried batch after the restore" "$duplicate" true || return 1
  # The batch unpublished at the dump: its record named a transaction of the
  # original database (of another cluster, maybe), so the restore gave it its
  # own; flushed since, it resolves to the op log's head, and its row is in the
  # rebuilt op log.
  local src_txid dst_txid resolved
  src_txid=$(value -d "$src" -c "SELECT txid FROM syncline_internal.client_batches WHERE client_id = 'phone-1' AND seq = 2") || return 1
  dst_txid=$(value -d "$dst" -c "SELECT txid FROM syncline_internal.client_batches WHERE client_id = 'phone-1' AND seq = 2") || return 1
  if [ -z "$dst_txid" ] || [ "$dst_txid" = "$src_txid" ]; then
    echo "  the restored batch kept the original's transaction id $src_txid"; return 1
  fi
  resolved=$(value -d "$dst" -c "SELECT syncline_internal.published_write_checkpoint(write_checkpoint, txid) = (SELECT last_op_id FROM syncline_internal.state) FROM syncline_internal.client_batches WHERE client_id = 'phone-1' AND seq = 2") || return 1
  expect_eq "the restored batch's write checkpoint is the head" "$resolved" t || return 1
  found=$(value -d "$dst" -c "SELECT count(*) FROM client.objects WHERE object_id = '1001'") || return 1
  expect_eq "the restored batch's row in alice's replica" "$found" 1 || return 1
  dropdb "$src"; dropdb "$dst"
  return 0
}

# A new table NAME (id int PRIMARY KEY, v text), synced whole by bucket NAME.
fresh_synced_table() {
  psql_q -d syncline >/dev/null <<SQL
CREATE EXTENSION IF NOT EXISTS syncline;
DROP TABLE IF EXISTS $1;
CREATE TABLE $1 (id int PRIMARY KEY, v text);
SELECT syncline.create_bucket('$1', NULL, ARRAY['SELECT * FROM $1']);
SQL
}

worker_survives_errors() {
  local db=syncline pid_before pid_after visible
  fresh_synced_table lc_worker || return 1
  pid_before=$(value -d "$db" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncline flusher'")
  [ -n "$pid_before" ] || { echo "  no syncline flusher is running"; return 1; }
  # Every flush now fails (a constraint the op log cannot meet) ...
  psql_q -d "$db" >/dev/null <<'SQL' || return 1
ALTER TABLE syncline_internal.bucket_state ADD CONSTRAINT lc_no_state CHECK (bucket <> 'lc_worker[]') NOT VALID;
INSERT INTO lc_worker VALUES (1, 'written while flushes fail');
SQL
  sleep 2
  visible=$(value -d "$db" -c "SELECT count(*) FROM syncline.bucket_data('lc_worker[]', 0)")
  expect_eq "ops published while flushes fail" "$visible" 0 || return 1
  # ... until the cause goes away: the same worker resumes on its own.
  psql_q -d "$db" -c "ALTER TABLE syncline_internal.bucket_state DROP CONSTRAINT lc_no_state" >/dev/null || return 1
  for _ in $(seq 1 100); do
    visible=$(value -d "$db" -c "SELECT count(*) FROM syncline.bucket_data('lc_worker[]', 0)")
    [ "$visible" = 1 ] && break
    sleep 0.1
  done
  expect_eq "ops published after the cause went away" "$visible" 1 || return 1
  pid_after=$(value -d "$db" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncline flusher'")
  expect_eq "flusher process (not restarted)" "$pid_after" "$pid_before" || return 1
  if [ -n "${PGDATA:-}" ] && [ -f "$PGDATA/../server.log" ] &&
    ! grep -q 'syncline flusher: retrying in' "$PGDATA/../server.log"; then
    echo "  the server log does not report the retries"; return 1
  fi
  psql_q -d "$db" -c "SELECT syncline.drop_bucket('lc_worker')" -c "DROP TABLE lc_worker" >/dev/null
  return 0
}

maintenance_survives_errors() {
  local db=syncline pid_before pid_after compacted visible
  fresh_synced_table lc_maint_err || return 1
  pid_before=$(value -d "$db" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncline maintenance'")
  [ -n "$pid_before" ] || { echo "  no syncline maintenance worker is running"; return 1; }
  # Every compaction that turns an op into a MOVE now fails ...
  psql_q -d "$db" >/dev/null <<'SQL' || return 1
INSERT INTO lc_maint_err VALUES (1, 'v1');
UPDATE lc_maint_err SET v = 'v2';
SELECT syncline.flush();
ALTER TABLE syncline_internal.ops ADD CONSTRAINT lc_no_move CHECK (op <> 3 OR bucket <> 'lc_maint_err[]') NOT VALID;
ALTER SYSTEM SET syncline.compact_interval = '1s';
SELECT pg_reload_conf();
SQL
  local log="${PGDATA:-}/../server.log" reported=""
  for _ in $(seq 1 100); do
    if [ -f "$log" ] && grep -q 'syncline maintenance: retrying in' "$log"; then reported=yes; break; fi
    sleep 0.1
  done
  # ... while commits still become visible.
  psql_q -d "$db" -c "INSERT INTO lc_maint_err VALUES (2, 'during failures')" >/dev/null || return 1
  visible=$(poll 1 "SELECT count(*) FROM syncline.bucket_data('lc_maint_err[]', 0) WHERE object_id = '2'")
  # The cause goes away: the same process compacts the bucket on its own.
  psql_q -d "$db" -c "ALTER TABLE syncline_internal.ops DROP CONSTRAINT lc_no_move" >/dev/null || return 1
  compacted=$(poll 1 "SELECT count(*) FROM syncline.bucket_data('lc_maint_err[]', 0) WHERE op = 'PUT' AND object_id = '1'" 200)
  psql_q -d "$db" -c "ALTER SYSTEM RESET syncline.compact_interval" -c "SELECT pg_reload_conf()" >/dev/null
  if [ -f "$log" ]; then
    expect_eq "the server log reports the retries" "$reported" yes || return 1
  fi
  expect_eq "ops published while compactions fail" "$visible" 1 || return 1
  expect_eq "PUTs of row 1 after the cause went away (v1 compacted)" "$compacted" 1 || return 1
  pid_after=$(value -d "$db" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncline maintenance'")
  expect_eq "maintenance process (not restarted)" "$pid_after" "$pid_before" || return 1
  psql_q -d "$db" -c "SELECT syncline.drop_bucket('lc_maint_err')" -c "DROP TABLE lc_maint_err" >/dev/null
  return 0
}

worker_compacts() {
  local db=syncline before after
  psql_q -d "$db" >/dev/null <<'SQL' || return 1
CREATE EXTENSION IF NOT EXISTS syncline;
DROP TABLE IF EXISTS lc_compact;
CREATE TABLE lc_compact (id int PRIMARY KEY, v int);
SELECT syncline.create_bucket('lc_compact', NULL, ARRAY['SELECT * FROM lc_compact']);
INSERT INTO lc_compact SELECT g, 0 FROM generate_series(1, 50) g;
UPDATE lc_compact SET v = 1;
UPDATE lc_compact SET v = 2;
DELETE FROM lc_compact WHERE id <= 10;
SQL
  poll 160 "SELECT count(*) FROM syncline.bucket_data('lc_compact[]', 0, NULL, 100000)" >/dev/null
  before=$(value -d "$db" -c "$(checksum_last lc_compact)")
  # One maintenance round a second instead of a minute.
  psql_q -d "$db" -c "ALTER SYSTEM SET syncline.compact_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null || return 1
  local ops="" want="CLEAR:1,PUT:40,REMOVE:10"
  ops=$(poll "$want" "$(ops_by_kind lc_compact)")
  after=$(value -d "$db" -c "$(checksum_last lc_compact)")
  # 50 inserts, 2 x 50 updates, 10 deletes: the first 110 ops are superseded
  # (MOVE) and, leading the bucket, become one CLEAR; the last PUT or REMOVE
  # of each row stays.
  expect_eq "ops after the worker's compaction" "$ops" "$want" || { psql_q -d "$db" -c "ALTER SYSTEM RESET syncline.compact_interval" -c "SELECT pg_reload_conf()" >/dev/null; return 1; }
  expect_eq "bucket checksum/last op (unchanged by compaction)" "$after" "$before" || return 1
  # The next rounds look only at rows changed since: row 50's PUT, now in the
  # middle of the bucket, becomes a MOVE; rows 11-12's, right after the CLEAR,
  # join the leading run, which becomes one CLEAR again.
  psql_q -d "$db" -c "UPDATE lc_compact SET v = 3 WHERE id IN (11, 12, 50)" >/dev/null || return 1
  poll 54 "SELECT count(*) FROM syncline.bucket_data('lc_compact[]', 0, NULL, 100000)" >/dev/null
  before=$(value -d "$db" -c "$(checksum_last lc_compact)")
  want="CLEAR:1,MOVE:1,PUT:40,REMOVE:10"
  ops=$(poll "$want" "$(ops_by_kind lc_compact)")
  psql_q -d "$db" -c "ALTER SYSTEM RESET syncline.compact_interval" -c "SELECT pg_reload_conf()" >/dev/null
  after=$(value -d "$db" -c "$(checksum_last lc_compact)")
  expect_eq "ops after the next, incremental compaction" "$ops" "$want" || return 1
  expect_eq "bucket checksum/last op (unchanged by it)" "$after" "$before" || return 1
  local moved
  moved=$(value -d "$db" -c "SELECT object_id FROM syncline.bucket_data('lc_compact[]', 0, NULL, 100000) WHERE op = 'MOVE'")
  expect_eq "the row whose PUT became a MOVE" "$moved" 50 || return 1
  psql_q -d "$db" -c "SELECT syncline.drop_bucket('lc_compact')" -c "DROP TABLE lc_compact" >/dev/null
  return 0
}

worker_compacts_in_windows() {
  local db=syncline base before after compacted ops
  fresh_synced_table lc_window || return 1
  psql_q -d "$db" >/dev/null <<'SQL' || return 1
INSERT INTO lc_window SELECT g, 'v0' FROM generate_series(1, 1000) g;
UPDATE lc_window SET v = 'v1';
UPDATE lc_window SET v = 'v2';
SELECT syncline.flush();
SQL
  base=$(value -d "$db" -c "SELECT min(op_id) - 1 FROM syncline_internal.ops WHERE bucket = 'lc_window[]'") || return 1
  before=$(value -d "$db" -c "$(checksum_last lc_window)")
  # 3,000 ops (inserts, first and second updates), compacted 500 at a time.
  # A MOVE of a first update (ops 1,001-2,000 of the bucket) is refused: the
  # fifth window, which supersedes them, fails; the four before it commit.
  psql_q -d "$db" >/dev/null <<SQL || return 1
ALTER TABLE syncline_internal.ops ADD CONSTRAINT lc_window_stop
  CHECK (op <> 3 OR bucket <> 'lc_window[]' OR op_id <= $base + 1000) NOT VALID;
ALTER SYSTEM SET syncline.compact_window = 500;
ALTER SYSTEM SET syncline.compact_interval = '1s';
SELECT pg_reload_conf();
SQL
  compacted=$(poll 2000 "SELECT compacted_op_id - $base FROM syncline_internal.bucket_state WHERE bucket = 'lc_window[]'" 200)
  sleep 1.5  # a round more: it fails at the same window again
  local still
  still=$(value -d "$db" -c "SELECT compacted_op_id - $base FROM syncline_internal.bucket_state WHERE bucket = 'lc_window[]'")
  psql_q -d "$db" -c "ALTER TABLE syncline_internal.ops DROP CONSTRAINT lc_window_stop" >/dev/null || return 1
  local want="CLEAR:1,PUT:1000"
  ops=$(poll "$want" "$(ops_by_kind lc_window)" 200)
  psql_q -d "$db" -c "ALTER SYSTEM RESET syncline.compact_interval" \
    -c "ALTER SYSTEM RESET syncline.compact_window" -c "SELECT pg_reload_conf()" >/dev/null
  after=$(value -d "$db" -c "$(checksum_last lc_window)")
  expect_eq "ops compacted by the windows before the failing one" "$compacted" 2000 || return 1
  expect_eq "ops compacted after another round" "$still" 2000 || return 1
  # The inserts and first updates are superseded and lead the bucket: one CLEAR.
  expect_eq "ops once the windows may go on" "$ops" "$want" || return 1
  expect_eq "bucket checksum/last op (unchanged by compaction)" "$after" "$before" || return 1
  psql_q -d "$db" -c "SELECT syncline.drop_bucket('lc_window')" -c "DROP TABLE lc_window" >/dev/null
  return 0
}

flushes_go_on_during_maintenance() {
  local db=syncline visible waiting holder compacted
  fresh_synced_table lc_maint_big || return 1
  fresh_synced_table lc_maint_live || return 1
  # lc_maint_big has the most ops no compaction has seen: the next round starts with it.
  psql_q -d "$db" -c "INSERT INTO lc_maint_big SELECT g, 'x' FROM generate_series(1, 5000) g" \
    -c "SELECT syncline.flush()" >/dev/null || return 1
  # This session holds that bucket's compaction lock, so the round waits for it.
  psql -X -q -d "$db" -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<'SQL' &
SET application_name = 'lc_maint_holder';
BEGIN;
SELECT pg_advisory_xact_lock(1398361669, hashtext('lc_maint_big[]'));
SELECT pg_sleep(60);
SQL
  holder=$!
  poll 1 "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'lc_maint_holder' AND l.locktype = 'advisory' AND l.granted" >/dev/null
  psql_q -d "$db" -c "ALTER SYSTEM SET syncline.compact_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null || return 1
  waiting=$(poll 1 "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncline maintenance' AND wait_event_type = 'Lock' AND wait_event = 'advisory'")
  psql_q -d "$db" -c "ALTER SYSTEM RESET syncline.compact_interval" -c "SELECT pg_reload_conf()" >/dev/null
  expect_eq "maintenance worker waiting for the compaction lock" "$waiting" 1 || { kill "$holder"; return 1; }
  # A commit meanwhile reaches the op log.
  psql_q -d "$db" -c "INSERT INTO lc_maint_live VALUES (1, 'during maintenance')" >/dev/null || return 1
  visible=$(poll 1 "SELECT count(*) FROM syncline.bucket_data('lc_maint_live[]', 0)")
  expect_eq "ops published while maintenance waits" "$visible" 1 || { kill "$holder"; return 1; }
  # Let the round go on: it compacts the bucket it waited for.
  value -d "$db" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lc_maint_holder'" >/dev/null
  wait "$holder" 2>/dev/null
  compacted=$(poll t "SELECT compacted_op_id = last_op_id FROM syncline_internal.bucket_state WHERE bucket = 'lc_maint_big[]'")
  expect_eq "bucket compacted once the lock was released" "$compacted" t || return 1
  psql_q -d "$db" -c "SELECT syncline.drop_bucket('lc_maint_big')" -c "SELECT syncline.drop_bucket('lc_maint_live')" \
    -c "DROP TABLE lc_maint_big, lc_maint_live" >/dev/null
  return 0
}

compaction_beside_writes() {
  local db=syncline mismatches=0 m rounds=0 moves diff
  fresh_synced_table lc_churn || return 1
  psql_q -d "$db" -f tests/lifecycle/client.sql >/dev/null || return 1
  psql_q -d "$db" -c "TRUNCATE client.objects, client.buckets" >/dev/null || return 1
  cat >"$OUT/churn_upsert.sql" <<'SQL'
\set id random(1, 300)
\set r random(1, 1000)
INSERT INTO lc_churn VALUES (:id, 'v' || :r) ON CONFLICT (id) DO UPDATE SET v = excluded.v;
SQL
  cat >"$OUT/churn_delete.sql" <<'SQL'
\set id random(1, 300)
DELETE FROM lc_churn WHERE id = :id;
SQL
  psql_q -d "$db" -c "ALTER SYSTEM SET syncline.compact_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null || return 1
  "$PGBIN/pgbench" -n -c 4 -j 2 -T 8 -f "$OUT/churn_upsert.sql@8" -f "$OUT/churn_delete.sql@2" "$db" \
    >"$OUT/churn_pgbench.log" 2>&1 &
  local bench=$!
  # A client that keeps syncing while ops are written, flushed and compacted.
  while kill -0 "$bench" 2>/dev/null; do
    m=$(value -d "$db" -c "SELECT count(*) FROM client.sync('{\"sub\": \"lc\"}')") || { kill "$bench"; return 1; }
    mismatches=$((mismatches + m))
    rounds=$((rounds + 1))
    sleep 0.2
  done
  wait "$bench" || { tail -n 5 "$OUT/churn_pgbench.log"; return 1; }
  psql_q -d "$db" -c "SELECT syncline.flush()" >/dev/null
  # A round after the last write.
  poll t "SELECT compacted_op_id = last_op_id FROM syncline_internal.bucket_state WHERE bucket = 'lc_churn[]'" 100 >/dev/null
  psql_q -d "$db" -c "ALTER SYSTEM RESET syncline.compact_interval" -c "SELECT pg_reload_conf()" >/dev/null
  moves=$(value -d "$db" -c "SELECT count(*) FROM syncline.bucket_data('lc_churn[]', 0, NULL, 1000000) WHERE op IN ('MOVE', 'CLEAR')")
  echo "  $rounds syncs while writing; $moves MOVE/CLEAR ops left by compaction"
  expect_eq "checksum mismatches while writing" "$mismatches" 0 || return 1
  [ "$moves" -gt 0 ] || { echo "  compaction did not run"; return 1; }
  local equal="SELECT count(*) FROM lc_churn t FULL JOIN (SELECT * FROM client.objects WHERE bucket = 'lc_churn[]') o
                ON o.object_id = t.id::text
               WHERE t.id IS NULL OR o.object_id IS NULL OR (o.data::jsonb ->> 'v') IS DISTINCT FROM t.v"
  expect_eq "mismatches at the end" "$(value -d "$db" -c "SELECT count(*) FROM client.sync('{\"sub\": \"lc\"}')")" 0 || return 1
  expect_eq "rows differing from the table" "$(value -d "$db" -c "$equal")" 0 || return 1
  # A client from scratch reads what compaction left.
  psql_q -d "$db" -c "TRUNCATE client.objects, client.buckets" >/dev/null
  expect_eq "mismatches from scratch" "$(value -d "$db" -c "SELECT count(*) FROM client.sync('{\"sub\": \"lc\"}')")" 0 || return 1
  expect_eq "rows differing from the table, from scratch" "$(value -d "$db" -c "$equal")" 0 || return 1
  psql_q -d "$db" -c "SELECT syncline.drop_bucket('lc_churn')" -c "DROP TABLE lc_churn" \
    -c "DROP SCHEMA client CASCADE" >/dev/null
  return 0
}

# Stages ROWS single-row transactions (ids from FIRST) while this session
# holds the flush lock (so they pile up), lets the flusher publish them and
# waits for its vacuum of staging; prints the blocks of staging before and after.
staging_blocks_after_backlog() {
  local db=syncline rows=$1 first=$2 vacuums before blocks
  vacuums=$(value -d "$db" -c "SELECT vacuum_count FROM pg_stat_all_tables WHERE relid = 'syncline_internal.pending'::regclass")
  before=$(value -d "$db" -v rows="$rows" -v first="$first" <<'SQL' | tail -n 1
SET synchronous_commit = off;
SELECT pg_advisory_lock(1398361667, 1) \g /dev/null
SELECT set_config('lc.rows', :'rows', false), set_config('lc.first', :'first', false) \g /dev/null
DO $$
BEGIN
  FOR i IN 0..current_setting('lc.rows')::int - 1 LOOP
    INSERT INTO lc_staging VALUES (current_setting('lc.first')::int + i, repeat('x', 200));
    COMMIT;
  END LOOP;
END
$$;
SELECT pg_relation_size('syncline_internal.pending') / 8192;
SQL
) || return 1
  # Only the statistics are polled: a query on staging itself, waiting for
  # the lock the vacuum's truncation holds, makes the truncation give way.
  # (The worker vacuums staging only after a flush took all of its rows.)
  for _ in $(seq 1 300); do
    [ "$(value -d "$db" -c "SELECT vacuum_count > $vacuums FROM pg_stat_all_tables WHERE relid = 'syncline_internal.pending'::regclass")" = t ] && break
    sleep 0.1
  done
  expect_eq "staged rows left" "$(value -d "$db" -c "SELECT count(*) FROM syncline_internal.pending")" 0 >&2 || return 1
  blocks=$(value -d "$db" -c "SELECT pg_relation_size('syncline_internal.pending') / 8192")
  echo "$before $blocks"
}

worker_sizes_staging() {
  local db=syncline sizes
  fresh_synced_table lc_staging || return 1
  # Autovacuum stays off staging here: its ANALYZE after a backlog of
  # inserts waits for the lock the worker's truncation holds, and vacuum's
  # truncation gives way to a waiter (it failed once that way, leaving 462
  # blocks). This tests the worker's own vacuum.
  psql_q -d "$db" -c "ALTER TABLE syncline_internal.pending SET (autovacuum_enabled = false)" >/dev/null
  # A small backlog (tens of blocks): the emptied pages stay for the next commits.
  sizes=$(staging_blocks_after_backlog 1500 1) || return 1
  set -- $sizes
  echo "  1,500 staged rows: $1 blocks, $2 after the worker's vacuum"
  [ "$1" -gt 0 ] && [ "$1" -lt 256 ] || { echo "  expected a backlog of 1-255 blocks"; return 1; }
  expect_eq "blocks of staging kept" "$2" "$1" || return 1
  # A backlog past 256 blocks: truncated, so flushes do not scan empty pages.
  sizes=$(staging_blocks_after_backlog 12000 100000) || return 1
  set -- $sizes
  echo "  12,000 staged rows: $1 blocks, $2 after the worker's vacuum"
  [ "$1" -gt 256 ] || { echo "  expected a backlog past 256 blocks"; return 1; }
  # A vacuum whose horizon another transaction still held back (an autoanalyze of the table
  # just written, a compaction round of an earlier test) cannot empty the pages; the worker's
  # next vacuum can. It vacuums after 1,024 published rows, so up to ten more rounds of 1,100
  # single-row transactions, a second apart, are given, and truncation must come within them
  # (it failed ~1 run in 10 with the first vacuum only; a snapshot held for 9 s from the start
  # of this test is outlasted, one held throughout fails it).
  local blocks=$2 attempt
  for attempt in $(seq 1 10); do
    [ "$blocks" -le 256 ] && break
    echo "  still $blocks blocks after the worker's vacuum; another 1,100 rows ($attempt)"
    sleep 1  # the horizon's holder gets time to finish: ~15 s in all
    sizes=$(staging_blocks_after_backlog 1100 $((200000 + attempt * 10000))) || return 1
    set -- $sizes
    blocks=$2
  done
  [ "$blocks" -le 256 ] || { echo "  staging was not truncated ($blocks blocks)"; return 1; }
  psql_q -d "$db" -c "ALTER TABLE syncline_internal.pending RESET (autovacuum_enabled)" \
    -c "SELECT syncline.drop_bucket('lc_staging')" -c "DROP TABLE lc_staging" >/dev/null
  return 0
}

# compaction_beside_writes runs last: run before worker_sizes_staging, that test's vacuum
# left staging untruncated in 2 of ~10 runs (462 blocks: its pages not emptied), most likely
# because the churn's aftermath (autovacuum of the tables it wrote) held back the vacuum
# horizon; not confirmed. In this order: 6 of 6 passed.
for test in restore_round_trip worker_survives_errors maintenance_survives_errors worker_compacts \
  worker_compacts_in_windows flushes_go_on_during_maintenance worker_sizes_staging compaction_beside_writes; do
  if [ -z "${1:-}" ] || [[ "$test" == *"$1"* ]]; then
    detail=$("$test" 2>&1)
    rc=$?
    result "$test" "$rc"
    [ "$rc" -eq 0 ] || echo "$detail" | sed 's/^/  /' | head -n 30
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
