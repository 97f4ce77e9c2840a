#include "gateway/powersync.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "extension/json_exact.hpp"

namespace syncline::gateway::powersync {
namespace {

namespace pb = syncline::v1;
using json = nlohmann::json;

constexpr size_t kOpsPerLine = 1000;
constexpr size_t kBytesPerLine = 256 * 1024;

const char *OpName(pb::OplogEntry::Op op) {
  switch (op) {
    case pb::OplogEntry::PUT:
      return "PUT";
    case pb::OplogEntry::REMOVE:
      return "REMOVE";
    case pb::OplogEntry::MOVE:
      return "MOVE";
    case pb::OplogEntry::CLEAR:
      return "CLEAR";
    default:
      return "UNKNOWN";
  }
}

void AppendUnsigned(std::string &out, uint64_t v) {
  char buf[24];
  int n = snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(v));
  out.append(buf, static_cast<size_t>(n));
}

// "N" (an op id as PowerSync writes them: a decimal string).
void AppendOpId(std::string &out, uint64_t v) {
  out.push_back('"');
  AppendUnsigned(out, v);
  out.push_back('"');
}

// Reads a non-negative integer given as a JSON number or a decimal string.
bool ReadUnsigned(const json &v, uint64_t *out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) return false;  // negative
  if (v.is_string()) {
    const std::string &s = v.get_ref<const std::string &>();
    if (s.empty() || s.size() > 19) return false;
    for (char c : s)
      if (c < '0' || c > '9') return false;
    *out = std::strtoull(s.c_str(), nullptr, 10);
    return true;
  }
  return false;
}

}  // namespace

bool ParseStreamRequest(const std::string &body, StreamRequest *out, std::string *error) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "the request body must be a JSON object (PowerSync's StreamingSyncRequest)";
    return false;
  }
  StreamRequest r;
  if (j.contains("buckets") && !j["buckets"].is_null()) {
    if (!j["buckets"].is_array()) {
      *error = "\"buckets\" must be an array of {\"name\", \"after\"}";
      return false;
    }
    for (const auto &b : j["buckets"]) {
      uint64_t after = 0;
      if (!b.is_object() || !b.contains("name") || !b["name"].is_string() || !b.contains("after") ||
          !ReadUnsigned(b["after"], &after)) {
        *error = "each of \"buckets\" must be {\"name\": string, \"after\": decimal op id}, got " +
                 DumpForMessage(b);
        return false;
      }
      r.known[b["name"].get<std::string>()] = after;
    }
  }
  if (j.contains("client_id") && !j["client_id"].is_null()) {
    if (!j["client_id"].is_string()) {
      *error = "\"client_id\" must be a string";
      return false;
    }
    r.client_id = j["client_id"].get<std::string>();
    if (std::string problem = ClientIdProblem(r.client_id); !problem.empty()) {
      *error = "\"client_id\" " + problem;
      return false;
    }
  }
  if (j.contains("raw_data") && j["raw_data"].is_boolean() && !j["raw_data"].get<bool>()) {
    *error = "\"raw_data\": false is not served; op data is sent as JSON strings";
    return false;
  }
  *out = std::move(r);
  return true;
}

