// Ops as the row triggers produce them, and the compact byte form in which
// a transaction's ops are staged many to a row. No Postgres header here: this
// file is linked into the GoogleTest binary.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace syncline {

// Kinds of rows in syncline_internal.pending.
enum StagedKind : int16_t {
  kStagedPut = 1,
  kStagedRemove = 2,
  kStagedClear = 4,
  kStagedParameterChange = 10,  // object_id: oid of a table read by parameter queries
  kStagedWriteMarker = 11,      // object_id: client id, data: batch seq
  kStagedRulesChanged = 12,
  kStagedChunk = 20,  // chunk: many ops of one transaction, in order (see AppendToChunk)
};

// One op a row change produces for one bucket instance.
struct RowOp {
  int16_t kind = kStagedPut;
  std::string bucket;
  std::string object_type;
  std::string object_id;
  std::string data;  // PUT only
  uint32_t checksum = 0;
};

// Appends `op` to a chunk (a version byte first when the chunk is empty).
void AppendToChunk(std::string &chunk, const RowOp &op);

// Reads the ops of a chunk in order, calling `fn(const RowOp &)` for each.
// Throws std::runtime_error on bytes that are not a chunk.
class ChunkReader {
 public:
  explicit ChunkReader(std::string_view chunk);
  // Reads the next op into `op`; false at the end.
  bool Next(RowOp &op);

 private:
  uint64_t ReadVarint();
  std::string_view ReadBytes(size_t n);
  std::string_view rest_;
};

}  // namespace syncline
