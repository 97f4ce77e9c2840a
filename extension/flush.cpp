#include "flush.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "commands/async.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

#include <string>
#include <unordered_map>
#include <vector>

#include "json_text.hpp"
#include "rule_env.hpp"
#include "spi_util.hpp"
#include "rule_cache.hpp"
#include "staging.hpp"

namespace syncline {
namespace {

// Publishes every staged op visible to this statement's snapshot: numbers
// them after $1 in staging order (initial-copy ops first), appends them to
// the op log, and folds them into the running bucket state. Ops of buckets
// not among the definitions $2 (dropped meanwhile) are discarded. While $3
// (a restore's rebuild is running), a bucket instance that has no state yet
// starts with a CLEAR. Returns (ops, markers, tables whose parameter inputs
// changed, rules changed, write markers' client ids and seqs), and records
// the buckets it changed for syncline.changes(). Bucket state is updated
// in place (a plain UPDATE is HOT and writes no lock record, unlike ON
// CONFLICT DO UPDATE) and created for new buckets (the rows the update
// found conflict and are skipped): only the flusher writes it, under the
// flush lock. Its one join (totals to bucket_state) must stay a nested
// loop over the primary key whatever the table sizes were when the generic
// plan was made: FlushStep runs it with hash and merge joins and sequential
// scans turned off.
const char *kFlushSql = R"sql(
WITH moved AS (
  DELETE FROM syncline_internal.pending RETURNING *),
live AS (
  SELECT m.* FROM moved m
   WHERE m.op IN (1, 2, 4) AND split_part(m.bucket, '[', 1) = ANY ($2::text[])),
cleared AS (
  SELECT DISTINCT l.bucket FROM live l
   WHERE $3 AND NOT EXISTS (SELECT FROM syncline_internal.bucket_state s
                             WHERE s.bucket = l.bucket)),
numbered AS (
  SELECT x.bucket, x.op, x.object_type, x.object_id, x.data, x.checksum,
         $1 + row_number() OVER (ORDER BY x.generated, x.seq) AS op_id
    FROM (SELECT c.bucket, 4::smallint AS op, NULL::text AS object_type, NULL::text AS object_id,
                 NULL::text AS data, 0::bigint AS checksum, 0 AS generated, 0::bigint AS seq
            FROM cleared c
          UNION ALL
          SELECT l.bucket, l.op, l.object_type, l.object_id, l.data, l.checksum, 1, l.seq
            FROM live l) x),
inserted AS (
  INSERT INTO syncline_internal.ops (bucket, op_id, op, object_type, object_id, data, checksum)
  SELECT bucket, op_id, op, object_type, object_id, data, checksum FROM numbered),
totals AS (
  SELECT bucket, sum(checksum) % 4294967296 AS checksum, count(*) AS n, max(op_id) AS last_op_id
    FROM numbered GROUP BY bucket),
updated AS (
  UPDATE syncline_internal.bucket_state s
     SET checksum = (s.checksum + t.checksum) % 4294967296,
         count = s.count + t.n,
         last_op_id = t.last_op_id
    FROM totals t
   WHERE s.bucket = t.bucket),
created AS (
  INSERT INTO syncline_internal.bucket_state (bucket, checksum, count, last_op_id)
  SELECT t.bucket, t.checksum, t.n, t.last_op_id FROM totals t
  ON CONFLICT (bucket) DO NOTHING),
flushed AS (
  INSERT INTO syncline_internal.flushes (last_op_id, from_op_id, buckets)
  SELECT max(last_op_id), $1, array_agg(bucket) FROM totals HAVING count(*) > 0),
markers AS (
  SELECT count(*) AS n,
         coalesce(array_agg(DISTINCT m.object_id::oid) FILTER (WHERE m.op = 10), '{}') AS tables,
         count(*) FILTER (WHERE m.op = 12) > 0 AS rules_changed,
         coalesce(array_agg(m.object_id ORDER BY m.seq) FILTER (WHERE m.op = 11), '{}') AS clients,
         coalesce(array_agg(m.data::bigint ORDER BY m.seq) FILTER (WHERE m.op = 11), '{}') AS seqs
    FROM moved m WHERE m.op >= 10)
SELECT (SELECT count(*) FROM numbered), n, tables, rules_changed, clients, seqs FROM markers
)sql";

int64 FetchInt64(int row, int column) {
  bool isnull;
  Datum value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, &isnull);
  return isnull ? 0 : DatumGetInt64(value);
}

