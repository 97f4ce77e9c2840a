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
#include "utils/snapmgr.h"
}

#include <string>
#include <unordered_map>
#include <vector>

#include "json_text.hpp"
#include "spi_util.hpp"
#include "rule_cache.hpp"
#include "staging.hpp"

namespace syncline {
namespace {

// Publishes every staged op visible to this statement's snapshot: numbers
// them after $1 in staging order (initial-copy ops first), appends them to
// the op log, and folds them into the running bucket state. Ops of buckets
// not among the definitions $2 (dropped meanwhile) are discarded. Returns
// (ops, markers, tables whose parameter inputs changed, rules changed, write
// markers' client ids and seqs). It has no joins, so its generic plan (made
// when pending may have been empty) stays good for any batch size.
const char *kFlushSql = R"sql(
WITH moved AS (
  DELETE FROM syncline_internal.pending RETURNING *),
numbered AS (
  SELECT m.bucket, m.op, m.object_type, m.object_id, m.data, m.checksum,
         $1 + row_number() OVER (ORDER BY m.seq) AS op_id
    FROM moved m
   WHERE m.op IN (1, 2) AND split_part(m.bucket, '[', 1) = ANY ($2::text[])),
inserted AS (
  INSERT INTO syncline_internal.ops (bucket, op_id, op, object_type, object_id, data, checksum)
  SELECT bucket, op_id, op, object_type, object_id, data, checksum FROM numbered),
state AS (
  INSERT INTO syncline_internal.bucket_state AS s (bucket, checksum, count, last_op_id)
  SELECT bucket, sum(checksum) % 4294967296, count(*), max(op_id) FROM numbered GROUP BY bucket
  ON CONFLICT (bucket) DO UPDATE
    SET checksum = (s.checksum + excluded.checksum) % 4294967296,
        count = s.count + excluded.count,
        last_op_id = excluded.last_op_id)
SELECT (SELECT count(*) FROM numbered),
       (SELECT count(*) FROM moved WHERE op >= 10),
       (SELECT coalesce(array_agg(DISTINCT m.object_id::oid), '{}') FROM moved m WHERE m.op = 10),
       (SELECT count(*) > 0 FROM moved WHERE op = 12),
       (SELECT coalesce(array_agg(m.object_id ORDER BY m.seq), '{}') FROM moved m WHERE m.op = 11),
       (SELECT coalesce(array_agg(m.data::bigint ORDER BY m.seq), '{}') FROM moved m WHERE m.op = 11)
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
      "SELECT j.bucket_name, j.position, j.next_block, j.end_block, d.table_oid "
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

// NOTIFY payloads are limited to 8000 bytes; the write list stops well short.
constexpr size_t kMaxPayloadWrites = 6000;

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
  size_t start = payload.size();
  payload += ",\"writes\":[";
  for (size_t i = 0; i < writes.size(); i++) {
    if (payload.size() - start > kMaxPayloadWrites) {
      payload += "],\"writes_truncated\":true";
      return;
    }
    if (i > 0) payload.push_back(',');
    payload.push_back('[');
    AppendJsonString(payload, TextDatumGetCString(writes[i].client_id));
    payload.push_back(',');
    payload += std::to_string(writes[i].seq);
    payload.push_back(']');
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
  static const char *kStateSql = "SELECT last_op_id FROM syncline_internal.state";
  rc = ExecPrepared(kStateSql, 0, nullptr, nullptr);
  if (rc != SPI_OK_SELECT || SPI_processed != 1)
    elog(ERROR, "syncline_internal.state must hold exactly one row");
  int64 last_op_id = FetchInt64(0, 1);
  int64 start_op_id = last_op_id;

  bool copied = copy_blocks > 0 && CopySnapshotChunk(copy_blocks, &result.more_copy);
  (void)copied;

  static const char *kDefinitionsSql =
      "SELECT coalesce(array_agg(name), '{}') FROM syncline_internal.bucket_definitions";
  rc = ExecPrepared(kDefinitionsSql, 0, nullptr, nullptr);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "reading bucket definitions failed");
  bool isnull;
  Datum names = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

  Oid types[2] = {INT8OID, TEXTARRAYOID};
  Datum args[2] = {Int64GetDatum(last_op_id), names};
  rc = ExecPrepared(kFlushSql, 2, types, args);
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
    Datum update_args[1] = {Int64GetDatum(last_op_id)};
    static const char *kAdvanceSql = "UPDATE syncline_internal.state SET last_op_id = $1";
    rc = ExecPrepared(kAdvanceSql, 1, types, update_args);
    if (rc != SPI_OK_UPDATE) elog(ERROR, "updating syncline state failed");
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
        "  FROM syncline_internal.parameter_tables WHERE table_oid = ANY ($1::oid[])";
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
      for (int i = 0; i < count; i++) {
        if (i > 0) payload.push_back(',');
        AppendJsonString(payload, TextDatumGetCString(changed[i]));
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

SYNCLINE_FUNCTION(syncline_flush) {
  int64 total = 0;
  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    // Publish everything committed so far, including every initial copy.
    for (;;) {
      syncline::FlushResult step = syncline::FlushStep(1 << 30);
      total += step.ops;
      if (!step.more_copy) break;
    }
    SPI_finish();
  });
  PG_RETURN_INT64(total);
}
