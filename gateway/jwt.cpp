// JWT verification for the gateway (see jwt.hpp).
//
// The compact token is split and its header and payload are parsed here first, so that the key
// can be chosen from the header (alg, kid) *before* libjwt sees the token: libjwt 1.x interprets
// the key according to the token's own alg, so handing it an RSA public key for an HS256 token
// would verify an HMAC keyed with the public PEM (algorithm confusion). libjwt then checks the
// signature, and the claims it returns are checked here.
#include "gateway/jwt.hpp"
#include "gateway/pg_text.hpp"

#include <jwt.h>
#include <openssl/err.h>
#include <strings.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

namespace syncline::gateway {
namespace {

// Far above any real token; keeps a hostile client from making us decode megabytes.
constexpr size_t kMaxTokenBytes = 64 * 1024;
// RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
constexpr size_t kMinHs256SecretBytes = 32;
// More leeway than a day would make exp meaningless (and keeps now + leeway from overflowing).
constexpr int64_t kMaxLeewaySeconds = 24 * 60 * 60;
// Key and JWKS files are small; this only guards against pointing at the wrong file.
constexpr size_t kMaxKeyFileBytes = 1024 * 1024;

struct JwtDeleter {
  void operator()(jwt_t *p) const { jwt_free(p); }
};
struct FreeDeleter {
  void operator()(char *p) const { std::free(p); }
};
struct FileCloser {
  void operator()(std::FILE *f) const { std::fclose(f); }
};

// Reads a whole file; throws "cannot read <what> <path>: <reason>".
std::string ReadFile(const std::string &path, const char *what) {
  auto fail = [&](const std::string &reason) {
    return std::runtime_error(std::string("cannot read ") + what + " " + path + ": " + reason);
  };
  errno = 0;
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw fail(std::strerror(errno));
  std::string data;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), file.get())) > 0) {
    data.append(buf, n);
    if (data.size() > kMaxKeyFileBytes) {
      throw fail("larger than " + std::to_string(kMaxKeyFileBytes) + " bytes");
    }
  }
  if (std::ferror(file.get())) throw fail(std::strerror(errno));
  return data;
}

// Token-supplied text made safe to put in an error message: printable ASCII, at most 64 chars.
std::string Printable(std::string_view text) {
  constexpr size_t kMax = 64;
  std::string out;
  for (char c : text.substr(0, kMax)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (text.size() > kMax) out += "...";
  return out;
}

std::string Quoted(std::string_view text) { return "'" + Printable(text) + "'"; }

// Splits "a.b.c"; returns false unless there are exactly three parts.
bool SplitCompact(std::string_view token, std::string_view parts[3], size_t *dots) {
  *dots = 0;
  size_t start = 0;
  for (size_t i = 0; i <= token.size(); ++i) {
    if (i == token.size() || token[i] == '.') {
      if (*dots < 3) parts[*dots] = token.substr(start, i - start);
      if (i < token.size()) ++*dots;
      start = i + 1;
    }
  }
  return *dots == 2;
}

// Decodes one base64url JSON part that must be an object; on failure says what is wrong with it.
bool DecodeJsonPart(std::string_view part, const char *name, nlohmann::json *out,
                    std::string *error) {
  std::string text;
  if (part.empty()) {
    *error = std::string("malformed token: ") + name + " is empty";
    return false;
  }
  if (!Base64UrlDecode(part, &text)) {
    *error = std::string("malformed token: ") + name + " is not valid base64url";
    return false;
  }
  *out = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) {
    *error = std::string("malformed token: ") + name + " is not valid JSON";
    return false;
  }
  if (!out->is_object()) {
    *error = std::string("malformed token: ") + name + " is not a JSON object";
    return false;
  }
  return true;
}

enum class Rounding { kDown, kUp };

