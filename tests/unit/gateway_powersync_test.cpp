// PowerSync line encoding and request parsing (gateway/powersync.*).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gateway/powersync.hpp"

namespace ps = syncline::gateway::powersync;
namespace pb = syncline::v1;
using json = nlohmann::json;
using syncline::gateway::BucketMap;
using syncline::gateway::BucketState;

namespace {

pb::OplogEntry Put(uint64_t op_id, const std::string &id, const std::string &data, uint32_t sum) {
  pb::OplogEntry e;
  e.set_op_id(op_id);
  e.set_op(pb::OplogEntry::PUT);
  e.set_object_type("todos");
  e.set_object_id(id);
  e.set_data(data);
  e.set_checksum(sum);
  return e;
}

std::vector<json> Lines(const std::string &text) {
  std::vector<json> out;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    out.push_back(json::parse(text.substr(start, nl - start)));
  EXPECT_EQ(start, text.size()) << "text does not end with a newline";
  return out;
}

}  // namespace

TEST(PowerSyncLines, CheckpointHasStringOpIdsUnsignedChecksumsAndPriority) {
  BucketMap buckets;
  buckets["by_list[\"L1\"]"] = BucketState{4000000000u, 3, 7};
  auto lines = Lines(ps::CheckpointLine(42, 40, buckets));
  ASSERT_EQ(lines.size(), 1u);
  const json &cp = lines[0]["checkpoint"];
  EXPECT_EQ(cp["last_op_id"], "42");
  EXPECT_EQ(cp["write_checkpoint"], "40");
  EXPECT_EQ(cp["buckets"][0]["bucket"], "by_list[\"L1\"]");
  EXPECT_EQ(cp["buckets"][0]["checksum"], 4000000000u);
  EXPECT_EQ(cp["buckets"][0]["count"], 3);
  EXPECT_EQ(cp["buckets"][0]["priority"], 3);
  // No write checkpoint known: the member is left out.
  EXPECT_FALSE(Lines(ps::CheckpointLine(1, 0, {}))[0]["checkpoint"].contains("write_checkpoint"));
}

TEST(PowerSyncLines, DiffHeadAndTailMakeOneLine) {
  std::string bucket = "b[]";
  BucketState st{5, 1, 9};
  std::string line = ps::DiffHead(9, 8) + ps::DiffTail({{&bucket, &st}}, {"gone[]"});
  auto lines = Lines(line);
  ASSERT_EQ(lines.size(), 1u);
  const json &d = lines[0]["checkpoint_diff"];
  EXPECT_EQ(d["last_op_id"], "9");
  EXPECT_EQ(d["write_checkpoint"], "8");
  EXPECT_EQ(d["updated_buckets"][0]["checksum"], 5);
  EXPECT_EQ(d["removed_buckets"], json::array({"gone[]"}));
  EXPECT_EQ(
      Lines(ps::DiffHead(3, 0) + ps::DiffTail({}, {}))[0]["checkpoint_diff"]["updated_buckets"],
      json::array());
}

TEST(PowerSyncLines, DataLinesCarryRawJsonStringsAndSplitAt1000Ops) {
  std::vector<pb::OplogEntry> ops;
  for (uint64_t i = 1; i <= 1500; i++)
    ops.push_back(Put(i, "id" + std::to_string(i), "{\"t\":\"a\\\"b\\n\"}", 0xfffffff0u + (i & 1)));
  pb::OplogEntry rm;
  rm.set_op_id(1501);
  rm.set_op(pb::OplogEntry::REMOVE);
  rm.set_object_type("todos");
  rm.set_object_id("id1");
  rm.set_checksum(7);
  ops.push_back(rm);
  std::string text;
  EXPECT_EQ(ps::AppendDataLines(text, "b[]", 10, ops.begin(), ops.end(), true), 2u);
  auto lines = Lines(text);
  ASSERT_EQ(lines.size(), 2u);
  const json &first = lines[0]["data"];
  EXPECT_EQ(first["after"], "10");
  EXPECT_EQ(first["next_after"], "1000");
  EXPECT_EQ(first["has_more"], true);
  EXPECT_EQ(first["data"].size(), 1000u);
  EXPECT_EQ(first["data"][0]["op_id"], "1");
  EXPECT_EQ(first["data"][0]["data"], "{\"t\":\"a\\\"b\\n\"}");  // the row's JSON, as a string
  EXPECT_EQ(json::parse(first["data"][0]["data"].get<std::string>())["t"], "a\"b\n");
  const json &second = lines[1]["data"];
  EXPECT_EQ(second["after"], "1000");
  EXPECT_EQ(second["next_after"], "1501");
  EXPECT_EQ(second["has_more"], true);  // more_after
  EXPECT_EQ(second["data"].back()["op"], "REMOVE");
  EXPECT_FALSE(second["data"].back().contains("data"));
}