// Copies up to `max_blocks` blocks of one pending initial snapshot into
// staging as initial-copy ops. Rows written since the bucket was declared
// also have trigger ops; those sort after the copy in the same flush or come
// in later flushes, so the newest state always wins.
bool CopySnapshotChunk(int64 max_blocks, bool *more) {
  *more = false;
  static const char *kJobsSql =
      "SELECT j.bucket_name, j.position, j.next_block, j.end_block, d.relation::oid "
      "  FROM syncline_internal.snapshot_jobs j "
      "  JOIN syncline_internal.data_queries d USING (bucket_name, position) "
      " ORDER BY j.bucket_name, j.position LIMIT 2";
  int rc = ExecPrepared(kJobsSql, 0, nullptr, nullptr);
  if (rc != SPI_OK_SELECT) elog(ERROR, "reading syncline snapshot jobs failed: %d", rc);
  if (SPI_processed == 0) return false;
  bool isnull;
  HeapTuple job = SPI_tuptable->vals[0];
  TupleDesc desc = SPI_tuptable->tupdesc;
  char *definition = TextDatumGetCString(SPI_getbinval(job, desc, 1, &isnull));
  int32 position = DatumGetInt32(SPI_getbinval(job, desc, 2, &isnull));
  int64 next_block = DatumGetInt64(SPI_getbinval(job, desc, 3, &isnull));
  int64 end_block = DatumGetInt64(SPI_getbinval(job, desc, 4, &isnull));
  Oid relid = DatumGetObjectId(SPI_getbinval(job, desc, 5, &isnull));
  bool other_jobs = SPI_processed > 1;
  int64 stop_block = std::min(end_block, next_block + max_blocks);

  Relation rel = table_open(relid, AccessShareLock);
  // A table truncated meanwhile may have fewer blocks than recorded.
  int64 nblocks = RelationGetNumberOfBlocks(rel);
  if (stop_block > nblocks) stop_block = nblocks;
  if (next_block < stop_block) {
    const TableRules &rules = GetTableRules(rel);
    static std::vector<RowOp> ops;
    ops.clear();
    Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
    TableScanDesc scan = table_beginscan(rel, snapshot, 0, nullptr);
    heap_setscanlimits(scan, static_cast<BlockNumber>(next_block),
                       static_cast<BlockNumber>(stop_block - next_block));
    TupleTableSlot *slot = table_slot_create(rel, nullptr);
    while (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
      ComputeRowOps(rules, nullptr, slot, ops, definition, position);
      if (ops.size() >= 10000) {
        StageOps(ops, true);
        ops.clear();
      }
    }
    ExecDropSingleTupleTableSlot(slot);
    table_endscan(scan);
    UnregisterSnapshot(snapshot);
    StageOps(ops, true);
    ops.clear();
  }
  table_close(rel, AccessShareLock);

  Oid types[3] = {TEXTOID, INT4OID, INT8OID};
  Datum args[3] = {CStringGetTextDatum(definition), Int32GetDatum(position),
                   Int64GetDatum(stop_block)};
  const char *sql = stop_block >= end_block || stop_block >= nblocks
                        ? "DELETE FROM syncline_internal.snapshot_jobs "
                          " WHERE bucket_name = $1 AND position = $2 AND $3 IS NOT NULL"
                        : "UPDATE syncline_internal.snapshot_jobs SET next_block = $3 "
                          " WHERE bucket_name = $1 AND position = $2";
  rc = SPI_execute_with_args(sql, 3, types, args, nullptr, false, 0);
  if (rc != SPI_OK_DELETE && rc != SPI_OK_UPDATE) elog(ERROR, "updating snapshot job failed");
  *more = other_jobs || (stop_block < end_block && stop_block < nblocks);
  return true;
}

