// Public keys for JWT verification: loading PEM public keys, turning JWKs (RSA and EC P-256)
// into PEM, and parsing a JWKS document. Pure C++ + OpenSSL 3; no Postgres headers.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace syncline::gateway {

// The kinds of public key the gateway verifies signatures with; each goes with one JWS alg.
enum class PublicKeyType { kRsa, kEcP256 };

// "RSA" or "EC P-256", for error messages.
const char *PublicKeyTypeName(PublicKeyType type);

// The JWS alg a key of this type verifies: "RS256" or "ES256".
const char *PublicKeyTypeAlg(PublicKeyType type);

// A verified-usable public key: its id, its type and a normalized SubjectPublicKeyInfo PEM.
struct PublicKey {
  std::string kid;
  PublicKeyType type = PublicKeyType::kRsa;
  std::string pem;
};

// What a JWKS document yields: usable keys, and the kids of keys that were skipped with the
// reason (unsupported kty/crv/alg, or "use" other than "sig"), so errors can name them.
struct JwksKeys {
  std::vector<PublicKey> keys;
  std::vector<std::pair<std::string, std::string>> skipped;  // kid -> reason
};

// Decodes unpadded base64url (RFC 7515 section 2). Returns false on any character outside the
// base64url alphabet, on padding, or on an impossible length.
bool Base64UrlDecode(std::string_view in, std::string *out);

// Parses a PEM public key (-----BEGIN PUBLIC KEY-----), accepts RSA (>= 2048 bits) and EC P-256
// keys and returns it re-encoded. Throws std::runtime_error saying what is wrong with it.
PublicKey PublicKeyFromPem(std::string_view pem, std::string kid);

// Builds a public key from a JWK's base64url members: RSA modulus n and exponent e, or EC P-256
// coordinates x and y. Throws std::runtime_error naming the bad member.
PublicKey RsaPublicKeyFromJwk(std::string_view n_b64url, std::string_view e_b64url,
                              std::string kid);
PublicKey EcP256PublicKeyFromJwk(std::string_view x_b64url, std::string_view y_b64url,
                                 std::string kid);

// Parses a JWKS document ({"keys":[...]}). Throws std::runtime_error on malformed JSON, a
// malformed RSA/EC key, or a missing kid when the document has more than one usable key.
JwksKeys ParseJwks(std::string_view json_text);

}  // namespace syncline::gateway
