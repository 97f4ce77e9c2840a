#include "flush.hpp"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "catalog/index.h"
#include "executor/executor.h"
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
#include "funcapi.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

#include <algorithm>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "json_text.hpp"
#include "rule_env.hpp"
#include "spi_util.hpp"
#include "rule_cache.hpp"
#include "staging.hpp"

namespace syncline {
namespace {

// A staged op on its way into the op log: ordered by (generated first,
// seq, ord) where `generated` marks the CLEAR a restore's rebuild puts
// before a bucket instance's first op, seq is the staging order and ord the
// position inside a chunk row.
struct StagedOp {
  int64 seq = 0;
  int32 ord = 0;
  bool generated = false;
  RowOp op;
};

// What the staged rows of one flush hold besides ops.
struct StagedMarkers {
  int64 count = 0;
  std::vector<Oid> changed_tables;  // parameter inputs that changed
  bool rules_changed = false;
  std::vector<std::pair<int64, std::pair<std::string, int64>>> writes;  // seq, (client, batch)
};

std::string TextOf(Datum value) { return std::string(VarlenaBytes(value)); }

// Takes (deletes) every staged row visible now and returns the ops of live
// bucket definitions in them, chunk rows expanded, and the markers. Ops
// staged for a bucket dropped meanwhile are discarded.
//
// A heap scan and simple_heap_delete, not DELETE ... RETURNING through SPI:
// for single-row transactions the statement cost ~7,600 instructions per op
// (bench/instructions.sh). Nothing else deletes or updates staged rows while
// the flush lock is held (drop_bucket rewrites chunks under it), so a
// concurrent change is an error, as it would be for the statement.
//
// *taken_in gets the snapshot the rows were taken in, as a pg_snapshot: every
// transaction it sees as committed has had its staged rows taken by now.
void TakeStaged(const std::unordered_set<std::string> &definitions, std::vector<StagedOp> &ops,
                StagedMarkers &markers, Datum *taken_in) {
  auto live = [&](const std::string &bucket) {
    return definitions.count(bucket.substr(0, bucket.find('['))) > 0;
  };
  Relation rel = nullptr;
  Snapshot snapshot = nullptr;
  TableScanDesc scan = nullptr;
  PgGuard([&] {
    // Like a new statement: rows staged earlier in this transaction (an
    // initial copy) and every transaction committed by now are visible.
    CommandCounterIncrement();
    rel = table_open(InternalRelid("pending"), RowExclusiveLock);
    if (RelationGetDescr(rel)->natts != 8)
      Fail("syncline_internal.pending has an unexpected shape");
    snapshot = RegisterSnapshot(GetLatestSnapshot());
    // pg_current_snapshot() of this snapshot (it reads the active one and
    // takes no argument; Postgres 15 has no zero-argument direct call), with
    // this transaction among the running ones. A snapshot leaves its own
    // transaction out, so readers would take it as committed before the
    // flush; but syncline.flush() called in the transaction that applied a
    // client batch publishes none of the ops it keeps until its commit, and
    // its batches must wait for a later flush. (Only below xmax: a pg_snapshot
    // lists no running id past it, and its own id there is not visible anyway.)
    SnapshotData recorded = *snapshot;
    recorded.copied = false;  // PushActiveSnapshot copies it, xip included
    TransactionId own = GetTopTransactionIdIfAny();
    if (TransactionIdIsValid(own) && TransactionIdPrecedes(own, snapshot->xmax)) {
      recorded.xip =
          static_cast<TransactionId *>(palloc((snapshot->xcnt + 1) * sizeof(TransactionId)));
      memcpy(recorded.xip, snapshot->xip, snapshot->xcnt * sizeof(TransactionId));
      recorded.xip[recorded.xcnt++] = own;
    }
    PushActiveSnapshot(&recorded);
    *taken_in = DirectFunctionCall1(pg_current_snapshot, (Datum)0);
    PopActiveSnapshot();
    scan = table_beginscan(rel, snapshot, 0, nullptr);
  });
  enum { kSeq, kKind, kBucket, kObjectType, kObjectId, kData, kChecksum, kChunk };
  Datum values[8];
  bool nulls[8];
  for (;;) {
    HeapTuple tuple = nullptr;
    PgGuard([&] {
      tuple = heap_getnext(scan, ForwardScanDirection);
      if (tuple == nullptr) return;
      heap_deform_tuple(tuple, RelationGetDescr(rel), values, nulls);
      simple_heap_delete(rel, &tuple->t_self);
    });
    if (tuple == nullptr) break;
    int64 seq = DatumGetInt64(values[kSeq]);
    int16 kind = DatumGetInt16(values[kKind]);
    if (kind == kStagedChunk) {
      if (nulls[kChunk]) continue;
      // A bulk load stages thousands of chunks: each decompressed copy is
      // freed once read, not kept to the end of the flush.
      struct varlena *copy = nullptr;
      ChunkReader reader(VarlenaBytes(values[kChunk], &copy));
      // Read in place, without a copy of each op's four strings.
      for (int32 ord = 1;; ord++) {
        StagedOp &staged = ops.emplace_back();
        if (!reader.Next(staged.op)) {
          ops.pop_back();
          break;
        }
        if (!live(staged.op.bucket)) {
          ops.pop_back();
          continue;
        }
        staged.seq = seq;
        staged.ord = ord;
      }
      if (copy != nullptr) pfree(copy);
      continue;
    }
    if (kind >= 10) {
      markers.count++;
      if (kind == kStagedParameterChange && !nulls[kObjectId]) {
        markers.changed_tables.push_back(
            static_cast<Oid>(strtoul(TextOf(values[kObjectId]).c_str(), nullptr, 10)));
      } else if (kind == kStagedRulesChanged) {
        markers.rules_changed = true;
      } else if (kind == kStagedWriteMarker && !nulls[kObjectId] && !nulls[kData]) {
        markers.writes.push_back(
            {seq,
             {TextOf(values[kObjectId]), strtoll(TextOf(values[kData]).c_str(), nullptr, 10)}});
      }
      continue;
    }
    if (nulls[kBucket]) continue;
    StagedOp staged;
    staged.seq = seq;
    staged.op.kind = kind;
    staged.op.bucket = TextOf(values[kBucket]);
    if (!live(staged.op.bucket)) continue;
    if (!nulls[kObjectType]) staged.op.object_type = TextOf(values[kObjectType]);
    if (!nulls[kObjectId]) staged.op.object_id = TextOf(values[kObjectId]);
    if (!nulls[kData]) staged.op.data = TextOf(values[kData]);
    staged.op.checksum = static_cast<uint32_t>(DatumGetInt64(values[kChecksum]));
    ops.push_back(std::move(staged));
  }
  PgGuard([&] {
    table_endscan(scan);
    UnregisterSnapshot(snapshot);
    table_close(rel, RowExclusiveLock);
    CommandCounterIncrement();
  });
  std::sort(markers.writes.begin(), markers.writes.end());
}

// SQL arrays of C++ values: palloc'd in PgGuard (the callers hold containers).
Datum TextArrayOf(const std::vector<std::string> &values) {
  Datum array = 0;
  PgGuard([&] {
    Datum *datums = static_cast<Datum *>(palloc(sizeof(Datum) * (values.size() + 1)));
    for (size_t i = 0; i < values.size(); i++)
      datums[i] = PointerGetDatum(cstring_to_text_with_len(values[i].data(), values[i].size()));
    array = PointerGetDatum(
        construct_array(datums, static_cast<int>(values.size()), TEXTOID, -1, false, TYPALIGN_INT));
  });
  return array;
}

Datum Int8ArrayOf(const std::vector<int64> &values) {
  Datum array = 0;
  PgGuard([&] {
    Datum *datums = static_cast<Datum *>(palloc(sizeof(Datum) * (values.size() + 1)));
    for (size_t i = 0; i < values.size(); i++) datums[i] = Int64GetDatum(values[i]);
    array = PointerGetDatum(construct_array(datums, static_cast<int>(values.size()), INT8OID, 8,
                                            FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
  });
  return array;
}

// The elements of a text[] datum.
void TextsOf(Datum array, std::vector<std::string> &out) {
  Datum *items = nullptr;
  int count = 0;
  PgGuard([&] {
    deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT, &items, nullptr,
                      &count);
  });
  for (int i = 0; i < count; i++) out.push_back(TextOf(items[i]));
}

// While a restore's rebuild runs, a bucket instance that has no state yet
// (nothing of it was published since the restore) starts with a CLEAR, so a
// client that holds it from before drops what it has.
void AddRebuildClears(std::vector<StagedOp> &ops) {
  std::vector<std::string> buckets;
  for (const StagedOp &s : ops) buckets.push_back(s.op.bucket);
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  if (buckets.empty()) return;
  static const char *kNewSql =
      "SELECT b FROM unnest($1::text[]) b "
      " WHERE NOT EXISTS (SELECT FROM syncline_internal.bucket_state s WHERE s.bucket = b)";
  Oid types[1] = {TEXTARRAYOID};
  Datum args[1] = {TextArrayOf(buckets)};
  int rc = ExecPrepared(kNewSql, 1, types, args);
  if (rc != SPI_OK_SELECT) Fail("reading bucket state failed");
  for (uint64 row = 0; row < SPI_processed; row++) {
    StagedOp clear;
    clear.generated = true;
    clear.op.kind = kStagedClear;
    bool isnull;
    clear.op.bucket =
        TextOf(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1, &isnull));
    ops.push_back(std::move(clear));
  }
}

// Appends `ops` to the op log with ids first_id, first_id + 1, ...: bulk
// heap inserts (one WAL record per page of ops) and their index entries.
// Its arrays are palloc'd, not C++ containers: the heap and index calls
// below may raise a Postgres error (call it inside PgGuard).
void InsertOps(const std::vector<StagedOp *> &ops, int64 first_id) {
  constexpr int kBatch = 1000;
  Relation rel = table_open(InternalRelid("ops"), RowExclusiveLock);
  List *index_oids = RelationGetIndexList(rel);
  size_t index_count = static_cast<size_t>(list_length(index_oids));
  Relation *indexes = static_cast<Relation *>(palloc0(sizeof(Relation) * (index_count + 1)));
  IndexInfo **index_infos =
      static_cast<IndexInfo **>(palloc0(sizeof(IndexInfo *) * (index_count + 1)));
  ListCell *lc;
  size_t index_at = 0;
  foreach (lc, index_oids) {
    indexes[index_at] = index_open(lfirst_oid(lc), RowExclusiveLock);
    index_infos[index_at] = BuildIndexInfo(indexes[index_at]);
    index_at++;
  }
  TupleDesc desc = RelationGetDescr(rel);
  if (desc->natts != 7) Fail("syncline_internal.ops has an unexpected shape");
  BulkInsertState bistate = GetBulkInsertState();
  CommandId cid = GetCurrentCommandId(true);
  // Most flushes carry a few ops: as many slots as the batch needs, no more
  // (creating and dropping a slot registers its tuple descriptor each time).
  size_t slot_count = std::min<size_t>(kBatch, ops.size());
  TupleTableSlot **slots =
      static_cast<TupleTableSlot **>(palloc(sizeof(TupleTableSlot *) * slot_count));
  size_t *in_key_order = static_cast<size_t *>(palloc(sizeof(size_t) * slot_count));
  for (size_t i = 0; i < slot_count; i++) slots[i] = table_slot_create(rel, nullptr);
  MemoryContext batch_context =
      AllocSetContextCreate(CurrentMemoryContext, "syncline op batch", ALLOCSET_DEFAULT_SIZES);
  for (size_t start = 0; start < ops.size(); start += kBatch) {
    size_t n = std::min<size_t>(kBatch, ops.size() - start);
    MemoryContext outer = MemoryContextSwitchTo(batch_context);
    for (size_t i = 0; i < n; i++) {
      const RowOp &op = ops[start + i]->op;
      TupleTableSlot *slot = slots[i];
      ExecClearTuple(slot);
      bool clear = op.kind == kStagedClear;
      slot->tts_values[0] =
          PointerGetDatum(cstring_to_text_with_len(op.bucket.data(), op.bucket.size()));
      slot->tts_values[1] = Int64GetDatum(first_id + static_cast<int64>(start + i));
      slot->tts_values[2] = Int16GetDatum(op.kind);
      slot->tts_values[3] = clear ? Datum(0)
                                  : PointerGetDatum(cstring_to_text_with_len(
                                        op.object_type.data(), op.object_type.size()));
      slot->tts_values[4] =
          clear
              ? Datum(0)
              : PointerGetDatum(cstring_to_text_with_len(op.object_id.data(), op.object_id.size()));
      slot->tts_values[5] =
          op.kind == kStagedPut
              ? PointerGetDatum(cstring_to_text_with_len(op.data.data(), op.data.size()))
              : Datum(0);
      slot->tts_values[6] = Int64GetDatum(op.checksum);
      bool nulls[7] = {false, false, false, clear, clear, op.kind != kStagedPut, false};
      memcpy(slot->tts_isnull, nulls, sizeof nulls);
      ExecStoreVirtualTuple(slot);
    }
    table_multi_insert(rel, slots, static_cast<int>(n), cid, 0, bistate);
    // Index entries in key order (bucket, then op id, which grows with i):
    // consecutive descents of the (bucket, op_id) key share their pages.
    for (size_t i = 0; i < n; i++) in_key_order[i] = i;
    std::stable_sort(in_key_order, in_key_order + n, [&](size_t a, size_t b) {
      return ops[start + a]->op.bucket < ops[start + b]->op.bucket;
    });
    for (size_t k = 0; k < n; k++) {
      size_t i = in_key_order[k];
      for (size_t x = 0; x < index_count; x++) {
        Datum values[INDEX_MAX_KEYS];
        bool isnull[INDEX_MAX_KEYS];
        FormIndexDatum(index_infos[x], slots[i], nullptr, values, isnull);
        index_insert(indexes[x], values, isnull, &slots[i]->tts_tid, rel,
                     indexes[x]->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false,
                     index_infos[x]);
      }
    }
    MemoryContextSwitchTo(outer);
    MemoryContextReset(batch_context);
  }
  MemoryContextDelete(batch_context);
  for (size_t i = 0; i < slot_count; i++) ExecDropSingleTupleTableSlot(slots[i]);
  FreeBulkInsertState(bistate);
  for (size_t x = 0; x < index_count; x++) index_close(indexes[x], RowExclusiveLock);
  table_close(rel, RowExclusiveLock);
  CommandCounterIncrement();
}

// Folds the published ops into the running state of their buckets (updated
// in place: plain HOT updates, only the key is indexed; new buckets created)
// and records which buckets this flush changed, for syncline.changes().
void FoldIntoBucketState(const std::vector<StagedOp *> &ops, int64 first_id, int64 from_op_id) {
  struct Total {
    uint64 checksum = 0;
    int64 count = 0;
    int64 last_op_id = 0;
  };
  std::map<std::string, Total> totals;
  for (size_t i = 0; i < ops.size(); i++) {
    Total &t = totals[ops[i]->op.bucket];
    t.checksum = (t.checksum + ops[i]->op.checksum) % 4294967296ull;
    t.count++;
    t.last_op_id = first_id + static_cast<int64>(i);
  }
  std::vector<std::string> buckets;
  std::vector<int64> checksums, counts, lasts;
  for (const auto &[bucket, t] : totals) {
    buckets.push_back(bucket);
    checksums.push_back(static_cast<int64>(t.checksum));
    counts.push_back(t.count);
    lasts.push_back(t.last_op_id);
  }
  // Existing buckets first, in one UPDATE whose one join must stay a nested
  // loop over the key whatever the table sizes were when the generic plan
  // was made; then an INSERT of only the buckets it did not find (new ones,
  // rare), so an existing bucket costs one probe of the key, not two.
  static const char *kUpdateSql = R"sql(
    UPDATE syncline_internal.bucket_state s
       SET checksum = (s.checksum + t.checksum) % 4294967296,
           count = s.count + t.n,
           last_op_id = t.last_op_id
      FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
             AS t(bucket, checksum, n, last_op_id)
     WHERE s.bucket = t.bucket
    RETURNING s.bucket)sql";
  Oid types[4] = {TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
  Datum args[4] = {TextArrayOf(buckets), Int8ArrayOf(checksums), Int8ArrayOf(counts),
                   Int8ArrayOf(lasts)};
  int nest_level = 0;
  PgGuard([&] {
    nest_level = NewGUCNestLevel();
    for (const char *method : {"enable_hashjoin", "enable_mergejoin"})
      (void)set_config_option(method, "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                              false);
  });
  // An error here leaves the settings to the enclosing RunAs, which restores
  // every level above its own.
  int rc = ExecPrepared(kUpdateSql, 4, types, args);
  PgGuard([&] { AtEOXact_GUC(true, nest_level); });
  if (rc != SPI_OK_UPDATE_RETURNING) Fail("updating bucket state failed: %d", rc);
  bool all_found = SPI_processed == buckets.size();
  std::unordered_set<std::string> found;
  for (uint64 row = 0; !all_found && row < SPI_processed; row++) {
    bool isnull;
    found.insert(TextOf(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1, &isnull)));
  }
  SPI_freetuptable(SPI_tuptable);
  if (!all_found) {
    std::vector<std::string> new_buckets;
    std::vector<int64> new_checksums, new_counts, new_lasts;
    for (size_t i = 0; i < buckets.size(); i++) {
      if (found.count(buckets[i])) continue;
      new_buckets.push_back(buckets[i]);
      new_checksums.push_back(checksums[i]);
      new_counts.push_back(counts[i]);
      new_lasts.push_back(lasts[i]);
    }
    static const char *kInsertSql = R"sql(
      INSERT INTO syncline_internal.bucket_state (bucket, checksum, count, last_op_id)
      SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
      ON CONFLICT (bucket) DO NOTHING)sql";
    Datum new_args[4] = {TextArrayOf(new_buckets), Int8ArrayOf(new_checksums),
                         Int8ArrayOf(new_counts), Int8ArrayOf(new_lasts)};
    rc = ExecPrepared(kInsertSql, 4, types, new_args);
    if (rc != SPI_OK_INSERT) Fail("creating bucket state failed: %d", rc);
  }
  static const char *kFlushesSql =
      "INSERT INTO syncline_internal.flushes (last_op_id, from_op_id, buckets) "
      "VALUES ($1, $2, $3)";
  Oid flush_types[3] = {INT8OID, INT8OID, TEXTARRAYOID};
  Datum flush_args[3] = {Int64GetDatum(first_id + static_cast<int64>(ops.size()) - 1),
                         Int64GetDatum(from_op_id), args[0]};
  rc = ExecPrepared(kFlushesSql, 3, flush_types, flush_args);
  if (rc != SPI_OK_INSERT) Fail("recording the flush failed: %d", rc);
}

int64 FetchInt64(int row, int column) {
  bool isnull;
  Datum value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, &isnull);
  return isnull ? 0 : DatumGetInt64(value);
}

