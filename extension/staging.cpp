#include "staging.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/xact.h"
#include "storage/buffile.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "catalog/namespace.h"
#include "access/xlog.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

#include <algorithm>
#include <stdexcept>
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

// This transaction's ops, numbered from 0 in the order they were made, go
// three places before its commit stages the rest:
//   [0, staged_upto)            staged early (rows of pending, written in the
//                               subtransaction that was current then);
//   [staged_upto, spilled_upto) spilled to a temporary file, oldest first;
//   [spilled_upto, ...)         in `buffer`.
// A subtransaction's ops are the tail that begins where it began (what was
// made since is its own or a released child's; an aborted child's ops are
// gone), so its rollback cuts the sequence back to that position, and its
// release changes nothing. `marks` holds where each open subtransaction began.
std::vector<RowOp> buffer;
size_t buffer_bytes = 0;
int64 staged_upto = 0;
int64 spilled_upto = 0;

struct SubxactMark {
  SubTransactionId subxact;
  int64 pos;           // ops made before it began
  int64 spill_offset;  // where op `pos` begins in the spill file, once spilled
};
std::vector<SubxactMark> marks;

// Records of [uint32 length][a chunk of one op], `spill_bytes` of them valid
// (a rollback into the file moves the end back; later records overwrite).
BufFile *spill = nullptr;
int64 spill_bytes = 0;

int64 OpsMade() { return spilled_upto + static_cast<int64>(buffer.size()); }

// What an op counts for against kBufferBytes.
size_t BufferedBytes(const RowOp &op) {
  return op.bucket.size() + op.object_id.size() + op.data.size();
}

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

// Appends the buffered ops to the spill file and empties the buffer: a
// transaction whose ops cannot be staged yet (an enclosing subtransaction made
// some) keeps at most kBufferBytes of them in memory. (A PL/pgSQL loop with an
// exception block per row held every op in memory until its commit: ~300 MB
// per million rows.) Postgres calls: use in PgGuard.
void SpillBuffer() {
  if (spill == nullptr) {
    // The transaction's own resource owner and memory: a file made under a
    // subtransaction's owner would be closed when that one ends.
    ResourceOwner owner = CurrentResourceOwner;
    MemoryContext context = MemoryContextSwitchTo(TopTransactionContext);
    CurrentResourceOwner = TopTransactionResourceOwner;
    spill = BufFileCreateTemp(false);
    CurrentResourceOwner = owner;
    MemoryContextSwitchTo(context);
    spill_bytes = 0;
  }
  if (BufFileSeek(spill, 0, static_cast<off_t>(spill_bytes), SEEK_SET) != 0)
    Fail("could not seek in Syncline's spill file");
  static std::string record;  // static: a Postgres error below must not skip a destructor
  size_t mark = 0;
  while (mark < marks.size() && marks[mark].pos < spilled_upto) mark++;
  for (size_t i = 0; i < buffer.size(); i++) {
    int64 pos = spilled_upto + static_cast<int64>(i);
    for (; mark < marks.size() && marks[mark].pos == pos; mark++)
      marks[mark].spill_offset = spill_bytes;
    record.clear();
    AppendToChunk(record, buffer[i]);  // a chunk of one op
    uint32 length = static_cast<uint32>(record.size());
    BufFileWrite(spill, &length, 4);
    BufFileWrite(spill, record.data(), record.size());
    spill_bytes += 4;
    spill_bytes += static_cast<int64>(record.size());
  }
  for (; mark < marks.size(); mark++) marks[mark].spill_offset = spill_bytes;  // began at the end
  spilled_upto = OpsMade();
  buffer.clear();
  buffer_bytes = 0;
}

