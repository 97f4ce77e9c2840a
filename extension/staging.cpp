#include "staging.hpp"

extern "C" {
#include "access/heapam.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

#include "flush.hpp"

namespace syncline {
namespace {

Oid pending_relid = InvalidOid;
Oid pending_seq_relid = InvalidOid;
bool wake_registered = false;
bool wake_at_commit = false;

void ResetCachedOids(Datum, Oid relid) {
  if (relid == InvalidOid || relid == pending_relid || relid == pending_seq_relid) {
    pending_relid = InvalidOid;
    pending_seq_relid = InvalidOid;
  }
}

void OnTransactionEnd(XactEvent event, void *) {
  if (event == XACT_EVENT_COMMIT && wake_at_commit) WakeFlusher();
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
      event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
    wake_at_commit = false;
}

// The oids of pending and its sequence. The cache may be reset by an
// invalidation (autovacuum's stats update of pending, say) at any catalog
// access, so callers use the returned copies, never the cached globals.
void PendingOids(Oid *relid, Oid *seq_relid) {
  static bool callback_registered = false;
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(ResetCachedOids, 0);
    callback_registered = true;
  }
  Oid rel = pending_relid, seq = pending_seq_relid;
  if (!OidIsValid(rel) || !OidIsValid(seq)) {
    rel = InternalRelid("pending");
    seq = InternalRelid("pending_seq");
    pending_relid = rel;
    pending_seq_relid = seq;
  }
  *relid = rel;
  *seq_relid = seq;
}

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
  Oid relid, seq_relid;
  PendingOids(&relid, &seq_relid);
  Relation rel = table_open(relid, RowExclusiveLock);
  // Initial-copy ops sort before every staged op (negative seqs), in scan
  // order; they never outlive the flush that stages them.
  static int64 copy_seq = PG_INT64_MIN;
  for (const RowOp &op : ops) {
    int64 seq = initial_copy ? copy_seq++ : nextval_internal(seq_relid, false);
    InsertPending(rel, seq, op.kind, &op.bucket, &op.object_type, op.object_id.data(),
                  op.object_id.size(), op.data.data(), op.data.size(), op.kind == kStagedPut,
                  op.checksum, true);
  }
  table_close(rel, RowExclusiveLock);
  WakeFlusherAtCommit();
}

void StageMarker(int16 kind, const char *object_id, const char *data) {
  Oid relid, seq_relid;
  PendingOids(&relid, &seq_relid);
  Relation rel = table_open(relid, RowExclusiveLock);
  int64 seq = nextval_internal(seq_relid, false);
  InsertPending(rel, seq, kind, nullptr, nullptr, object_id, object_id ? strlen(object_id) : 0,
                data, data ? strlen(data) : 0, data != nullptr, 0, false);
  table_close(rel, RowExclusiveLock);
  WakeFlusherAtCommit();
}

}  // namespace syncline
