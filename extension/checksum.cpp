#include "checksum.hpp"

#include <openssl/evp.h>

#include <initializer_list>
#include <stdexcept>

namespace syncline {
namespace {

// One SHA-256 context, its algorithm fetched once: OpenSSL 3's one-shot
// SHA256() looks the algorithm up (locks, error-queue work) on every call,
// which showed in profiles of the row trigger. Each caller of the
// extension is single-threaded; the gateway and tests have one per thread.
class Sha256 {
 public:
  Sha256() : md_(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx_(EVP_MD_CTX_new()) {
    if (md_ == nullptr || ctx_ == nullptr) throw std::runtime_error("SHA-256 is not available");
  }
  ~Sha256() {
    EVP_MD_CTX_free(ctx_);
    EVP_MD_free(md_);
  }
  Sha256(const Sha256 &) = delete;
  Sha256 &operator=(const Sha256 &) = delete;

  // The first 4 bytes (big-endian) of SHA-256 over the concatenated parts.
  uint32_t Prefix(std::initializer_list<std::string_view> parts) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    bool ok = EVP_DigestInit_ex2(ctx_, md_, nullptr) == 1;
    for (std::string_view part : parts)
      ok = ok && EVP_DigestUpdate(ctx_, part.data(), part.size()) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx_, digest, &length) == 1 && length >= 4;
    if (!ok) throw std::runtime_error("SHA-256 failed");
    return (uint32_t(digest[0]) << 24) | (uint32_t(digest[1]) << 16) | (uint32_t(digest[2]) << 8) |
           uint32_t(digest[3]);
  }

 private:
  EVP_MD *md_;
  EVP_MD_CTX *ctx_;
};

Sha256 &Hasher() {
  thread_local Sha256 hasher;
  return hasher;
}

}  // namespace

uint32_t PutChecksum(std::string_view object_type, std::string_view object_id,
                     std::string_view data) {
  return Hasher().Prefix({"put.", object_type, ".", object_id, ".", data});
}

uint32_t RemoveChecksum(std::string_view object_type, std::string_view object_id) {
  return Hasher().Prefix({"remove.", object_type, ".", object_id});
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