bool ParseUploadRequest(const std::string &body, UploadRequest *out, std::string *error) {
  // Numbers kept as the client wrote them (json_exact.hpp), for numeric and jsonb columns.
  json j = ParseJsonExact(body);
  if (j.is_discarded() || !j.is_object()) {
    *error = "the request body must be a JSON object {\"client_id\", \"transaction_id\", \"crud\"}";
    return false;
  }
  UploadRequest r;
  if (!j.contains("client_id") || !IsJsonText(j["client_id"]) ||
      j["client_id"].get_ref<const std::string &>().empty()) {
    *error = "\"client_id\" must be a non-empty string (await db.getClientId())";
    return false;
  }
  r.client_id = j["client_id"].get<std::string>();
  if (std::string problem = ClientIdProblem(r.client_id); !problem.empty()) {
    *error = "\"client_id\" " + problem;
    return false;
  }
  if (!j.contains("transaction_id") || !ReadUnsigned(j["transaction_id"], &r.transaction_id) ||
      r.transaction_id > kMaxWriteSeq) {
    *error = "\"transaction_id\" must be a non-negative integer (CrudTransaction.transactionId)";
    return false;
  }
  if (!j.contains("crud") || !j["crud"].is_array() || j["crud"].empty()) {
    *error = "\"crud\" must be a non-empty array of CrudEntry JSON (entry.toJSON())";
    return false;
  }
  json ops = json::array();
  size_t index = 0;
  for (const auto &e : j["crud"]) {
    std::string where = "crud[" + std::to_string(index++) + "]";
    if (!e.is_object()) {
      *error = where + " must be an object";
      return false;
    }
    std::string op = e.contains("op") && IsJsonText(e["op"]) ? e["op"].get<std::string>() : "";
    if (op != "PUT" && op != "PATCH" && op != "DELETE") {
      *error = where + ".op must be \"PUT\", \"PATCH\" or \"DELETE\"";
      return false;
    }
    if (!e.contains("type") || !IsJsonText(e["type"]) ||
        e["type"].get_ref<const std::string &>().empty()) {
      *error = where + ".type must name the table";
      return false;
    }
    if (!e.contains("id") || !IsJsonText(e["id"]) ||
        e["id"].get_ref<const std::string &>().empty()) {
      *error = where + ".id must be the row id as a non-empty string";
      return false;
    }
    // Checked before anything of the entry is copied (a copy of a deep value recurses):
    // refused under this transaction (recorded, so the SDK's queue moves on), not a 400 the
    // SDK would send again forever.
    json refusal = RefusalOf(e, op, where);
    if (!refusal.is_null()) {
      ops.push_back(std::move(refusal));
      continue;
    }
    json o = {{"op", op}, {"type", e["type"]}, {"id", e["id"]}};
    const std::string &id = e["id"].get_ref<const std::string &>();
    if (id.front() == '[') {
      // A composite key, as a JSON array text.
      json key = ParseJsonExact(id);
      if (key.is_array()) o["id"] = std::move(key);
    }
    if (op != "DELETE") {
      if (e.contains("data") && !e["data"].is_null()) {
        if (!e["data"].is_object()) {
          *error = where + ".data must be an object of column values";
          return false;
        }
        o["data"] = e["data"];
      } else {
        o["data"] = json::object();
      }
    }
    ops.push_back(std::move(o));
  }
  r.ops = ops.size();
  json batch = {{"seq", r.transaction_id}, {"allow_gaps", true}, {"ops", std::move(ops)}};
  // The app's schema version (optional): apply_writes maps writes of an older
  // version through the write handlers declared for it.
  if (j.contains("schema_version") && !j["schema_version"].is_null()) {
    const json &v = j["schema_version"];
    if (IsJsonText(v) && !v.get_ref<const std::string &>().empty() &&
        v.get_ref<const std::string &>().size() <= 64 && !JsonHoldsNul(v)) {
      batch["schema_version"] = v;
    } else if (v.is_number_integer() || v.is_number_unsigned()) {
      batch["schema_version"] = v.dump();
    } else {
      *error =
          "\"schema_version\" must be a non-empty string of at most 64 characters or an integer";
      return false;
    }
  }
  r.batch_json = DumpJsonExact(batch);
  *out = std::move(r);
  return true;
}

void AppendJsonString(std::string &out, const char *text, size_t size) {
  static const char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t run = 0;  // start of the pending run of characters that need no escape
  for (size_t i = 0; i < size; i++) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        out.append("\\u00");
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
    }
  }
  out.append(text + run, size - run);
  out.push_back('"');
}

namespace {

void AppendBucketChecksum(std::string &out, const std::string &bucket, const BucketState &st) {
  out.append("{\"bucket\":");
  AppendJsonString(out, bucket);
  out.append(",\"checksum\":");
  AppendUnsigned(out, st.checksum);
  out.append(",\"count\":");
  AppendUnsigned(out, st.count);
  out.append(",\"priority\":");
  AppendUnsigned(out, kDefaultPriority);
  out.push_back('}');
}

}  // namespace

