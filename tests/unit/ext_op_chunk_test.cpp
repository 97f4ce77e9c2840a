// Unit tests for the byte form in which a transaction's ops are staged.
#include <gtest/gtest.h>

#include "op_chunk.hpp"

namespace syncline {
namespace {

RowOp Op(int16_t kind, std::string bucket, std::string id, std::string data, uint32_t checksum) {
  RowOp op;
  op.kind = kind;
  op.bucket = std::move(bucket);
  op.object_type = "todos";
  op.object_id = std::move(id);
  op.data = std::move(data);
  op.checksum = checksum;
  return op;
}

TEST(OpChunk, RoundTripsOpsInOrder) {
  std::vector<RowOp> ops = {Op(kStagedPut, "by_list[\"L1\"]", "1", "{\"id\":1}", 0xdeadbeef),
                            Op(kStagedRemove, "by_list[\"L1\"]", "2", "", 7),
                            Op(kStagedPut, std::string(300, 'b'), "3", std::string(70000, 'x'), 0),
                            Op(kStagedPut, "b[]", "", "", 0xffffffff)};
  std::string chunk;
  for (const RowOp &op : ops) AppendToChunk(chunk, op);
  ChunkReader reader(chunk);
  RowOp got;
  for (const RowOp &want : ops) {
    ASSERT_TRUE(reader.Next(got));
    EXPECT_EQ(got.kind, want.kind);
    EXPECT_EQ(got.bucket, want.bucket);
    EXPECT_EQ(got.object_type, want.object_type);
    EXPECT_EQ(got.object_id, want.object_id);
    EXPECT_EQ(got.data, want.kind == kStagedPut ? want.data : "");
    EXPECT_EQ(got.checksum, want.checksum);
  }
  EXPECT_FALSE(reader.Next(got));
}

TEST(OpChunk, RefusesWhatIsNotAChunk) {
  EXPECT_THROW(ChunkReader(""), std::runtime_error);
  EXPECT_THROW(ChunkReader("\x07"), std::runtime_error);
  std::string chunk;
  AppendToChunk(chunk, Op(kStagedPut, "b[]", "1", "{}", 1));
  RowOp op;
  for (size_t cut = 2; cut < chunk.size(); cut++) {  // 1: a valid, empty chunk
    ChunkReader reader(std::string_view(chunk).substr(0, cut));
    EXPECT_THROW(reader.Next(op), std::runtime_error) << "cut at " << cut;
  }
  std::string bad_kind = chunk;
  bad_kind[1] = 9;
  ChunkReader reader(bad_kind);
  EXPECT_THROW(reader.Next(op), std::runtime_error);
}

}  // namespace
}  // namespace syncline
