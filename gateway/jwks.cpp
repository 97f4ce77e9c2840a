// Public keys for JWT verification: PEM loading, JWK -> PEM, JWKS parsing (see jwks.hpp).
#include "gateway/jwks.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace syncline::gateway {
namespace {

// RFC 7518 section 3.3: RSA keys for RS256 must be at least 2048 bits.
constexpr int kMinRsaBits = 2048;
constexpr size_t kP256CoordinateBytes = 32;

struct PkeyDeleter {
  void operator()(EVP_PKEY *p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX *p) const { EVP_PKEY_CTX_free(p); }
};
struct BioDeleter {
  void operator()(BIO *p) const { BIO_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM *p) const { BN_free(p); }
};
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD *p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamDeleter {
  void operator()(OSSL_PARAM *p) const { OSSL_PARAM_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, ParamDeleter>;

// The latest queued OpenSSL error as text (or `fallback`), clearing the queue so errors from one
// call never leak into the next message. Entry points also clear the queue before they start.
std::string TakeOpenSslError(const char *fallback) {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return fallback;
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Checks that `pkey` is a usable RSA or P-256 key and returns it as a normalized PEM key.
PublicKey ClassifyAndEncode(EVP_PKEY *pkey, std::string kid) {
  PublicKey key;
  key.kid = std::move(kid);
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    key.type = PublicKeyType::kRsa;
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < kMinRsaBits) {
      throw std::runtime_error("RSA key is " + std::to_string(bits) + " bits; at least " +
                               std::to_string(kMinRsaBits) + " are required (RFC 7518 3.3)");
    }
  } else if (EVP_PKEY_is_a(pkey, "EC")) {
    key.type = PublicKeyType::kEcP256;
    char group[80] = {0};
    size_t group_len = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &group_len) != 1) {
      ERR_clear_error();
      throw std::runtime_error("EC key has no named curve; only P-256 is supported");
    }
    if (std::strcmp(group, "prime256v1") != 0 && std::strcmp(group, "P-256") != 0) {
      throw std::runtime_error(std::string("EC key is on curve ") + group +
                               "; only P-256 (ES256) is supported");
    }
  } else {
    throw std::runtime_error(std::string("unsupported key type ") + EVP_PKEY_get0_type_name(pkey) +
                             "; only RSA (RS256) and EC P-256 (ES256) are supported");
  }

  PkeyCtxPtr check_ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  if (!check_ctx || EVP_PKEY_public_check(check_ctx.get()) != 1) {
    throw std::runtime_error(std::string(PublicKeyTypeName(key.type)) + " public key is invalid: " +
                             TakeOpenSslError("public key check failed"));
  }

  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_PUBKEY(out.get(), pkey) != 1) {
    throw std::runtime_error("cannot encode public key as PEM: " +
                             TakeOpenSslError("PEM_write_bio_PUBKEY failed"));
  }
  char *data = nullptr;
  long len = BIO_get_mem_data(out.get(), &data);
  key.pem.assign(data, static_cast<size_t>(len));
  return key;
}

// Builds an EVP_PKEY of `type_name` ("RSA", "EC") from public key parameters.
PkeyPtr PublicKeyFromParams(const char *type_name, OSSL_PARAM_BLD *bld) {
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type_name, nullptr));
  EVP_PKEY *raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    throw std::runtime_error(std::string("cannot build ") + type_name +
                             " public key: " + TakeOpenSslError("EVP_PKEY_fromdata failed"));
  }
  return PkeyPtr(raw);
}

std::string DecodeJwkMember(std::string_view value, const char *member) {
  std::string out;
  if (!Base64UrlDecode(value, &out)) {
    throw std::runtime_error(std::string("member '") + member + "' is not valid base64url");
  }
  if (out.empty()) throw std::runtime_error(std::string("member '") + member + "' is empty");
  return out;
}

const std::string *StringMember(const nlohmann::json &object, const char *name,
                                const std::string &where) {
  auto it = object.find(name);
  if (it == object.end()) return nullptr;
  if (!it->is_string()) {
    throw std::runtime_error(where + ": member '" + name + "' must be a string");
  }
  return it->get_ptr<const std::string *>();
}

const std::string &RequiredStringMember(const nlohmann::json &object, const char *name,
                                        const std::string &where) {
  const std::string *value = StringMember(object, name, where);
  if (value == nullptr) {
    throw std::runtime_error(where + ": member '" + name + "' is missing");
  }
  return *value;
}

}  // namespace

const char *PublicKeyTypeName(PublicKeyType type) {
  return type == PublicKeyType::kRsa ? "RSA" : "EC P-256";
}

const char *PublicKeyTypeAlg(PublicKeyType type) {
  return type == PublicKeyType::kRsa ? "RS256" : "ES256";
}

bool Base64UrlDecode(std::string_view in, std::string *out) {
  out->clear();
  if (in.size() % 4 == 1) return false;
  out->reserve(in.size() / 4 * 3 + 2);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    int value = Base64UrlValue(c);
    if (value < 0) return false;
    buffer = (buffer << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero: only the canonical encoding is accepted.
  return (buffer & ((1u << bits) - 1)) == 0;
}

PublicKey PublicKeyFromPem(std::string_view pem, std::string kid) {
  ERR_clear_error();
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!in) throw std::runtime_error("out of memory reading PEM");
  PkeyPtr pkey(PEM_read_bio_PUBKEY(in.get(), nullptr, nullptr, nullptr));
  if (!pkey) {
    throw std::runtime_error("not a PEM public key (expected -----BEGIN PUBLIC KEY-----): " +
                             TakeOpenSslError("unreadable PEM"));
  }
  return ClassifyAndEncode(pkey.get(), std::move(kid));
}