// Reads a NumericDate claim (RFC 7519 2: seconds, possibly fractional). Fractions are rounded
// in the stricter direction for the claim; absurd values are clamped to the int64 range.
bool ReadNumericDate(const nlohmann::json &claims, const char *name, Rounding rounding,
                     std::optional<int64_t> *out, std::string *error) {
  out->reset();
  auto it = claims.find(name);
  if (it == claims.end()) return true;
  if (it->is_number_integer() && !it->is_number_unsigned()) {
    *out = it->get<int64_t>();
  } else if (it->is_number_unsigned()) {
    uint64_t value = it->get<uint64_t>();
    *out = value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? std::numeric_limits<int64_t>::max()
               : static_cast<int64_t>(value);
  } else if (it->is_number_float()) {
    double value = it->get<double>();
    value = rounding == Rounding::kDown ? std::floor(value) : std::ceil(value);
    if (value >= 9.2e18) {
      *out = std::numeric_limits<int64_t>::max();
    } else if (value <= -9.2e18) {
      *out = std::numeric_limits<int64_t>::min();
    } else {
      *out = static_cast<int64_t>(value);
    }
  } else {
    *error = std::string("claim ") + name + " must be a number of seconds since the epoch";
    return false;
  }
  return true;
}

// Checks exp, nbf and iat against `now` with `leeway` seconds of tolerance for clock skew.
bool CheckTimes(const nlohmann::json &claims, int64_t now, int64_t leeway, int64_t *expires_at,
                std::string *error) {
  std::optional<int64_t> exp, nbf, iat;
  if (!ReadNumericDate(claims, "exp", Rounding::kDown, &exp, error) ||
      !ReadNumericDate(claims, "nbf", Rounding::kUp, &nbf, error) ||
      !ReadNumericDate(claims, "iat", Rounding::kUp, &iat, error)) {
    return false;
  }
  if (!exp) {
    *error = "token has no exp claim; tokens without an expiry are not accepted";
    return false;
  }
  // RFC 7519 4.1.4: the token is valid only *before* exp.
  if (now - leeway >= *exp) {
    *error = "token expired " + std::to_string(now - *exp) + " s ago";
    return false;
  }
  // RFC 7519 4.1.5: valid from nbf on.
  if (nbf && *nbf > now + leeway) {
    *error = "token not valid yet: nbf is " + std::to_string(*nbf - now) + " s in the future";
    return false;
  }
  if (iat && *iat > now + leeway) {
    *error = "token issued in the future: iat is " + std::to_string(*iat - now) +
             " s ahead of the gateway clock";
    return false;
  }
  *expires_at = *exp;
  return true;
}

// Checks aud (a string or an array of strings) contains `audience`.
bool CheckAudience(const nlohmann::json &claims, const std::string &audience, std::string *error) {
  auto it = claims.find("aud");
  if (it == claims.end()) {
    *error = "token has no aud claim; expected audience " + Quoted(audience);
    return false;
  }
  if (it->is_string()) {
    if (it->get_ref<const std::string &>() == audience) return true;
    *error = "audience mismatch: token aud is " + Quoted(it->get_ref<const std::string &>()) +
             ", expected " + Quoted(audience);
    return false;
  }
  if (it->is_array()) {
    for (const auto &item : *it) {
      if (item.is_string() && item.get_ref<const std::string &>() == audience) return true;
    }
    *error = "audience mismatch: token aud " + Printable(it->dump()) + " does not contain " +
             Quoted(audience);
    return false;
  }
  *error = "claim aud must be a string or an array of strings";
  return false;
}

bool CheckIssuer(const nlohmann::json &claims, const std::string &issuer, std::string *error) {
  auto it = claims.find("iss");
  if (it == claims.end()) {
    *error = "token has no iss claim; expected issuer " + Quoted(issuer);
    return false;
  }
  if (!it->is_string()) {
    *error = "claim iss must be a string";
    return false;
  }
  if (it->get_ref<const std::string &>() != issuer) {
    *error = "issuer mismatch: token iss is " + Quoted(it->get_ref<const std::string &>()) +
             ", expected " + Quoted(issuer);
    return false;
  }
  return true;
}

