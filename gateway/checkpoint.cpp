#include "gateway/checkpoint.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace syncline::gateway {
namespace {

// obj[key] as a non-negative integer; throws naming the key otherwise.
uint64_t Unsigned(const nlohmann::json &obj, const char *key) {
  const auto &v = obj.at(key);
  if (!v.is_number_unsigned())
    throw std::runtime_error(std::string("\"") + key + "\" is " + v.dump() +
                             ", not a non-negative integer");
  return v.get<uint64_t>();
}

}  // namespace

bool ParseCheckpointJson(const std::string &text, uint64_t *last_op_id, BucketMap *buckets,
                         std::string *error) {
  try {
    auto j = nlohmann::json::parse(text);
    uint64_t last = Unsigned(j, "last_op_id");
    BucketMap parsed;
    for (const auto &b : j.at("buckets")) {
      BucketState st;
      uint64_t checksum = Unsigned(b, "checksum");
      if (checksum > 0xffffffffull) {
        *error = "syncline.checkpoint() returned checksum " + std::to_string(checksum) + " for " +
                 b.at("bucket").dump() + ", outside the unsigned 32-bit range";
        return false;
      }
      st.checksum = static_cast<uint32_t>(checksum);
      st.count = Unsigned(b, "count");
      st.last_op_id =
          b.contains("last_op_id") && !b["last_op_id"].is_null() ? Unsigned(b, "last_op_id") : last;
      parsed[b.at("bucket").get<std::string>()] = st;
    }
    *last_op_id = last;
    *buckets = std::move(parsed);
    return true;
  } catch (const std::exception &e) {
    *error = std::string("syncline.checkpoint() returned unexpected JSON: ") + e.what();
    return false;
  }
}

}  // namespace syncline::gateway
