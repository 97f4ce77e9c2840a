// Op checksums and bucket/object ids: the bytes every gateway and client must
// agree on. No Postgres header here: linked into the GoogleTest binary.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace syncline {

enum class OpKind : int16_t { kPut = 1, kRemove = 2, kMove = 3, kClear = 4 };

// First 4 bytes (big-endian) of SHA-256 over "put.<type>.<id>.<data>" for a PUT
// and "remove.<type>.<id>" for a REMOVE.
uint32_t PutChecksum(std::string_view object_type, std::string_view object_id,
                     std::string_view data);
uint32_t RemoveChecksum(std::string_view object_type, std::string_view object_id);

// Wrapping 32-bit sum, the checksum of a bucket.
inline uint32_t AddChecksums(uint32_t a, uint32_t b) { return a + b; }

// `name[<p1>,<p2>]` where each element is already JSON text: by_list["L1"].
std::string BucketId(std::string_view name, const std::vector<std::string> &json_params);

// The object id of a row: the key's text for a one-column key, otherwise a
// JSON array of the key's JSON values, so composite keys are unambiguous.
std::string ObjectIdFromJsonParts(const std::vector<std::string> &json_parts,
                                  const std::vector<std::string> &text_parts);

}  // namespace syncline
