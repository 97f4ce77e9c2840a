#include "checksum.hpp"

#include <openssl/sha.h>

namespace syncline {
namespace {

uint32_t Sha256Prefix(const std::string &text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char *>(text.data()), text.size(), digest);
  return (uint32_t(digest[0]) << 24) | (uint32_t(digest[1]) << 16) | (uint32_t(digest[2]) << 8) |
         uint32_t(digest[3]);
}

}  // namespace

uint32_t PutChecksum(std::string_view object_type, std::string_view object_id,
                     std::string_view data) {
  std::string text;
  text.reserve(6 + object_type.size() + object_id.size() + data.size());
  text.append("put.").append(object_type).append(".").append(object_id).append(".").append(data);
  return Sha256Prefix(text);
}

uint32_t RemoveChecksum(std::string_view object_type, std::string_view object_id) {
  std::string text;
  text.append("remove.").append(object_type).append(".").append(object_id);
  return Sha256Prefix(text);
}

std::string BucketId(std::string_view name, const std::vector<std::string> &json_params) {
  std::string id(name);
  id.push_back('[');
  for (size_t i = 0; i < json_params.size(); i++) {
    if (i > 0) id.push_back(',');
    id += json_params[i];
  }
  id.push_back(']');
  return id;
}

std::string ObjectIdFromJsonParts(const std::vector<std::string> &json_parts,
                                  const std::vector<std::string> &text_parts) {
  if (text_parts.size() == 1) return text_parts[0];
  std::string id("[");
  for (size_t i = 0; i < json_parts.size(); i++) {
    if (i > 0) id.push_back(',');
    id += json_parts[i];
  }
  id.push_back(']');
  return id;
}

}  // namespace syncline
