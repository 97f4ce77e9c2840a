#include "op_chunk.hpp"

namespace syncline {
namespace {

constexpr char kChunkVersion = 1;

void AppendVarint(std::string &out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void AppendString(std::string &out, std::string_view s) {
  AppendVarint(out, s.size());
  out.append(s.data(), s.size());
}

}  // namespace

// Layout: version byte, then per op: kind (1 byte), checksum (4 bytes,
// little-endian), bucket, object type, object id and (PUT only) data, each
// as a varint length followed by the bytes.
void AppendToChunk(std::string &chunk, const RowOp &op) {
  if (chunk.empty()) chunk.push_back(kChunkVersion);
  chunk.push_back(static_cast<char>(op.kind));
  for (int shift = 0; shift < 32; shift += 8)
    chunk.push_back(static_cast<char>((op.checksum >> shift) & 0xff));
  AppendString(chunk, op.bucket);
  AppendString(chunk, op.object_type);
  AppendString(chunk, op.object_id);
  if (op.kind == kStagedPut) AppendString(chunk, op.data);
}

ChunkReader::ChunkReader(std::string_view chunk) : rest_(chunk) {
  if (rest_.empty() || rest_[0] != kChunkVersion)
    throw std::runtime_error("staged op chunk has an unknown version");
  rest_.remove_prefix(1);
}

uint64_t ChunkReader::ReadVarint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (rest_.empty()) throw std::runtime_error("staged op chunk is cut short");
    auto byte = static_cast<unsigned char>(rest_[0]);
    rest_.remove_prefix(1);
    v |= uint64_t(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return v;
  }
  throw std::runtime_error("staged op chunk has a malformed length");
}

std::string_view ChunkReader::ReadBytes(size_t n) {
  if (rest_.size() < n) throw std::runtime_error("staged op chunk is cut short");
  std::string_view out = rest_.substr(0, n);
  rest_.remove_prefix(n);
  return out;
}

bool ChunkReader::Next(RowOp &op) {
  if (rest_.empty()) return false;
  std::string_view head = ReadBytes(5);
  op.kind = static_cast<int16_t>(static_cast<unsigned char>(head[0]));
  if (op.kind != kStagedPut && op.kind != kStagedRemove && op.kind != kStagedClear)
    throw std::runtime_error("staged op chunk holds an unknown op kind");
  op.checksum = 0;
  for (int i = 0; i < 4; i++)
    op.checksum |= uint32_t(static_cast<unsigned char>(head[1 + i])) << (8 * i);
  op.bucket.assign(ReadBytes(ReadVarint()));
  op.object_type.assign(ReadBytes(ReadVarint()));
  op.object_id.assign(ReadBytes(ReadVarint()));
  if (op.kind == kStagedPut)
    op.data.assign(ReadBytes(ReadVarint()));
  else
    op.data.clear();
  return true;
}

}  // namespace syncline