TEST(PowerSyncLines, CompleteAndKeepalive) {
  EXPECT_EQ(ps::CompleteLine(12), "{\"checkpoint_complete\":{\"last_op_id\":\"12\"}}\n");
  EXPECT_EQ(ps::KeepaliveLine(20), "{\"token_expires_in\":20}\n");
  EXPECT_EQ(ps::KeepaliveLine(-5), "{\"token_expires_in\":0}\n");
}

TEST(PowerSyncLines, ChunkFraming) {
  std::string out;
  ps::AppendChunk(out, std::string(26, 'x'));
  EXPECT_EQ(out, "1a\r\n" + std::string(26, 'x') + "\r\n");
  ps::AppendChunk(out, "");  // never an empty chunk: it would end the body
  EXPECT_EQ(out.size(), 4u + 26 + 2);
  EXPECT_EQ(ps::CountLines("a\nb\n"), 2u);
}

TEST(PowerSyncRequests, StreamRequestTakesAfterAsStringOrNumber) {
  ps::StreamRequest r;
  std::string error;
  ASSERT_TRUE(ps::ParseStreamRequest(
      R"({"buckets":[{"name":"a[]","after":"17"},{"name":"b[]","after":3}],"include_checksum":true,
          "raw_data":true,"binary_data":true,"client_id":"c1","parameters":{},
          "streams":{"include_defaults":true,"subscriptions":[]},"app_metadata":{}})",
      &r, &error))
      << error;
  EXPECT_EQ(r.known.at("a[]"), 17u);
  EXPECT_EQ(r.known.at("b[]"), 3u);
  EXPECT_EQ(r.client_id, "c1");
  EXPECT_FALSE(ps::ParseStreamRequest(R"({"buckets":[{"name":"a","after":"-1"}]})", &r, &error));
  EXPECT_NE(error.find("after"), std::string::npos);
  EXPECT_FALSE(ps::ParseStreamRequest("[1]", &r, &error));
  EXPECT_FALSE(ps::ParseStreamRequest(R"({"raw_data":false})", &r, &error));
}

