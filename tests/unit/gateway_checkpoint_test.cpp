// Parsing syncline.checkpoint()'s JSON (extension/API.md) into bucket states.
#include <gtest/gtest.h>

#include <string>

#include "gateway/checkpoint.hpp"

namespace {

using syncline::gateway::BucketMap;
using syncline::gateway::ParseCheckpointJson;

TEST(CheckpointJson, ParsesTheDocumentedShape) {
  uint64_t last = 0;
  BucketMap buckets;
  std::string error;
  ASSERT_TRUE(ParseCheckpointJson(
      R"({"last_op_id": 42, "buckets": [
            {"bucket": "by_user[\"u1\"]", "checksum": 4294967295, "count": 4, "last_op_id": 17},
            {"bucket": "global[]", "checksum": 0, "count": 0, "last_op_id": 0}]})",
      &last, &buckets, &error))
      << error;
  EXPECT_EQ(last, 42u);
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets["by_user[\"u1\"]"].checksum, 4294967295u);
  EXPECT_EQ(buckets["by_user[\"u1\"]"].count, 4u);
  EXPECT_EQ(buckets["by_user[\"u1\"]"].last_op_id, 17u);
  EXPECT_EQ(buckets["global[]"].last_op_id, 0u);
}

TEST(CheckpointJson, BucketWithoutLastOpIdIsAtTheCheckpoint) {
  uint64_t last = 0;
  BucketMap buckets;
  std::string error;
  ASSERT_TRUE(ParseCheckpointJson(
      R"({"last_op_id": 9, "buckets": [{"bucket": "b[]", "checksum": 1, "count": 1}]})", &last,
      &buckets, &error));
  EXPECT_EQ(buckets["b[]"].last_op_id, 9u);
}

TEST(CheckpointJson, BadShapesAreRefusedWithAReason) {
  const char *cases[] = {
      "not json",
      R"({"buckets": []})",
      R"({"last_op_id": 1})",
      R"({"last_op_id": 1, "buckets": [{"bucket": "b[]", "count": 1}]})",
      R"({"last_op_id": 1, "buckets": [{"bucket": "b[]", "checksum": "12", "count": 1}]})",
      R"({"last_op_id": -1, "buckets": []})",
      R"({"last_op_id": 1, "buckets": [{"bucket": "b[]", "checksum": 4294967296, "count": 1}]})",
  };
  for (const char *text : cases) {
    uint64_t last = 7;
    BucketMap buckets;
    buckets["keep[]"];
    std::string error;
    EXPECT_FALSE(ParseCheckpointJson(text, &last, &buckets, &error)) << text;
    EXPECT_NE(error.find("syncline.checkpoint()"), std::string::npos) << error;
    EXPECT_EQ(last, 7u) << "output changed on failure: " << text;
    EXPECT_EQ(buckets.count("keep[]"), 1u) << text;
  }
}

}  // namespace