// Reads an optional string header parameter; a non-string value makes the token malformed.
bool HeaderString(const nlohmann::json &header, const char *name, std::optional<std::string> *out,
                  std::string *error) {
  out->reset();
  auto it = header.find(name);
  if (it == header.end()) return true;
  if (!it->is_string()) {
    *error = std::string("malformed token: header ") + name + " is not a string";
    return false;
  }
  *out = it->get<std::string>();
  return true;
}

}  // namespace

JwtVerifier::JwtVerifier() = default;
JwtVerifier::~JwtVerifier() = default;

std::unique_ptr<JwtVerifier> JwtVerifier::Create(const JwtConfig &config) {
  std::unique_ptr<JwtVerifier> verifier(new JwtVerifier());

  if (config.leeway_seconds < 0 || config.leeway_seconds > kMaxLeewaySeconds) {
    throw std::runtime_error("leeway_seconds is " + std::to_string(config.leeway_seconds) +
                             "; it must be between 0 and " + std::to_string(kMaxLeewaySeconds));
  }
  verifier->leeway_seconds_ = config.leeway_seconds;
  verifier->audience_ = config.audience;
  verifier->issuer_ = config.issuer;

  if (!config.hs256_secret.empty() && config.hs256_secret.size() < kMinHs256SecretBytes) {
    throw std::runtime_error("hs256_secret is " + std::to_string(config.hs256_secret.size()) +
                             " bytes; HS256 needs at least " +
                             std::to_string(kMinHs256SecretBytes) +
                             " (RFC 7518 3.2). Use a longer random secret");
  }
  verifier->hs256_secret_ = config.hs256_secret;

  std::vector<std::string> sources;  // where each public key came from, for errors
  for (const auto &[kid, path] : config.public_key_files) {
    std::string pem = ReadFile(path, "public key file");
    try {
      verifier->public_keys_.push_back(PublicKeyFromPem(pem, kid));
    } catch (const std::runtime_error &e) {
      throw std::runtime_error("public key file " + path + " (kid '" + kid + "'): " + e.what());
    }
    sources.push_back("public key file " + path);
  }

  if (!config.jwks_file.empty()) {
    std::string text = ReadFile(config.jwks_file, "JWKS file");
    JwksKeys jwks;
    try {
      jwks = ParseJwks(text);
    } catch (const std::runtime_error &e) {
      throw std::runtime_error("JWKS file " + config.jwks_file + ": " + e.what());
    }
    if (jwks.keys.empty()) {
      std::string message = "JWKS file " + config.jwks_file + " has no usable keys";
      for (const auto &[kid, reason] : jwks.skipped) {
        message += "; key '" + kid + "' skipped: " + reason;
      }
      throw std::runtime_error(message);
    }
    for (auto &key : jwks.keys) {
      verifier->public_keys_.push_back(std::move(key));
      sources.push_back("JWKS file " + config.jwks_file);
    }
    verifier->skipped_jwks_keys_ = std::move(jwks.skipped);
  }

  const auto &keys = verifier->public_keys_;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].kid.empty() && keys.size() > 1) {
      throw std::runtime_error(sources[i] +
                               ": key has an empty kid; every public key needs a kid " +
                               "when more than one is configured");
    }
    for (size_t j = 0; j < i; ++j) {
      if (!keys[i].kid.empty() && keys[i].kid == keys[j].kid) {
        throw std::runtime_error("kid '" + keys[i].kid + "' is configured twice (" + sources[j] +
                                 " and " + sources[i] + ")");
      }
    }
  }

  if (verifier->hs256_secret_.empty() && keys.empty()) {
    throw std::runtime_error(
        "no JWT keys configured: set hs256_secret, public_key_files or jwks_file");
  }
  return verifier;
}