TEST(PowerSyncRequests, UploadBecomesABatchWithGapsAllowed) {
  ps::UploadRequest u;
  std::string error;
  ASSERT_TRUE(ps::ParseUploadRequest(
      R"({"client_id":"c1","transaction_id":5,"crud":[
          {"op_id":1,"op":"PUT","type":"todos","id":"t1","tx_id":5,"data":{"title":"x"}},
          {"op_id":2,"op":"PATCH","type":"todos","id":"[\"a\",1]","data":{"done":1}},
          {"op_id":3,"op":"DELETE","type":"todos","id":"t2","old":{"title":"y"}}]})",
      &u, &error))
      << error;
  EXPECT_EQ(u.client_id, "c1");
  EXPECT_EQ(u.transaction_id, 5u);
  json batch = json::parse(u.batch_json);
  EXPECT_EQ(batch["seq"], 5);
  EXPECT_EQ(batch["allow_gaps"], true);
  EXPECT_EQ(batch["ops"][0],
            json::parse(R"({"op":"PUT","type":"todos","id":"t1","data":{"title":"x"}})"));
  EXPECT_EQ(batch["ops"][1]["id"], json::parse(R"(["a",1])"));  // composite key
  EXPECT_FALSE(batch["ops"][2].contains("data"));
  EXPECT_FALSE(batch.contains("schema_version"));
  ASSERT_TRUE(ps::ParseUploadRequest(
      R"({"client_id":"c1","transaction_id":6,"schema_version":"2",
          "crud":[{"op":"DELETE","type":"todos","id":"t1"}]})",
      &u, &error))
      << error;
  EXPECT_EQ(json::parse(u.batch_json)["schema_version"], "2");
  ASSERT_TRUE(ps::ParseUploadRequest(
      R"({"client_id":"c1","transaction_id":7,"schema_version":3,
          "crud":[{"op":"DELETE","type":"todos","id":"t1"}]})",
      &u, &error))
      << error;
  EXPECT_EQ(json::parse(u.batch_json)["schema_version"], "3");
  for (
      const char *bad :
      {"{}", R"({"client_id":"","transaction_id":1,"crud":[{"op":"PUT","type":"t","id":"1"}]})",
       R"({"client_id":"c","transaction_id":1.5,"crud":[{"op":"PUT","type":"t","id":"1"}]})",
       R"({"client_id":"c","transaction_id":1,"crud":[{"op":"MERGE","type":"t","id":"1"}]})",
       R"({"client_id":"c","transaction_id":1,"crud":[{"op":"PUT","type":"t","id":1}]})",
       R"({"client_id":"c","transaction_id":1,"schema_version":[1],"crud":[{"op":"DELETE","type":"t","id":"1"}]})",
       R"({"client_id":"c","transaction_id":1,"schema_version":"","crud":[{"op":"DELETE","type":"t","id":"1"}]})",
       R"({"client_id":"c\u0000d","transaction_id":1,"crud":[{"op":"DELETE","type":"t","id":"1"}]})",
       R"({"client_id":"c","transaction_id":1,"schema_version":"a\u0000","crud":[{"op":"DELETE","type":"t","id":"1"}]})",
       // Numbers kept as text (json_exact.hpp) are still no strings.
       R"({"client_id":1.5,"transaction_id":1,"crud":[{"op":"PUT","type":"t","id":"1"}]})",
       R"({"client_id":"c","transaction_id":1,"crud":[{"op":"PUT","type":2.5,"id":"1"}]})",
       R"({"client_id":"c","transaction_id":1,"crud":[{"op":"PUT","type":"t","id":1.5}]})",
       R"({"client_id":"c","transaction_id":1,"schema_version":1.5,"crud":[{"op":"DELETE","type":"t","id":"1"}]})",
       // Past a double's range: the JSON parser refuses it.
       R"({"client_id":"c","transaction_id":1,"crud":[{"op":"PUT","type":"t","id":"1","data":{"n":1e400}}]})"}) {
    EXPECT_FALSE(ps::ParseUploadRequest(bad, &u, &error)) << bad;
    EXPECT_FALSE(error.empty());
  }
}

// Numbers in an entry's data reach apply_writes as the client wrote them, not through a double.
TEST(PowerSyncRequests, UploadKeepsNumbersAsWritten) {
  ps::UploadRequest u;
  std::string error;
  ASSERT_TRUE(ps::ParseUploadRequest(
      R"({"client_id":"c1","transaction_id":1,"crud":[{"op":"PUT","type":"t","id":"1",
          "data":{"amount":12345678901234567.891,"price":1.10,"n":[0.10,7],"big":123456789012345678901234567890}}]})",
      &u, &error))
      << error;
  EXPECT_NE(
      u.batch_json.find(
          R"("data":{"amount":12345678901234567.891,"big":123456789012345678901234567890,"n":[0.10,7],"price":1.10})"),
      std::string::npos)
      << u.batch_json;
}