// Copies up to `max_blocks` blocks of one pending initial snapshot into
// staging as initial-copy ops. Rows written since the bucket was declared
// also have trigger ops; those sort after the copy in the same flush or come
// in later flushes, so the newest state always wins.
//
// Only jobs of `definitions` (the bucket definitions this flush read, and
// keeps the ops of) are taken: a bucket declared after that read has its job
// visible to this later statement, and copying it here would mark the job
// done while the flush drops its ops as belonging to no live bucket. Such a
// job waits for the next flush (*more says there is one to make).
bool CopySnapshotChunk(const std::vector<std::string> &definitions, int64 max_blocks, bool *more) {
  *more = false;
  static const char *kJobsSql =
      "SELECT j.bucket_name, j.position, j.next_block, j.end_block, d.relation::oid, "
      "       j.bucket_name = ANY ($1) "
      "  FROM syncline_internal.snapshot_jobs j "
      "  JOIN syncline_internal.data_queries d USING (bucket_name, position) "
      " ORDER BY j.bucket_name = ANY ($1) DESC, j.bucket_name, j.position LIMIT 2";
  Oid job_types[1] = {TEXTARRAYOID};
  Datum job_args[1] = {TextArrayOf(definitions)};
  int rc = ExecPrepared(kJobsSql, 1, job_types, job_args);
  if (rc != SPI_OK_SELECT) Fail("reading syncline snapshot jobs failed: %d", rc);
  if (SPI_processed == 0) return false;
  {
    bool isnull;
    bool known =
        DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
    if (!known) {
      // Only jobs of buckets declared since this flush began: the next one.
      *more = true;
      return false;
    }
  }
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
  PgGuard([&] {
    rc = SPI_execute_with_args(sql, 3, types, args, nullptr, false, 0);
    if (rc != SPI_OK_DELETE && rc != SPI_OK_UPDATE) Fail("updating snapshot job failed");
  });
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
  std::string client_id;
  int64 seq;
};