// NOTIFY payloads are limited to 8000 bytes (a longer one raises an ERROR and
// would stop every flush). The definitions list gets at most this much; past
// it the payload says rules_changed (everyone rechecks) instead. The write
// list gets what is left below kMaxPayload.
constexpr size_t kMaxPayloadDefinitions = 2000;
constexpr size_t kMaxPayload = 7800;

// The client batches a flush published: the write markers' client ids and seqs.
struct PublishedWrite {
  Datum client_id;  // text
  int64 seq;
};

std::vector<PublishedWrite> PublishedWrites(Datum writes, Datum write_seqs) {
  Datum *ids, *seqs;
  int count, seq_count;
  deconstruct_array(DatumGetArrayTypeP(writes), TEXTOID, -1, false, TYPALIGN_INT, &ids, nullptr,
                    &count);
  deconstruct_array(DatumGetArrayTypeP(write_seqs), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
                    &seqs, nullptr, &seq_count);
  std::vector<PublishedWrite> published;
  for (int i = 0; i < count && i < seq_count; i++)
    published.push_back({ids[i], DatumGetInt64(seqs[i])});
  return published;
}

// ,"writes":[["client id",seq],...] for the client batches this flush
// published, so a gateway can acknowledge them without asking; past the size
// cap, "writes_truncated":true tells it to look the rest up.
void AppendWrites(std::string &payload, const std::vector<PublishedWrite> &writes) {
  if (writes.empty()) return;
  payload += ",\"writes\":[";
  std::string entry;
  for (size_t i = 0; i < writes.size(); i++) {
    entry.assign(i > 0 ? ",[" : "[");
    AppendJsonString(entry, TextDatumGetCString(writes[i].client_id));
    entry.push_back(',');
    entry += std::to_string(writes[i].seq);
    entry.push_back(']');
    // Room for this entry, the closing bracket and the truncation flag.
    if (payload.size() + entry.size() + 32 > kMaxPayload) {
      payload += "],\"writes_truncated\":true";
      return;
    }
    payload += entry;
  }
  payload.push_back(']');
}

}  // namespace

