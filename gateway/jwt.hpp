// JWT verification for the gateway: HS256 with a shared secret, RS256 and ES256 with PEM public
// keys or a JWKS file. Pure C++ (libjwt, OpenSSL, nlohmann json); no Postgres headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/jwks.hpp"

namespace syncline::gateway {

// Where the verifier's keys come from and which claims it insists on.
struct JwtConfig {
  std::string hs256_secret;  // empty: HS256 tokens are refused
  std::vector<std::pair<std::string, std::string>> public_key_files; /* kid -> PEM path */
  std::string jwks_file;                                             // empty: none
  std::string audience;                                              // empty: aud is not checked
  std::string issuer;                                                // empty: iss is not checked
  int64_t leeway_seconds = 30;
};

// What a successfully verified token says.
struct VerifiedToken {
  std::string claims_json;  // the verified payload (claims) as JSON text
  std::string subject;      // the sub claim
  int64_t expires_at = 0;   /* the exp claim; 0 = none */
  // The first second at which Verify refuses this token: exp + the leeway. A session holding
  // the token ends at this moment too, so a token is accepted exactly as long as it is kept.
  int64_t valid_until = 0;
};

// Verifies compact JWS tokens against a fixed set of keys. Immutable after Create, so one
// instance may be shared by threads.
class JwtVerifier {
 public:
  // Throws std::runtime_error naming the bad file/key ("cannot read public key file x.pem: ...").
  static std::unique_ptr<JwtVerifier> Create(const JwtConfig &config);
  // Returns false and sets *error to a clear reason.
  bool Verify(std::string_view token, int64_t now_unix, VerifiedToken *out,
              std::string *error) const;

  ~JwtVerifier();
  JwtVerifier(const JwtVerifier &) = delete;
  JwtVerifier &operator=(const JwtVerifier &) = delete;

 private:
  JwtVerifier();

  std::string hs256_secret_;
  std::vector<PublicKey> public_keys_;
  std::vector<std::pair<std::string, std::string>> skipped_jwks_keys_;  // kid -> reason
  std::string audience_;
  std::string issuer_;
  int64_t leeway_seconds_ = 0;
};

}  // namespace syncline::gateway