// U+0000 cannot be stored in PostgreSQL text or jsonb: sent as is, the whole apply_writes
// statement would fail and the SDK would upload the transaction again forever. The entry goes
// as an op that names why, and apply_writes records the rejection under the transaction.
TEST(PowerSyncRequests, NulInAnEntryBecomesARefusedOp) {
  EXPECT_FALSE(syncline::gateway::JsonHoldsNul(json::parse(R"({"a":["b",{"c":1}],"d":null})")));
  EXPECT_TRUE(syncline::gateway::JsonHoldsNul(json::parse(R"({"a":["b",{"c":"x\u0000"}]})")));
  EXPECT_TRUE(syncline::gateway::JsonHoldsNul(json::parse(R"({"a\u0000":1})")));
  EXPECT_TRUE(syncline::gateway::JsonHoldsNul(json(std::string("\0", 1))));
  ps::UploadRequest u;
  std::string error;
  ASSERT_TRUE(ps::ParseUploadRequest(
      R"({"client_id":"c1","transaction_id":9,"crud":[
          {"op":"PUT","type":"todos","id":"t1","data":{"title":"ok"}},
          {"op":"PATCH","type":"todos","id":"t2","data":{"title":"a\u0000b"}},
          {"op":"DELETE","type":"todos","id":"t\u00003"}]})",
      &u, &error))
      << error;
  EXPECT_EQ(u.batch_json.find("\\u0000"), std::string::npos) << u.batch_json;
  json batch = json::parse(u.batch_json);
  EXPECT_FALSE(batch["ops"][0].contains("refused"));
  EXPECT_EQ(batch["ops"][1]["op"], "PATCH");
  EXPECT_NE(batch["ops"][1]["refused"].get<std::string>().find("crud[1] holds U+0000"),
            std::string::npos);
  EXPECT_FALSE(batch["ops"][1].contains("data"));
  EXPECT_NE(batch["ops"][2]["refused"].get<std::string>().find("crud[2]"), std::string::npos);
}

// A value nested 100,000 deep parses (nlohmann's parser is iterative) but its copy and dump
// recurse and overflow the stack: the scan walks it without recursion, and an /upload entry
// holding one is refused under its transaction (54001) before anything copies it.
TEST(PowerSyncRequests, DeepValuesAreScannedWithoutRecursionAndRefused) {
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  json value = json::parse(deep);
  syncline::gateway::JsonScan scan = syncline::gateway::ScanJson(value);
  EXPECT_EQ(scan.depth, syncline::gateway::kMaxClientJsonDepth + 1);
  EXPECT_EQ(syncline::gateway::ScanJson(json::parse(R"({"a":[1,{"b":[]}]})")).depth, 4u);
  EXPECT_EQ(syncline::gateway::ScanJson(json(1)).depth, 1u);
  EXPECT_NE(syncline::gateway::DumpForMessage(value).find("nested more than 100"),
            std::string::npos);
  EXPECT_EQ(syncline::gateway::DumpForMessage(json::parse(R"({"a":1})")), R"({"a":1})");
  std::string at_limit = std::string(99, '[') + "1" + std::string(99, ']');  // 100 levels
  EXPECT_TRUE(syncline::gateway::RefusalOf(json::parse(at_limit), "PUT", "data").is_null());
  json over = syncline::gateway::RefusalOf(json::parse("[" + at_limit + "]"), "PUT", "data");
  EXPECT_EQ(over["code"], "54001");
  ps::UploadRequest u;
  std::string error;
  ASSERT_TRUE(ps::ParseUploadRequest(
      R"({"client_id":"c1","transaction_id":9,"crud":[
          {"op":"PUT","type":"todos","id":"t1","data":{"title":"ok"}},
          {"op":"PUT","type":"todos","id":"t2","data":{"title":)" +
          deep + "}}]}",
      &u, &error))
      << error;
  json batch = json::parse(u.batch_json);
  EXPECT_FALSE(batch["ops"][0].contains("refused"));
  EXPECT_EQ(batch["ops"][1]["code"], "54001");
  EXPECT_NE(batch["ops"][1]["refused"].get<std::string>().find("crud[1] is nested more than"),
            std::string::npos);
  // A stream request's error names a deep value by its depth, not by dumping it.
  ps::StreamRequest r;
  EXPECT_FALSE(ps::ParseStreamRequest(R"({"buckets":[)" + deep + "]}", &r, &error));
  EXPECT_NE(error.find("nested more than"), std::string::npos) << error.substr(0, 200);
}