FlushResult FlushStep(int64 copy_blocks) {
  FlushResult result;
  if (IsolationUsesXactSnapshot())
    ereport(ERROR, (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
                    errmsg("syncline.flush() must run in a READ COMMITTED transaction"),
                    errhint("Under REPEATABLE READ or SERIALIZABLE its snapshot could predate "
                            "the flush lock.")));
  // The flush lock: a transaction-level advisory lock, released only after
  // this transaction is visible, so the next flush numbers its ops after ours
  // and (its next statement taking a new snapshot) sees everything we
  // published. Unlike a row lock it writes nothing, so a flush that finds
  // nothing commits without a WAL flush.
  static const char *kLockSql = "SELECT pg_catalog.pg_advisory_xact_lock(1398361667, 1)";
  int rc = ExecPrepared(kLockSql, 0, nullptr, nullptr);
  if (rc != SPI_OK_SELECT) elog(ERROR, "taking the syncline flush lock failed");
  // The op id counter (no row yet: nothing was ever published), and whether
  // a restore's rebuild is running (before the copy below may finish it).
  // In one statement: the op id counter (no row yet: nothing was ever
  // published), whether initial copies are waiting and whether one is a
  // restore's rebuild (read before the copy below may finish it), and the
  // bucket definitions (ops of others were staged for a dropped bucket).
  static const char *kStateSql =
      "SELECT (SELECT last_op_id FROM syncline_internal.state), "
      "       EXISTS (SELECT FROM syncline_internal.snapshot_jobs), "
      "       EXISTS (SELECT FROM syncline_internal.snapshot_jobs WHERE reset), "
      "       (SELECT coalesce(array_agg(name), '{}') FROM syncline_internal.bucket_definitions)";
  rc = ExecPrepared(kStateSql, 0, nullptr, nullptr);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "reading syncline state failed");
  int64 last_op_id = FetchInt64(0, 1);
  int64 start_op_id = last_op_id;
  bool isnull;
  bool copies_waiting =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
  bool resetting =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
  Datum names = datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull),
                          false, -1);

  if (copy_blocks > 0 && copies_waiting) (void)CopySnapshotChunk(copy_blocks, &result.more_copy);

  Oid types[3] = {INT8OID, TEXTARRAYOID, BOOLOID};
  Datum args[3] = {Int64GetDatum(last_op_id), names, BoolGetDatum(resetting)};
  // Nested loops over the key for the one join (see kFlushSql), and room to
  // sort and hold a big flush (a bulk load's) in memory.
  int nest_level = NewGUCNestLevel();
  for (const char *method : {"enable_hashjoin", "enable_mergejoin"})
    (void)set_config_option(method, "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                            false);
  (void)set_config_option("work_mem", "65536", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
                          0, false);
  rc = ExecPrepared(kFlushSql, 3, types, args);
  AtEOXact_GUC(true, nest_level);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "syncline flush failed: %d", rc);
  result.ops = FetchInt64(0, 1);
  result.markers = FetchInt64(0, 2);
  Datum changed_tables = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
  bool rules_changed =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
  Datum writes = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);
  Datum write_seqs = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull);
  last_op_id += result.ops;

  if (result.ops > 0) {
    // The first op ever published creates the counter, recording which
    // database it belongs to (a restore into another one is told apart).
    static std::string identity = CurrentDatabaseIdentity();
    Oid advance_types[2] = {INT8OID, TEXTOID};
    Datum advance_args[2] = {Int64GetDatum(last_op_id), CStringGetTextDatum(identity.c_str())};
    static const char *kAdvanceSql =
        "INSERT INTO syncline_internal.state AS s (singleton, last_op_id, origin) "
        "VALUES (true, $1, $2) ON CONFLICT (singleton) DO UPDATE SET last_op_id = $1";
    rc = ExecPrepared(kAdvanceSql, 2, advance_types, advance_args);
    if (rc != SPI_OK_INSERT) elog(ERROR, "updating syncline state failed");
  }
  // Client batches published by this flush: their write checkpoint is now.
  // One primary-key update each: a join would get its generic plan while
  // client_batches is still small (a hash join over a sequential scan) and
  // keep it as the table grows.
  std::vector<PublishedWrite> published = PublishedWrites(writes, write_seqs);
  static const char *kStampSql =
      "UPDATE syncline_internal.client_batches SET write_checkpoint = $3 "
      " WHERE client_id = $1 AND seq = $2";
  Oid stamp_types[3] = {TEXTOID, INT8OID, INT8OID};
  for (const PublishedWrite &w : published) {
    Datum stamp_args[3] = {w.client_id, Int64GetDatum(w.seq), Int64GetDatum(last_op_id)};
    rc = ExecPrepared(kStampSql, 3, stamp_types, stamp_args);
    if (rc != SPI_OK_UPDATE) elog(ERROR, "recording write checkpoints failed");
  }

  // Definitions whose parameter queries read a table that changed.
  Datum definitions = 0;
  bool no_definitions = true;
  ArrayType *tables = DatumGetArrayTypeP(changed_tables);
  if (ArrayGetNItems(ARR_NDIM(tables), ARR_DIMS(tables)) > 0) {
    static const char *kChangedSql =
        "SELECT coalesce(array_agg(DISTINCT bucket_name ORDER BY bucket_name), '{}') "
        "  FROM syncline_internal.parameter_tables WHERE relation::oid = ANY ($1::oid[])";
    Oid table_types[1] = {OIDARRAYOID};
    Datum table_args[1] = {changed_tables};
    rc = ExecPrepared(kChangedSql, 1, table_types, table_args);
    if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "reading parameter tables failed");
    definitions = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    no_definitions = false;
  }

  if (result.ops > 0 || result.markers > 0) {
    // {"last_op_id": N, "definitions": [...], "rules_changed": bool}
    static std::string payload;
    payload.assign("{\"last_op_id\":");
    payload += std::to_string(last_op_id);
    payload += ",\"definitions\":[";
    if (!no_definitions) {
      ArrayType *array = DatumGetArrayTypeP(definitions);
      Datum *changed;
      int count;
      deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &changed, nullptr, &count);
      size_t list_start = payload.size();
      for (int i = 0; i < count; i++) {
        if (i > 0) payload.push_back(',');
        AppendJsonString(payload, TextDatumGetCString(changed[i]));
        if (payload.size() - list_start > kMaxPayloadDefinitions) {
          // Too many to name: everyone rechecks.
          payload.resize(list_start);
          rules_changed = true;
          break;
        }
      }
    }
    payload += "],\"rules_changed\":";
    payload += rules_changed ? "true" : "false";
    payload += ",\"first_op_id\":";
    payload += std::to_string(start_op_id + 1);
    AppendWrites(payload, published);
    payload += "}";
    Async_Notify("syncline", payload.c_str());
  }
  return result;
}

}  // namespace syncline