// ,"writes":[["client id",seq],...] for the client batches this flush
// published, so a gateway can acknowledge them without asking; past the size
// cap, "writes_truncated":true tells it to look the rest up.
void AppendWrites(std::string &payload, const std::vector<PublishedWrite> &writes) {
  if (writes.empty()) return;
  payload += ",\"writes\":[";
  std::string entry;
  for (size_t i = 0; i < writes.size(); i++) {
    entry.assign(i > 0 ? ",[" : "[");
    AppendJsonString(entry, writes[i].client_id);
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

bool ResolvesWriteCheckpoints() {
  return get_attnum(InternalRelid("state"), "flushed_snapshot") != InvalidAttrNumber;
}

// Unlike a row lock it writes nothing, so a flush that finds nothing commits
// without a WAL flush.
void TakeFlushLock() {
  static const char *kLockSql = "SELECT pg_catalog.pg_advisory_xact_lock(1398361667, 1)";
  if (ExecPrepared(kLockSql, 0, nullptr, nullptr) != SPI_OK_SELECT)
    Fail("taking the syncline flush lock failed");
}

FlushResult FlushStep(int64 copy_blocks) {
  FlushResult result;
  if (IsolationUsesXactSnapshot())
    throw Error(ERRCODE_ACTIVE_SQL_TRANSACTION,
                "syncline.flush() must run in a READ COMMITTED transaction", "",
                "Under REPEATABLE READ or SERIALIZABLE its snapshot could predate the flush lock.");
  // The flush lock, released only after this transaction is visible, so the
  // next flush numbers its ops after ours and (its next statement taking a
  // new snapshot) sees everything we published.
  TakeFlushLock();
  // In one statement: the op id counter (no row yet: nothing was ever
  // published), whether initial copies are waiting and whether one is a
  // restore's rebuild (read before the copy below may finish it), and the
  // bucket definitions (ops of others were staged for a dropped bucket).
  static const char *kStateSql =
      "SELECT (SELECT last_op_id FROM syncline_internal.state), "
      "       EXISTS (SELECT FROM syncline_internal.snapshot_jobs), "
      "       EXISTS (SELECT FROM syncline_internal.snapshot_jobs WHERE reset), "
      "       (SELECT coalesce(array_agg(name), '{}') FROM syncline_internal.bucket_definitions)";
  int rc = ExecPrepared(kStateSql, 0, nullptr, nullptr);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) Fail("reading syncline state failed");
  int64 last_op_id = FetchInt64(0, 1);
  int64 start_op_id = last_op_id;
  bool isnull;
  bool copies_waiting =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
  bool resetting =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
  std::unordered_set<std::string> definitions;
  {
    std::vector<std::string> names;
    TextsOf(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull), names);
    definitions.insert(names.begin(), names.end());
  }

  if (copy_blocks > 0 && copies_waiting) {
    std::vector<std::string> names(definitions.begin(), definitions.end());
    // The copy scans a user table and runs its rules (output functions may
    // raise): a Postgres error there comes out as a C++ exception.
    PgGuard([&] { (void)CopySnapshotChunk(names, copy_blocks, &result.more_copy); });
  }

  // Every staged op visible now, in staging order (initial-copy ops first,
  // then by staging order, chunk rows in their order), numbered after the
  // last op id: op ids therefore grow in the order ops became visible.
  std::vector<StagedOp> staged;
  StagedMarkers markers;
  Datum taken_in = 0;
  TakeStaged(definitions, staged, markers, &taken_in);
  if (resetting) AddRebuildClears(staged);
  std::vector<StagedOp *> order;
  order.reserve(staged.size());
  for (StagedOp &s : staged) order.push_back(&s);
  auto staging_order = [](const StagedOp *a, const StagedOp *b) {
    if (a->generated != b->generated) return a->generated;
    if (a->seq != b->seq) return a->seq < b->seq;
    return a->ord < b->ord;
  };
  // Usually they come in order already (one bulk transaction's chunks, or
  // rows in staging order): a linear check spares sorting a million pointers.
  if (!std::is_sorted(order.begin(), order.end(), staging_order))
    std::stable_sort(order.begin(), order.end(), staging_order);
  result.ops = static_cast<int64>(order.size());
  result.markers = markers.count;
  bool rules_changed = markers.rules_changed;
  if (!order.empty()) {
    PgGuard([&] { InsertOps(order, last_op_id + 1); });
    FoldIntoBucketState(order, last_op_id + 1, last_op_id);
  }
  last_op_id += result.ops;

  // 0.3 on: the state row records this flush's snapshot, and a client
  // batch's write checkpoint is resolved from it when asked (see
  // syncline_internal.published_write_checkpoint). 0.2's SQL has no column
  // for it: each published batch's record is stamped, one primary-key update
  // each (a join would get its generic plan while client_batches is still
  // small, a hash join over a sequential scan, and keep it as the table
  // grows). The stamping was ~40% of the flusher's time under gateway write
  // load.
  bool resolves = false;
  PgGuard([&] { resolves = ResolvesWriteCheckpoints(); });
  if (result.ops > 0 || (resolves && !markers.writes.empty())) {
    // The first op or client batch ever published creates the counter,
    // recording which database it belongs to (a restore into another one is
    // told apart).
    static std::string identity = CurrentDatabaseIdentity();
    // Every statement takes all three; 0.2's leave the snapshot out.
    Oid types[3] = {INT8OID, TEXTOID, PG_SNAPSHOTOID};
    Datum args[3] = {Int64GetDatum(last_op_id), TextDatumOf(identity), taken_in};
    // An UPDATE, not an upsert: ON CONFLICT DO UPDATE WAL-logs a row lock
    // before the update, in every flush.
    static const char *kAdvanceSql = "UPDATE syncline_internal.state SET last_op_id = $1";
    static const char *kAdvanceRecordingSql =
        "UPDATE syncline_internal.state SET last_op_id = $1, flushed_snapshot = $3";
    rc = ExecPrepared(resolves ? kAdvanceRecordingSql : kAdvanceSql, 3, types, args);
    if (rc != SPI_OK_UPDATE) Fail("updating syncline state failed");
    if (SPI_processed == 0) {
      static const char *kCreateSql =
          "INSERT INTO syncline_internal.state (singleton, last_op_id, origin) "
          "VALUES (true, $1, $2)";
      static const char *kCreateRecordingSql =
          "INSERT INTO syncline_internal.state (singleton, last_op_id, origin, flushed_snapshot) "
          "VALUES (true, $1, $2, $3)";
      rc = ExecPrepared(resolves ? kCreateRecordingSql : kCreateSql, 3, types, args);
      if (rc != SPI_OK_INSERT) Fail("creating syncline state failed");
    }
  }
  std::vector<PublishedWrite> published;
  for (const auto &w : markers.writes) published.push_back({w.second.first, w.second.second});
  if (!resolves) {
    static const char *kStampSql =
        "UPDATE syncline_internal.client_batches SET write_checkpoint = $3 "
        " WHERE client_id = $1 AND seq = $2";
    Oid stamp_types[3] = {TEXTOID, INT8OID, INT8OID};
    for (const PublishedWrite &w : published) {
      Datum stamp_args[3] = {TextDatumOf(w.client_id), Int64GetDatum(w.seq),
                             Int64GetDatum(last_op_id)};
      rc = ExecPrepared(kStampSql, 3, stamp_types, stamp_args);
      if (rc != SPI_OK_UPDATE) Fail("recording write checkpoints failed");
    }
  }

  // Definitions whose parameter queries read a table that changed.
  std::vector<std::string> changed_definitions;
  if (!markers.changed_tables.empty()) {
    static const char *kChangedSql =
        "SELECT coalesce(array_agg(DISTINCT bucket_name ORDER BY bucket_name), '{}') "
        "  FROM syncline_internal.parameter_tables WHERE relation::oid = ANY ($1::oid[])";
    Oid table_types[1] = {OIDARRAYOID};
    Datum table_args[1] = {0};
    PgGuard([&] {
      Datum *oids = static_cast<Datum *>(palloc(sizeof(Datum) * markers.changed_tables.size()));
      for (size_t i = 0; i < markers.changed_tables.size(); i++)
        oids[i] = ObjectIdGetDatum(markers.changed_tables[i]);
      table_args[0] = PointerGetDatum(construct_array(
          oids, static_cast<int>(markers.changed_tables.size()), OIDOID, 4, true, TYPALIGN_INT));
    });
    rc = ExecPrepared(kChangedSql, 1, table_types, table_args);
    if (rc != SPI_OK_SELECT || SPI_processed != 1) Fail("reading parameter tables failed");
    TextsOf(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
            changed_definitions);
  }

  if (result.ops > 0 || result.markers > 0) {
    // {"last_op_id": N, "definitions": [...], "rules_changed": bool}
    static std::string payload;
    payload.assign("{\"last_op_id\":");
    payload += std::to_string(last_op_id);
    payload += ",\"definitions\":[";
    {
      size_t list_start = payload.size();
      for (size_t i = 0; i < changed_definitions.size(); i++) {
        if (i > 0) payload.push_back(',');
        AppendJsonString(payload, changed_definitions[i]);
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
    PgGuard([&] { Async_Notify("syncline", payload.c_str()); });
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
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
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
      throw syncline::Error(
          ERRCODE_ACTIVE_SQL_TRANSACTION,
          "syncline.wait_for_initial_copy() must run in a READ COMMITTED transaction", "",
          "Its snapshot would never see the copies finish.");
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
    for (;;) {
      syncline::AsEngine([&] {
        // Each statement takes a new snapshot: it sees the worker's commits.
        int rc = SPI_execute("SELECT NOT EXISTS (SELECT FROM syncline_internal.snapshot_jobs)",
                             false, 1);
        if (rc != SPI_OK_SELECT) syncline::Fail("reading snapshot jobs failed");
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

// syncline_internal.chunk_ops(chunk): the ops of a staged chunk, in order.
SYNCLINE_FUNCTION(syncline_chunk_ops) {
  bytea *chunk = nullptr;
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  syncline::PgGuard([&] {
    chunk = PG_GETARG_BYTEA_PP(0);
    InitMaterializedSRF(fcinfo, 0);
  });
  syncline::ChunkReader reader(std::string_view(VARDATA_ANY(chunk), VARSIZE_ANY_EXHDR(chunk)));
  syncline::RowOp op;
  for (int32 ord = 1; reader.Next(op); ord++) {
    syncline::PgGuard([&] {
      Datum values[7];
      bool nulls[7] = {false, false, false, false, false, op.kind != syncline::kStagedPut, false};
      values[0] = Int32GetDatum(ord);
      values[1] = Int16GetDatum(op.kind);
      values[2] = PointerGetDatum(cstring_to_text_with_len(op.bucket.data(), op.bucket.size()));
      values[3] =
          PointerGetDatum(cstring_to_text_with_len(op.object_type.data(), op.object_type.size()));
      values[4] =
          PointerGetDatum(cstring_to_text_with_len(op.object_id.data(), op.object_id.size()));
      values[5] = nulls[5]
                      ? Datum(0)
                      : PointerGetDatum(cstring_to_text_with_len(op.data.data(), op.data.size()));
      values[6] = Int64GetDatum(op.checksum);
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
      for (int i = 2; i <= 5; i++)
        if (!nulls[i]) pfree(DatumGetPointer(values[i]));
    });
  }
  return Datum(0);
}
