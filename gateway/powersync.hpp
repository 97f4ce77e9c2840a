// PowerSync's sync protocol, as the official PowerSync client SDKs speak it: the NDJSON lines of
// POST /sync/stream, the request bodies of /sync/stream and /upload, and HTTP/1.1 chunk framing.
// Pure C++ (no libwebsockets, no libpq), so the unit tests link it.
//
// What the lines look like and why (read in PowerSync's sources):
//  - op ids and last_op_id are decimal strings; checksums are JSON numbers, unsigned 32-bit here
//    (the SDK's sync client accepts signed and unsigned);
//  - op data is the row's JSON as a string (the SDK asks for raw_data);
//  - every checkpoint / checkpoint_diff line carries the client's newest write checkpoint the
//    checkpoint includes, and never a lower one than before: the SDK stores the value of each
//    complete checkpoint as the one it has seen, and publishes downloaded rows only once that
//    reaches the value /write-checkpoint2.json gave it after an upload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gateway/checkpoint.hpp"
#include "gateway/pg_text.hpp"
#include "proto/syncline.pb.h"

namespace syncline::gateway::powersync {

// The priority every Syncline bucket has (PowerSync's default, the lowest).
constexpr int kDefaultPriority = 3;
// Keepalive lines ({"token_expires_in": s}) go out this often, as PowerSync's service does.
constexpr double kKeepaliveSeconds = 20;
// token_expires_in sent for a token without "exp".
constexpr int64_t kNoExpirySeconds = 86400;

// What a POST /sync/stream body asks for.
struct StreamRequest {
  std::map<std::string, uint64_t> known;  // bucket -> op id the client has (its "after")
  std::string client_id;                  // may be empty
};

// Parses a /sync/stream body; false with *error saying what is wrong.
bool ParseStreamRequest(const std::string &body, StreamRequest *out, std::string *error);

// What a POST /upload body holds, turned into syncline.apply_writes' batch.
struct UploadRequest {
  std::string client_id;
  uint64_t transaction_id = 0;
  std::string batch_json;  // {"seq": transaction_id, "allow_gaps": true, "ops": [...]}
  size_t ops = 0;
};

// Parses an /upload body ({"client_id", "transaction_id", "crud": [CrudEntry JSON...],
// "schema_version"?: the app's schema version, passed to apply_writes}); false
// with *error naming the bad member.
bool ParseUploadRequest(const std::string &body, UploadRequest *out, std::string *error);

// Appends `text` as a JSON string literal (quotes included).
void AppendJsonString(std::string &out, const char *text, size_t size);
inline void AppendJsonString(std::string &out, const std::string &text) {
  AppendJsonString(out, text.data(), text.size());
}

// {"checkpoint":{...}}\n for a full checkpoint: every bucket the client may hold.
std::string CheckpointLine(uint64_t last_op_id, uint64_t write_checkpoint,
                           const BucketMap &buckets);

// A checkpoint_diff line in two parts, so that the part shared by every client holding the same
// buckets is built once: DiffHead() + DiffTail() is the line.
std::string DiffHead(uint64_t last_op_id, uint64_t write_checkpoint);
std::string DiffTail(
    const std::vector<std::pair<const std::string *, const BucketState *>> &updated,
    const std::vector<std::string> &removed);

// {"checkpoint_complete":{"last_op_id":"N"}}\n
std::string CompleteLine(uint64_t last_op_id);

// {"token_expires_in":N}\n
std::string KeepaliveLine(int64_t seconds);

// Appends the data lines for ops [begin, end) of one bucket, at most 1,000 ops / ~256 KiB per
// line; `after` is the op id the client had before the first of them; the last line has
// has_more = more_after. Returns how many lines it appended (at least one).
size_t AppendDataLines(std::string &out, const std::string &bucket, uint64_t after,
                       std::vector<syncline::v1::OplogEntry>::const_iterator begin,
                       std::vector<syncline::v1::OplogEntry>::const_iterator end, bool more_after);

// HTTP/1.1 chunked transfer coding (RFC 9112 7.1): appends `payload` as one chunk.
void AppendChunk(std::string &out, const char *payload, size_t size);
inline void AppendChunk(std::string &out, const std::string &payload) {
  AppendChunk(out, payload.data(), payload.size());
}
// The last chunk, which ends the body.
constexpr const char kLastChunk[] = "0\r\n\r\n";

// Counts the '\n'-terminated lines in `text` (the messages a chunk holds).
uint32_t CountLines(const std::string &text);

}  // namespace syncline::gateway::powersync