std::string CheckpointLine(uint64_t last_op_id, uint64_t write_checkpoint,
                           const BucketMap &buckets) {
  std::string out;
  out.reserve(64 + buckets.size() * 96);
  out.append("{\"checkpoint\":{\"last_op_id\":");
  AppendOpId(out, last_op_id);
  if (write_checkpoint > 0) {
    out.append(",\"write_checkpoint\":");
    AppendOpId(out, write_checkpoint);
  }
  out.append(",\"buckets\":[");
  bool first = true;
  for (const auto &[bucket, st] : buckets) {
    if (!first) out.push_back(',');
    first = false;
    AppendBucketChecksum(out, bucket, st);
  }
  out.append("],\"streams\":[]}}\n");
  return out;
}

std::string DiffHead(uint64_t last_op_id, uint64_t write_checkpoint) {
  std::string out = "{\"checkpoint_diff\":{\"last_op_id\":";
  AppendOpId(out, last_op_id);
  if (write_checkpoint > 0) {
    out.append(",\"write_checkpoint\":");
    AppendOpId(out, write_checkpoint);
  }
  out.push_back(',');
  return out;
}

std::string DiffTail(
    const std::vector<std::pair<const std::string *, const BucketState *>> &updated,
    const std::vector<std::string> &removed) {
  std::string out = "\"updated_buckets\":[";
  bool first = true;
  for (const auto &[bucket, st] : updated) {
    if (!first) out.push_back(',');
    first = false;
    AppendBucketChecksum(out, *bucket, *st);
  }
  out.append("],\"removed_buckets\":[");
  first = true;
  for (const std::string &bucket : removed) {
    if (!first) out.push_back(',');
    first = false;
    AppendJsonString(out, bucket);
  }
  out.append("]}}\n");
  return out;
}

std::string CompleteLine(uint64_t last_op_id) {
  std::string out = "{\"checkpoint_complete\":{\"last_op_id\":";
  AppendOpId(out, last_op_id);
  out.append("}}\n");
  return out;
}

std::string KeepaliveLine(int64_t seconds) {
  return "{\"token_expires_in\":" + std::to_string(seconds < 0 ? 0 : seconds) + "}\n";
}

size_t AppendDataLines(std::string &out, const std::string &bucket, uint64_t after,
                       std::vector<pb::OplogEntry>::const_iterator begin,
                       std::vector<pb::OplogEntry>::const_iterator end, bool more_after) {
  size_t lines = 0;
  auto it = begin;
  do {
    std::string ops;
    size_t count = 0;
    uint64_t next_after = after;
    while (it != end && count < kOpsPerLine && ops.size() < kBytesPerLine) {
      const pb::OplogEntry &e = *it++;
      if (count++ > 0) ops.push_back(',');
      ops.append("{\"op_id\":");
      AppendOpId(ops, e.op_id());
      ops.append(",\"op\":\"");
      ops.append(OpName(e.op()));
      ops.push_back('"');
      if (!e.object_type().empty()) {
        ops.append(",\"object_type\":");
        AppendJsonString(ops, e.object_type());
      }
      if (!e.object_id().empty()) {
        ops.append(",\"object_id\":");
        AppendJsonString(ops, e.object_id());
      }
      ops.append(",\"checksum\":");
      AppendUnsigned(ops, e.checksum());
      if (e.op() == pb::OplogEntry::PUT) {
        ops.append(",\"data\":");
        AppendJsonString(ops, e.data());
      }
      ops.push_back('}');
      next_after = std::max(next_after, e.op_id());
    }
    out.append("{\"data\":{\"bucket\":");
    AppendJsonString(out, bucket);
    out.append(",\"after\":");
    AppendOpId(out, after);
    out.append(",\"next_after\":");
    AppendOpId(out, next_after);
    out.append(",\"has_more\":");
    out.append(it != end || more_after ? "true" : "false");
    out.append(",\"data\":[");
    out.append(ops);
    out.append("]}}\n");
    after = next_after;
    lines++;
  } while (it != end);
  return lines;
}

void AppendChunk(std::string &out, const char *payload, size_t size) {
  if (size == 0) return;  // an empty chunk would end the body
  char head[20];
  int n = snprintf(head, sizeof head, "%zx\r\n", size);
  out.append(head, static_cast<size_t>(n));
  out.append(payload, size);
  out.append("\r\n");
}

uint32_t CountLines(const std::string &text) {
  uint32_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

}  // namespace syncline::gateway::powersync
