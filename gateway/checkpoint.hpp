// Checkpoint state as returned by syncline.checkpoint() and syncline.changes().
// Pure C++ (no libwebsockets, no libpq), so the unit tests link it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace syncline::gateway {

// One bucket's state at a checkpoint.
struct BucketState {
  uint32_t checksum = 0;
  uint64_t count = 0;
  uint64_t last_op_id = 0;
  bool operator==(const BucketState &o) const {
    return checksum == o.checksum && count == o.count && last_op_id == o.last_op_id;
  }
  bool operator!=(const BucketState &o) const { return !(*this == o); }
};
using BucketMap = std::map<std::string, BucketState>;

// Parses the JSON of syncline.checkpoint():
//   {"last_op_id": N, "buckets": [{"bucket", "checksum" (u32), "count", "last_op_id"?}]}
// A bucket without last_op_id is taken to be at N. Returns false with *error
// naming what is wrong when the shape or a value is not as documented.
bool ParseCheckpointJson(const std::string &json, uint64_t *last_op_id, BucketMap *buckets,
                         std::string *error);

}  // namespace syncline::gateway
