#include "staging.hpp"

extern "C" {
#include "access/heapam.h"
#include "catalog/namespace.h"
#include "access/xlog.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

#include <algorithm>
#include <utility>

#include "flush.hpp"

namespace syncline {
namespace {

Oid pending_relid = InvalidOid;
bool wake_registered = false;
bool wake_at_commit = false;
bool client_write_at_commit = false;

void ResetCachedOids(Datum, Oid relid) {
  if (relid == InvalidOid || relid == pending_relid) pending_relid = InvalidOid;
}

void OnTransactionEnd(XactEvent event, void *) {
  if (event == XACT_EVENT_COMMIT && client_write_at_commit) NoteClientWriteCommitted();
  if (event == XACT_EVENT_COMMIT && wake_at_commit) WakeFlusher();
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
      event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
    wake_at_commit = client_write_at_commit = false;
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

// A row of pending: one op (kind < 10), a marker (kind >= 10) or, with
// `chunk`, many ops of one transaction in order (kind kStagedChunk).
struct PendingRow {
  int64 seq = 0;
  int16 kind = 0;
  const std::string *bucket = nullptr;
  const std::string *object_type = nullptr;
  const char *object_id = nullptr;
  size_t object_id_len = 0;
  const char *data = nullptr;
  size_t data_len = 0;
  bool has_checksum = false;
  int64 checksum = 0;
  const std::string *chunk = nullptr;
};

void InsertPending(Relation rel, const PendingRow &row) {
  Datum values[8];
  bool nulls[8] = {false,
                   false,
                   row.bucket == nullptr,
                   row.object_type == nullptr,
                   row.object_id == nullptr,
                   row.data == nullptr,
                   !row.has_checksum,
                   row.chunk == nullptr};
  values[0] = Int64GetDatum(row.seq);
  values[1] = Int16GetDatum(row.kind);
  values[2] =
      row.bucket ? PointerGetDatum(cstring_to_text_with_len(row.bucket->data(), row.bucket->size()))
                 : Datum(0);
  values[3] = row.object_type ? PointerGetDatum(cstring_to_text_with_len(row.object_type->data(),
                                                                         row.object_type->size()))
                              : Datum(0);
  values[4] = row.object_id
                  ? PointerGetDatum(cstring_to_text_with_len(row.object_id, row.object_id_len))
                  : Datum(0);
  values[5] =
      row.data ? PointerGetDatum(cstring_to_text_with_len(row.data, row.data_len)) : Datum(0);
  values[6] = Int64GetDatum(row.checksum);
  values[7] = row.chunk ? PointerGetDatum(cstring_to_text_with_len(row.chunk->data(),
                                                                   row.chunk->size()))
                        : Datum(0);  // bytea and text share their varlena form
  HeapTuple tuple = heap_form_tuple(RelationGetDescr(rel), values, nulls);
  simple_heap_insert(rel, tuple);
  heap_freetuple(tuple);
  for (int i : {2, 3, 4, 5, 7})
    if (!nulls[i]) pfree(DatumGetPointer(values[i]));
}

PendingRow OpRow(int64 seq, const RowOp &op) {
  PendingRow row;
  row.seq = seq;
  row.kind = op.kind;
  row.bucket = &op.bucket;
  row.object_type = &op.object_type;
  row.object_id = op.object_id.data();
  row.object_id_len = op.object_id.size();
  if (op.kind == kStagedPut) {
    row.data = op.data.data();
    row.data_len = op.data.size();
  }
  row.has_checksum = true;
  row.checksum = op.checksum;
  return row;
}

// Ops of this transaction not staged yet, each with the subtransaction that
// made it (a subtransaction that rolls back takes its ops along).
struct BufferedOp {
  RowOp op;
  SubTransactionId subxact;
};
std::vector<BufferedOp> buffer;
size_t buffer_bytes = 0;

// A transaction's single op is staged as a row of its own; two or more go
// into chunk rows of at most kChunkOps ops / kChunkBytes bytes: one row, one
// WAL record and later one delete for them all instead of one per op (a
// transaction of four single-row INSERTs: 861 -> 760 WAL bytes per op, all
// relations and the flusher's included), and a bulk load writes large,
// compressed rows. kChunkBytes keeps a compressed chunk inside its
// heap page (the column is STORAGE MAIN): an out-of-line TOAST value costs a
// TOAST row and index entry per 2 KB. A transaction holding more than
// kBufferBytes stages what it has early.
constexpr size_t kChunkMinOps = 2;
constexpr size_t kChunkOps = 4096;
constexpr size_t kChunkBytes = 16 << 10;
constexpr size_t kBufferBytes = 8 << 20;

// Stages `ops` in order: as a chunk row each kChunkOps ops, or one row each.
// `copy_seq` (initial copies) gives them seqs that sort before every other
// staged op; otherwise the WAL insert position when each row is written.
template <typename It, typename GetOp>
void WriteOps(It begin, It end, GetOp get_op, int64 *copy_seq) {
  size_t count = static_cast<size_t>(end - begin);
  if (count == 0) return;
  Relation rel = table_open(PendingOid(), RowExclusiveLock);
  if (count < kChunkMinOps) {
    for (It it = begin; it != end; ++it)
      InsertPending(rel, OpRow(copy_seq ? (*copy_seq)++ : StagingOrder(), get_op(*it)));
  } else {
    // Static, like the trigger's scratch: a Postgres error raised below
    // (simple_heap_insert) must not longjmp over a C++ destructor.
    static std::string chunk;
    chunk.clear();
    size_t in_chunk = 0;
    auto write_chunk = [&] {
      PendingRow row;
      row.seq = copy_seq ? (*copy_seq)++ : StagingOrder();
      row.kind = kStagedChunk;
      row.chunk = &chunk;
      InsertPending(rel, row);
      chunk.clear();
      in_chunk = 0;
    };
    for (It it = begin; it != end; ++it) {
      AppendToChunk(chunk, get_op(*it));
      if (++in_chunk >= kChunkOps || chunk.size() >= kChunkBytes) write_chunk();
    }
    if (in_chunk > 0) write_chunk();
  }
  table_close(rel, RowExclusiveLock);
}

void StageBuffer() {
  WriteOps(
      buffer.begin(), buffer.end(), [](const BufferedOp &b) -> const RowOp & { return b.op; },
      nullptr);
  buffer.clear();
  buffer_bytes = 0;
}

// Stages the buffered ops when the transaction is about to commit (or be
// prepared): before its commit record, so a later transaction on the same
// rows stages its ops after them. Forgets them when it ends otherwise.
//
// Postgres calls this from C: a C++ exception (std::bad_alloc while a big
// transaction's chunks are built) must not unwind into it, where it would
// end the backend and with it every session of the cluster. It becomes an
// ERROR, which aborts this transaction like any other failure to stage.
void OnBufferTransactionEvent(XactEvent event, void *) {
  switch (event) {
    case XACT_EVENT_PRE_COMMIT:
    case XACT_EVENT_PARALLEL_PRE_COMMIT:
    case XACT_EVENT_PRE_PREPARE:
      if (!buffer.empty()) RunRaisingErrors([] { PgGuard([] { StageBuffer(); }); });
      break;
    default:
      buffer.clear();
      buffer_bytes = 0;
  }
}

// A subtransaction that commits hands its ops to its parent; one that rolls
// back drops them (its committed children's ops were handed to it).
//
// Its ops are the buffer's tail: everything buffered since it began is its
// own or a child's (children end before it does: an aborted child's ops are
// gone, a committed child's were handed to it), and what was buffered before
// belongs to its ancestors. So only that tail is visited: walking the whole
// buffer made a transaction of many subtransactions quadratic (one
// apply_writes statement of 30,000 client batches, each in a subtransaction,
// spent 18% of its time here).
void OnBufferSubtransactionEvent(SubXactEvent event, SubTransactionId subxact,
                                 SubTransactionId parent, void *) {
  if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB) return;
  size_t first = buffer.size();
  while (first > 0 && buffer[first - 1].subxact == subxact) first--;
  if (event == SUBXACT_EVENT_COMMIT_SUB) {
    for (size_t i = first; i < buffer.size(); i++) buffer[i].subxact = parent;
  } else {
    for (size_t i = first; i < buffer.size(); i++)
      buffer_bytes -=
          buffer[i].op.bucket.size() + buffer[i].op.object_id.size() + buffer[i].op.data.size();
    buffer.erase(buffer.begin() + static_cast<std::ptrdiff_t>(first), buffer.end());
  }
}

}  // namespace

Oid InternalRelid(const char *name) {
  Oid nsp = get_namespace_oid("syncline_internal", false);
  Oid relid = get_relname_relid(name, nsp);
  if (!OidIsValid(relid))
    // raises: called from C (the worker's vacuum) too; holds no C++ object
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

void StageOps(std::vector<RowOp> &ops, bool initial_copy) {
  if (ops.empty()) return;
  if (initial_copy) {
    // Initial-copy ops sort before every staged op (negative seqs), in scan
    // order; they are staged now, in the flush that publishes them.
    static int64 copy_seq = PG_INT64_MIN;
    WriteOps(
        ops.begin(), ops.end(), [](const RowOp &op) -> const RowOp & { return op; }, &copy_seq);
    return;
  }
  static bool registered = false;
  if (!registered) {
    RegisterXactCallback(OnBufferTransactionEvent, nullptr);
    RegisterSubXactCallback(OnBufferSubtransactionEvent, nullptr);
    registered = true;
  }
  SubTransactionId subxact = GetCurrentSubTransactionId();
  for (RowOp &op : ops) {
    buffer_bytes += op.bucket.size() + op.object_id.size() + op.data.size();
    buffer.push_back(BufferedOp{std::move(op), subxact});
  }
  // A big transaction stages what it has early, when every buffered op
  // belongs to the current subtransaction (staged rows roll back with it);
  // ops of an enclosing one wait until it is current again.
  if (buffer_bytes > kBufferBytes &&
      std::all_of(buffer.begin(), buffer.end(),
                  [&](const BufferedOp &b) { return b.subxact == subxact; }))
    StageBuffer();
  WakeFlusherAtCommit();
}

void StageMarker(int16 kind, const char *object_id, const char *data) {
  Relation rel = table_open(PendingOid(), RowExclusiveLock);
  PendingRow row;
  row.seq = StagingOrder();
  row.kind = kind;
  row.object_id = object_id;
  row.object_id_len = object_id ? strlen(object_id) : 0;
  row.data = data;
  row.data_len = data ? strlen(data) : 0;
  InsertPending(rel, row);
  table_close(rel, RowExclusiveLock);
  WakeFlusherAtCommit();
  if (kind == kStagedWriteMarker) client_write_at_commit = true;
}

}  // namespace syncline
