// Unit tests for op checksums and ids: every gateway and client must agree.
#include <gtest/gtest.h>

#include "checksum.hpp"

namespace syncline {
namespace {

TEST(Checksum, IsTheFirstFourBytesOfSha256) {
  // Expected values computed independently: printf "put.todos.1.{}" | sha256sum
  EXPECT_EQ(PutChecksum("todos", "1", "{}"), 0xf25c95d1u);
  EXPECT_EQ(RemoveChecksum("todos", "1"), 0x878142e4u);
}

TEST(Checksum, DiffersWhenAnyPartDiffers) {
  uint32_t base = PutChecksum("todos", "1", "{\"a\":1}");
  EXPECT_NE(base, PutChecksum("todos", "2", "{\"a\":1}"));
  EXPECT_NE(base, PutChecksum("lists", "1", "{\"a\":1}"));
  EXPECT_NE(base, PutChecksum("todos", "1", "{\"a\":2}"));
  EXPECT_NE(base, RemoveChecksum("todos", "1"));
}

TEST(Checksum, BucketSumWraps) {
  EXPECT_EQ(AddChecksums(0xffffffffu, 2u), 1u);
  EXPECT_EQ(AddChecksums(0x80000000u, 0x80000000u), 0u);
}

TEST(Ids, BucketIdsAreNamePlusJsonArray) {
  EXPECT_EQ(BucketId("global", {}), "global[]");
  EXPECT_EQ(BucketId("by_list", {"\"L1\""}), "by_list[\"L1\"]");
  EXPECT_EQ(BucketId("by_pair", {"1", "\"x\""}), "by_pair[1,\"x\"]");
}

TEST(Ids, CompositeKeysAreUnambiguous) {
  EXPECT_EQ(ObjectIdFromJsonParts({"\"a\""}, {"a"}), "a");
  EXPECT_EQ(ObjectIdFromJsonParts({"1", "\"a,b\""}, {"1", "a,b"}), "[1,\"a,b\"]");
  EXPECT_NE(ObjectIdFromJsonParts({"\"a\"", "\"b,c\""}, {"a", "b,c"}),
            ObjectIdFromJsonParts({"\"a,b\"", "\"c\""}, {"a,b", "c"}));
}

}  // namespace
}  // namespace syncline