// Publishes everything committed so far. Initial copies are the background
// worker's: it makes them in bounded steps, one short transaction each,
// while this would copy whole tables under the flush lock and stall live
// sync for everyone. Only where no worker serves this database (the library
// is not preloaded) does this copy, so that rules work at all there.
SYNCLINE_FUNCTION(syncline_flush) {
  int64 total = 0;
  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    bool copy = !syncline::FlusherAttached();
    syncline::AsEngine([&] {
      for (;;) {
        syncline::FlushResult step = syncline::FlushStep(copy ? 1 << 30 : 0);
        total += step.ops;
        if (!step.more_copy) break;
      }
    });
    SPI_finish();
  });
  PG_RETURN_INT64(total);
}

// syncline.wait_for_initial_copy(timeout_ms): waits (without holding the
// flush lock) until no initial copy is left; true when done, false on timeout.
// Without a worker it makes the copies itself.
SYNCLINE_FUNCTION(syncline_wait_for_initial_copy) {
  int32 timeout_ms = PG_ARGISNULL(0) ? 30000 : PG_GETARG_INT32(0);
  bool done = false;
  syncline::PgGuard([&] {
    if (IsolationUsesXactSnapshot())
      ereport(ERROR,
              (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
               errmsg("syncline.wait_for_initial_copy() must run in a READ COMMITTED transaction"),
               errhint("Its snapshot would never see the copies finish.")));
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
    for (;;) {
      syncline::AsEngine([&] {
        // Each statement takes a new snapshot: it sees the worker's commits.
        int rc = SPI_execute("SELECT NOT EXISTS (SELECT FROM syncline_internal.snapshot_jobs)",
                             false, 1);
        if (rc != SPI_OK_SELECT) elog(ERROR, "reading snapshot jobs failed");
        bool isnull;
        done =
            DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        if (!done && !syncline::FlusherAttached()) {
          while (syncline::FlushStep(1 << 30).more_copy) {
          }
          done = true;
        }
      });
      if (done || GetCurrentTimestamp() >= deadline) break;
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20,
                      PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
      CHECK_FOR_INTERRUPTS();
    }
    SPI_finish();
  });
  PG_RETURN_BOOL(done);
}
