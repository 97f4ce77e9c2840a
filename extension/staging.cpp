#include "staging.hpp"

extern "C" {
#include "access/heapam.h"
#include "catalog/namespace.h"
#include "access/xlog.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

#include "flush.hpp"

namespace syncline {
namespace {

Oid pending_relid = InvalidOid;
bool wake_registered = false;
bool wake_at_commit = false;

void ResetCachedOids(Datum, Oid relid) {
  if (relid == InvalidOid || relid == pending_relid) pending_relid = InvalidOid;
}

void OnTransactionEnd(XactEvent event, void *) {
  if (event == XACT_EVENT_COMMIT && wake_at_commit) WakeFlusher();
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
      event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
    wake_at_commit = false;
}

// The oid of pending. The cache may be reset by an invalidation
// (autovacuum's stats update of pending, say) at any catalog access, so
// callers use the returned copy, never the cached global.
Oid PendingOid() {
  static bool callback_registered = false;
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(ResetCachedOids, 0);
    callback_registered = true;
  }
  Oid rel = pending_relid;
  if (!OidIsValid(rel)) {
    rel = InternalRelid("pending");
    pending_relid = rel;
  }
  return rel;
}

// The order of a staged op among all others: the WAL insert position when it
// is staged. Ops of one row in two transactions are ordered by the row lock:
// the second is staged after the first transaction's commit record, so it
// gets a later position; within a transaction every staged row's own WAL
// record moves the position on. Unlike a sequence it takes no buffer lock and
// writes no WAL, and it keeps growing across restarts.
int64 StagingOrder() { return static_cast<int64>(GetXLogInsertRecPtr()); }

void InsertPending(Relation rel, int64 seq, int16 kind, const std::string *bucket,
                   const std::string *object_type, const char *object_id, size_t object_id_len,
                   const char *data, size_t data_len, bool has_data, int64 checksum,
                   bool has_checksum) {
  Datum values[7];
  bool nulls[7] = {
      false,     false,        bucket == nullptr, object_type == nullptr, object_id == nullptr,
      !has_data, !has_checksum};
  values[0] = Int64GetDatum(seq);
  values[1] = Int16GetDatum(kind);
  values[2] =
      bucket ? PointerGetDatum(cstring_to_text_with_len(bucket->data(), bucket->size())) : Datum(0);
  values[3] =
      object_type
          ? PointerGetDatum(cstring_to_text_with_len(object_type->data(), object_type->size()))
          : Datum(0);
  values[4] =
      object_id ? PointerGetDatum(cstring_to_text_with_len(object_id, object_id_len)) : Datum(0);
  values[5] = has_data ? PointerGetDatum(cstring_to_text_with_len(data, data_len)) : Datum(0);
  values[6] = Int64GetDatum(checksum);
  HeapTuple tuple = heap_form_tuple(RelationGetDescr(rel), values, nulls);
  simple_heap_insert(rel, tuple);
  heap_freetuple(tuple);
  for (int i = 2; i <= 5; i++)
    if (!nulls[i]) pfree(DatumGetPointer(values[i]));
}

}  // namespace

Oid InternalRelid(const char *name) {
  Oid nsp = get_namespace_oid("syncline_internal", false);
  Oid relid = get_relname_relid(name, nsp);
  if (!OidIsValid(relid))
    ereport(ERROR,
            (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("syncline_internal.%s is missing", name),
             errhint("Reinstall the extension: DROP EXTENSION syncline; CREATE EXTENSION "
                     "syncline.")));
  return relid;
}

void WakeFlusherAtCommit() {
  if (!wake_registered) {
    RegisterXactCallback(OnTransactionEnd, nullptr);
    wake_registered = true;
  }
  wake_at_commit = true;
}

void StageOps(const std::vector<RowOp> &ops, bool initial_copy) {
  if (ops.empty()) return;
  Relation rel = table_open(PendingOid(), RowExclusiveLock);
  // Initial-copy ops sort before every staged op (negative seqs), in scan
  // order; they never outlive the flush that stages them.
  static int64 copy_seq = PG_INT64_MIN;
  for (const RowOp &op : ops) {
    int64 seq = initial_copy ? copy_seq++ : StagingOrder();
    InsertPending(rel, seq, op.kind, &op.bucket, &op.object_type, op.object_id.data(),
                  op.object_id.size(), op.data.data(), op.data.size(), op.kind == kStagedPut,
                  op.checksum, true);
  }
  table_close(rel, RowExclusiveLock);
  WakeFlusherAtCommit();
}

void StageMarker(int16 kind, const char *object_id, const char *data) {
  Relation rel = table_open(PendingOid(), RowExclusiveLock);
  int64 seq = StagingOrder();
  InsertPending(rel, seq, kind, nullptr, nullptr, object_id, object_id ? strlen(object_id) : 0,
                data, data ? strlen(data) : 0, data != nullptr, 0, false);
  table_close(rel, RowExclusiveLock);
  WakeFlusherAtCommit();
}

}  // namespace syncline