bool JwtVerifier::Verify(std::string_view token, int64_t now_unix, VerifiedToken *out,
                         std::string *error) const {
  std::string ignored_error;
  if (error == nullptr) error = &ignored_error;
  error->clear();

  if (token.empty()) {
    *error = "malformed token: empty";
    return false;
  }
  if (token.size() > kMaxTokenBytes) {
    *error = "malformed token: " + std::to_string(token.size()) + " bytes, more than the " +
             std::to_string(kMaxTokenBytes) + " accepted";
    return false;
  }
  std::string_view parts[3];
  size_t dots = 0;
  if (!SplitCompact(token, parts, &dots)) {
    *error = "malformed token: expected three base64url parts separated by '.', found " +
             std::to_string(dots + 1);
    return false;
  }
  nlohmann::json header, payload;
  if (!DecodeJsonPart(parts[0], "header", &header, error) ||
      !DecodeJsonPart(parts[1], "payload", &payload, error)) {
    return false;
  }
  std::string signature;
  if (!Base64UrlDecode(parts[2], &signature)) {
    *error = "malformed token: signature is not valid base64url";
    return false;
  }

  // --- Header: which algorithm and which key. ---
  std::optional<std::string> alg, kid, typ;
  if (!HeaderString(header, "alg", &alg, error) || !HeaderString(header, "kid", &kid, error) ||
      !HeaderString(header, "typ", &typ, error)) {
    return false;
  }
  if (!alg) {
    *error = "malformed token: header has no alg";
    return false;
  }
  if (strcasecmp(alg->c_str(), "none") == 0) {
    *error = "alg none is not accepted";
    return false;
  }
  jwt_alg_t expected_alg;
  if (*alg == "HS256") {
    expected_alg = JWT_ALG_HS256;
  } else if (*alg == "RS256") {
    expected_alg = JWT_ALG_RS256;
  } else if (*alg == "ES256") {
    expected_alg = JWT_ALG_ES256;
  } else {
    *error = "unsupported alg " + Quoted(*alg) + " (accepted: HS256, RS256, ES256)";
    return false;
  }
  if (header.contains("crit")) {
    // RFC 7515 4.1.11: critical extensions we do not understand make the token invalid.
    *error = "token has critical header extensions (crit), none of which are supported";
    return false;
  }
  if (typ && strcasecmp(typ->c_str(), "JWT") != 0) {
    *error = "unsupported token typ " + Quoted(*typ) + " (only JWT is accepted)";
    return false;
  }

  const std::string *key_material = nullptr;
  std::string key_name;
  if (expected_alg == JWT_ALG_HS256) {
    // The shared secret has no kid; HS256 never uses a public key, whatever the kid says.
    if (hs256_secret_.empty()) {
      *error = "alg HS256 is not accepted: the gateway has no hs256_secret configured";
      return false;
    }
    key_material = &hs256_secret_;
    key_name = "the HS256 secret";
  } else {
    PublicKeyType wanted =
        expected_alg == JWT_ALG_RS256 ? PublicKeyType::kRsa : PublicKeyType::kEcP256;
    const PublicKey *chosen = nullptr;
    if (kid) {
      for (const auto &key : public_keys_) {
        if (key.kid == *kid) chosen = &key;
      }
      if (chosen == nullptr) {
        *error = "unknown key id " + Quoted(*kid);
        for (const auto &[skipped_kid, reason] : skipped_jwks_keys_) {
          if (skipped_kid == *kid)
            *error += " (the JWKS has it, but it was skipped: " + reason + ")";
        }
        return false;
      }
      if (chosen->type != wanted) {
        *error = "key " + Quoted(*kid) + " is an " + PublicKeyTypeName(chosen->type) +
                 " key, but the token says alg " + *alg;
        return false;
      }
    } else {
      size_t candidates = 0;
      for (const auto &key : public_keys_) {
        if (key.type == wanted) {
          chosen = &key;
          ++candidates;
        }
      }
      if (candidates == 0) {
        *error = "alg " + *alg + " is not accepted: no " + PublicKeyTypeName(wanted) +
                 " public key is configured";
        return false;
      }
      if (candidates > 1) {
        *error = "token has no kid, but " + std::to_string(candidates) + " " +
                 PublicKeyTypeName(wanted) + " keys are configured; a kid is required";
        return false;
      }
    }
    key_material = &chosen->pem;
    key_name = chosen->kid.empty() ? std::string("the ") + PublicKeyTypeName(wanted) + " key"
                                   : "key " + Quoted(chosen->kid);
  }

  // --- Signature, checked by libjwt with the key chosen above. ---
  const std::string token_text(token);  // libjwt wants a NUL-terminated string
  jwt_t *raw = nullptr;
  int rc = jwt_decode(&raw, token_text.c_str(),
                      reinterpret_cast<const unsigned char *>(key_material->data()),
                      static_cast<int>(key_material->size()));
  std::unique_ptr<jwt_t, JwtDeleter> decoded(raw);
  // libjwt leaves OpenSSL errors queued on failure; do not hand them to the next TLS call.
  ERR_clear_error();
  if (rc != 0 || !decoded) {
    // Tell a bad signature from a token libjwt cannot parse (e.g. an integer beyond 64 bits):
    // parse again without a key. The result is only used for this message.
    jwt_t *parsed_raw = nullptr;
    int parse_rc = jwt_decode(&parsed_raw, token_text.c_str(), nullptr, 0);
    std::unique_ptr<jwt_t, JwtDeleter> parsed(parsed_raw);
    ERR_clear_error();
    if (parse_rc != 0) {
      *error =
          "malformed token: libjwt cannot parse it (" + std::string(std::strerror(parse_rc)) + ")";
    } else {
      *error = "signature does not verify (alg " + *alg + ", " + key_name + ")";
    }
    return false;
  }
  if (jwt_get_alg(decoded.get()) != expected_alg) {
    const char *libjwt_alg = jwt_alg_str(jwt_get_alg(decoded.get()));
    *error = "malformed token: libjwt read alg " + std::string(libjwt_alg ? libjwt_alg : "?") +
             ", the header says " + *alg;
    return false;
  }
  std::unique_ptr<char, FreeDeleter> grants(jwt_get_grants_json(decoded.get(), nullptr));
  if (!grants) {
    *error = "malformed token: libjwt returned no claims";
    return false;
  }
  nlohmann::json claims = nlohmann::json::parse(grants.get(), nullptr, false);
  if (claims.is_discarded() || !claims.is_object()) {
    *error = "malformed token: the verified claims are not a JSON object";
    return false;
  }

  // --- Claims. ---
  int64_t expires_at = 0;
  if (!CheckTimes(claims, now_unix, leeway_seconds_, &expires_at, error)) return false;
  if (!issuer_.empty() && !CheckIssuer(claims, issuer_, error)) return false;
  if (!audience_.empty() && !CheckAudience(claims, audience_, error)) return false;
  auto sub = claims.find("sub");
  if (sub == claims.end()) {
    *error = "token has no sub claim; the gateway needs it as the user id";
    return false;
  }
  if (!sub->is_string() || sub->get_ref<const std::string &>().empty()) {
    *error = "claim sub must be a non-empty string";
    return false;
  }
  if (JsonHoldsNul(claims)) {
    // The claims go to the database as jsonb, which cannot hold it: every query of the
    // session would fail.
    *error = "a claim holds U+0000, which PostgreSQL cannot store";
    return false;
  }

  if (out != nullptr) {
    out->claims_json = grants.get();
    out->subject = sub->get<std::string>();
    out->expires_at = expires_at;
    out->valid_until = expires_at + leeway_seconds_;
  }
  return true;
}

}  // namespace syncline::gateway