PublicKey RsaPublicKeyFromJwk(std::string_view n_b64url, std::string_view e_b64url,
                              std::string kid) {
  ERR_clear_error();
  std::string n = DecodeJwkMember(n_b64url, "n");
  std::string e = DecodeJwkMember(e_b64url, "e");
  BnPtr n_bn(BN_bin2bn(reinterpret_cast<const unsigned char *>(n.data()),
                       static_cast<int>(n.size()), nullptr));
  BnPtr e_bn(BN_bin2bn(reinterpret_cast<const unsigned char *>(e.data()),
                       static_cast<int>(e.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!n_bn || !e_bn || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n_bn.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e_bn.get()) != 1) {
    throw std::runtime_error("cannot build RSA public key: " + TakeOpenSslError("out of memory"));
  }
  PkeyPtr pkey = PublicKeyFromParams("RSA", bld.get());
  return ClassifyAndEncode(pkey.get(), std::move(kid));
}

PublicKey EcP256PublicKeyFromJwk(std::string_view x_b64url, std::string_view y_b64url,
                                 std::string kid) {
  ERR_clear_error();
  std::string x = DecodeJwkMember(x_b64url, "x");
  std::string y = DecodeJwkMember(y_b64url, "y");
  // RFC 7518 6.2.1.2: coordinates are full-length octet strings (32 bytes for P-256).
  if (x.size() != kP256CoordinateBytes || y.size() != kP256CoordinateBytes) {
    throw std::runtime_error("P-256 coordinates must be 32 bytes each, got x=" +
                             std::to_string(x.size()) + " y=" + std::to_string(y.size()));
  }
  std::string point = "\x04" + x + y;  // SEC1 uncompressed point
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    throw std::runtime_error("cannot build EC public key: " + TakeOpenSslError("out of memory"));
  }
  PkeyPtr pkey = PublicKeyFromParams("EC", bld.get());
  return ClassifyAndEncode(pkey.get(), std::move(kid));
}

JwksKeys ParseJwks(std::string_view json_text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::parse_error &e) {
    throw std::runtime_error(std::string("not valid JSON: ") + e.what());
  }
  if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    throw std::runtime_error("not a JWKS: expected an object {\"keys\": [...]}");
  }

  JwksKeys result;
  std::vector<size_t> key_positions;  // index in "keys" of each usable key, for errors
  const nlohmann::json &keys = doc["keys"];
  for (size_t i = 0; i < keys.size(); ++i) {
    const nlohmann::json &jwk = keys[i];
    std::string where = "key #" + std::to_string(i);
    if (!jwk.is_object()) throw std::runtime_error(where + " is not a JSON object");
    const std::string *kid_ptr = StringMember(jwk, "kid", where);
    std::string kid = kid_ptr ? *kid_ptr : std::string();
    if (!kid.empty()) where += " (kid '" + kid + "')";

    const std::string &kty = RequiredStringMember(jwk, "kty", where);
    const std::string *use = StringMember(jwk, "use", where);
    const std::string *alg = StringMember(jwk, "alg", where);
    if (use != nullptr && *use != "sig") {
      result.skipped.emplace_back(kid, "its use is '" + *use + "', not 'sig'");
      continue;
    }
    try {
      if (kty == "RSA") {
        if (alg != nullptr && *alg != "RS256") {
          result.skipped.emplace_back(kid, "its alg " + *alg + " is not supported (RS256 is)");
          continue;
        }
        result.keys.push_back(RsaPublicKeyFromJwk(RequiredStringMember(jwk, "n", where),
                                                  RequiredStringMember(jwk, "e", where), kid));
      } else if (kty == "EC") {
        const std::string &crv = RequiredStringMember(jwk, "crv", where);
        if (crv != "P-256") {
          result.skipped.emplace_back(kid, "its curve " + crv + " is not supported (P-256 is)");
          continue;
        }
        if (alg != nullptr && *alg != "ES256") {
          result.skipped.emplace_back(kid, "its alg " + *alg + " is not supported (ES256 is)");
          continue;
        }
        result.keys.push_back(EcP256PublicKeyFromJwk(RequiredStringMember(jwk, "x", where),
                                                     RequiredStringMember(jwk, "y", where), kid));
      } else {
        result.skipped.emplace_back(kid, "its kty " + kty + " is not supported (RSA and EC are)");
        continue;
      }
    } catch (const std::runtime_error &e) {
      const std::string message = e.what();
      // Errors from the helpers above already start with `where`.
      if (message.rfind(where, 0) == 0) throw;
      throw std::runtime_error(where + ": " + message);
    }
    key_positions.push_back(i);
  }

  std::set<std::string> seen;
  for (size_t k = 0; k < result.keys.size(); ++k) {
    const std::string &kid = result.keys[k].kid;
    std::string where = "key #" + std::to_string(key_positions[k]);
    if (kid.empty() && result.keys.size() > 1) {
      throw std::runtime_error(where + " has no kid; every key needs one when the JWKS holds " +
                               std::to_string(result.keys.size()) + " usable keys");
    }
    if (!kid.empty() && !seen.insert(kid).second) {
      throw std::runtime_error(where + ": kid '" + kid + "' is used by more than one key");
    }
  }
  return result;
}

}  // namespace syncline::gateway