// Stages every op not staged yet, in order: the spill file's, then the
// buffer's. Postgres calls: use in PgGuard.
void StageBuffer() {
  if (spill != nullptr && spill_bytes > 0) {
    if (BufFileSeek(spill, 0, 0, SEEK_SET) != 0) Fail("could not seek in Syncline's spill file");
    static std::string record;
    static std::vector<RowOp> batch;
    batch.clear();
    auto write_batch = [] {
      WriteOps(
          batch.begin(), batch.end(), [](const RowOp &op) -> const RowOp & { return op; }, nullptr);
      batch.clear();
    };
    for (int64 read = 0; read < spill_bytes;) {
      uint32 length;
      if (BufFileRead(spill, &length, 4) != 4 || read + 4 + int64(length) > spill_bytes)
        throw std::runtime_error("Syncline's spill file is cut short");
      record.resize(length);
      if (BufFileRead(spill, record.data(), length) != length)
        throw std::runtime_error("Syncline's spill file is cut short");
      read += 4 + static_cast<int64>(length);
      batch.emplace_back();
      ChunkReader reader(record);
      if (!reader.Next(batch.back())) throw std::runtime_error("empty record in the spill file");
      if (batch.size() >= kChunkOps) write_batch();
    }
    write_batch();
    batch.shrink_to_fit();
  }
  WriteOps(
      buffer.begin(), buffer.end(), [](const RowOp &op) -> const RowOp & { return op; }, nullptr);
  staged_upto = spilled_upto = OpsMade();
  buffer.clear();
  buffer_bytes = 0;
  spill_bytes = 0;
  for (SubxactMark &m : marks)
    if (m.pos >= staged_upto) m.spill_offset = 0;
}

void ForgetBuffer() {
  buffer.clear();
  buffer_bytes = 0;
  staged_upto = spilled_upto = 0;
  spill_bytes = 0;
  marks.clear();
  if (spill != nullptr) {
    BufFileClose(spill);
    spill = nullptr;
  }
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
      if (OpsMade() > staged_upto) RunRaisingErrors([] { PgGuard([] { StageBuffer(); }); });
      break;
    default:
      // The spill file is still open here (temporary files close after the
      // callbacks), and closing it frees nothing a later step needs.
      ForgetBuffer();
  }
}

// Where each subtransaction began; a rollback cuts this transaction's ops
// back to there (staged rows it wrote roll back with it). Called from C: no
// exception may leave it (push_back's bad_alloc becomes an ERROR).
void OnBufferSubtransactionEvent(SubXactEvent event, SubTransactionId subxact, SubTransactionId,
                                 void *) {
  if (event == SUBXACT_EVENT_START_SUB) {
    RunRaisingErrors([&] { marks.push_back(SubxactMark{subxact, OpsMade(), -1}); });
    return;
  }
  if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB) return;
  size_t at = marks.size();
  while (at > 0 && marks[at - 1].subxact != subxact) at--;
  // Not found: it began before this backend first buffered an op, so every
  // op made since is its own.
  SubxactMark mark = at > 0 ? marks[at - 1] : SubxactMark{subxact, 0, 0};
  marks.resize(at > 0 ? at - 1 : 0);
  if (event == SUBXACT_EVENT_COMMIT_SUB) return;
  int64 pos = mark.pos;
  if (pos >= spilled_upto) {
    size_t keep = static_cast<size_t>(pos - spilled_upto);
    for (size_t i = keep; i < buffer.size(); i++) buffer_bytes -= BufferedBytes(buffer[i]);
    if (keep < buffer.size())
      buffer.erase(buffer.begin() + static_cast<std::ptrdiff_t>(keep), buffer.end());
    return;
  }
  buffer.clear();
  buffer_bytes = 0;
  if (pos >= staged_upto) {
    // Set when op `pos` was spilled (SpillBuffer gives every mark at or past the spilled
    // range's start its offset).
    Assert(mark.spill_offset >= 0);
    spilled_upto = pos;
    spill_bytes = mark.spill_offset;
  } else {
    staged_upto = spilled_upto = pos;
    spill_bytes = 0;
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
  for (RowOp &op : ops) {
    buffer_bytes += BufferedBytes(op);
    buffer.push_back(std::move(op));
  }
  // A big transaction stages what it has early when every op not staged yet
  // is the current subtransaction's (staged rows roll back with it). When an
  // enclosing one made some, they wait until it is current again, and the
  // buffer goes to the spill file meanwhile.
  if (buffer_bytes > kBufferBytes) {
    int64 current_began = marks.empty() ? 0 : marks.back().pos;
    if (current_began <= staged_upto) {
      StageBuffer();
    } else {
      SpillBuffer();
    }
  }
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
