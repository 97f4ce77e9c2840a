// Tests for gateway JWT verification (gateway/jwt.hpp, gateway/jwks.hpp). Keys are generated per
// run with OpenSSL, tokens are signed with libjwt, and a few are built by hand (alg none,
// tampered).
#include <gtest/gtest.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "gateway/jwks.hpp"
#include "gateway/jwt.hpp"

namespace {

using syncline::gateway::Base64UrlDecode;
using syncline::gateway::EcP256PublicKeyFromJwk;
using syncline::gateway::JwtConfig;
using syncline::gateway::JwtVerifier;
using syncline::gateway::PublicKeyType;
using syncline::gateway::RsaPublicKeyFromJwk;
using syncline::gateway::VerifiedToken;
using json = nlohmann::json;

constexpr int64_t kNow = 1'700'000'000;
constexpr int64_t kLeeway = 30;
const char kSecret[] = "0123456789abcdef0123456789abcdef-test-secret";

// ---- Key material -------------------------------------------------------------------------

struct TestKey {
  EVP_PKEY *pkey = nullptr;
  std::string private_pem;
  std::string public_pem;
};

std::string BioToString(BIO *bio) {
  char *data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

TestKey GenerateKey(bool rsa, int rsa_bits = 2048) {
  TestKey key;
  key.pkey = rsa ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits))
                 : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (key.pkey == nullptr) throw std::runtime_error("key generation failed");
  BIO *priv = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key.pkey, nullptr, nullptr, 0, nullptr, nullptr);
  key.private_pem = BioToString(priv);
  BIO_free(priv);
  BIO *pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(pub, key.pkey);
  key.public_pem = BioToString(pub);
  BIO_free(pub);
  return key;
}

// Unpadded base64url, written independently of the decoder under test.
std::string B64Url(const std::string &bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(&out[0]),
                          reinterpret_cast<const unsigned char *>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char &c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

std::string BnParam(EVP_PKEY *pkey, const char *name) {
  BIGNUM *bn = nullptr;
  EVP_PKEY_get_bn_param(pkey, name, &bn);
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char *>(&out[0]));
  BN_free(bn);
  return out;
}

json RsaJwk(const TestKey &key, const std::string &kid) {
  json jwk = {{"kty", "RSA"},
              {"use", "sig"},
              {"alg", "RS256"},
              {"n", B64Url(BnParam(key.pkey, OSSL_PKEY_PARAM_RSA_N))},
              {"e", B64Url(BnParam(key.pkey, OSSL_PKEY_PARAM_RSA_E))}};
  if (!kid.empty()) jwk["kid"] = kid;
  return jwk;
}

json EcJwk(const TestKey &key, const std::string &kid) {
  unsigned char point[65];
  size_t len = 0;
  EVP_PKEY_get_octet_string_param(key.pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                  sizeof(point), &len);
  if (len != 65 || point[0] != 0x04) throw std::runtime_error("unexpected EC point encoding");
  std::string x(reinterpret_cast<char *>(point + 1), 32);
  std::string y(reinterpret_cast<char *>(point + 33), 32);
  json jwk = {{"kty", "EC"}, {"crv", "P-256"}, {"x", B64Url(x)}, {"y", B64Url(y)}};
  if (!kid.empty()) jwk["kid"] = kid;
  return jwk;
}

// ---- Tokens -------------------------------------------------------------------------------

// Claims of a valid token; `changes` overrides members, a null value removes one.
std::string Claims(const json &changes = json::object()) {
  json claims = {{"sub", "user-1"}, {"exp", kNow + 3600}, {"iat", kNow - 10}};
  for (auto it = changes.begin(); it != changes.end(); ++it) {
    if (it.value().is_null()) {
      claims.erase(it.key());
    } else {
      claims[it.key()] = it.value();
    }
  }
  return claims.dump();
}

// Signs `claims_json` with libjwt.
std::string Sign(jwt_alg_t alg, const std::string &key, const std::string &claims_json,
                 const std::string &kid = "") {
  jwt_t *jwt = nullptr;
  if (jwt_new(&jwt) != 0) throw std::runtime_error("jwt_new failed");
  std::unique_ptr<jwt_t, void (*)(jwt_t *)> guard(jwt, jwt_free);
  if (jwt_add_grants_json(jwt, claims_json.c_str()) != 0) {
    throw std::runtime_error("jwt_add_grants_json failed: " + claims_json);
  }
  if (!kid.empty() && jwt_add_header(jwt, "kid", kid.c_str()) != 0) {
    throw std::runtime_error("jwt_add_header failed");
  }
  if (jwt_set_alg(jwt, alg, reinterpret_cast<const unsigned char *>(key.data()),
                  static_cast<int>(key.size())) != 0) {
    throw std::runtime_error("jwt_set_alg failed");
  }
  char *token = jwt_encode_str(jwt);
  if (token == nullptr) throw std::runtime_error("jwt_encode_str failed");
  std::string out(token);
  free(token);
  return out;
}

// A compact token assembled by hand from raw header and payload text.
std::string HandToken(const std::string &header, const std::string &payload,
                      const std::string &signature_part = "") {
  return B64Url(header) + "." + B64Url(payload) + "." + signature_part;
}

std::string Part(const std::string &token, int index) {
  size_t first = token.find('.');
  size_t second = token.find('.', first + 1);
  if (index == 0) return token.substr(0, first);
  if (index == 1) return token.substr(first + 1, second - first - 1);
  return token.substr(second + 1);
}

// ---- Fixture ------------------------------------------------------------------------------

class JwtTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/syncline_jwt_test_XXXXXX";
    if (mkdtemp(dir_template) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = new std::string(dir_template);
    rsa_ = new TestKey(GenerateKey(true));
    ec_ = new TestKey(GenerateKey(false));
    jwks_rsa_a_ = new TestKey(GenerateKey(true));
    jwks_rsa_b_ = new TestKey(GenerateKey(true));
    jwks_ec_ = new TestKey(GenerateKey(false));
    attacker_rsa_ = new TestKey(GenerateKey(true));
    WriteFile("rsa.pem", rsa_->public_pem);
    WriteFile("ec.pem", ec_->public_pem);
    json jwks = {{"keys",
                  {RsaJwk(*jwks_rsa_a_, "jwks-rsa-a"), RsaJwk(*jwks_rsa_b_, "jwks-rsa-b"),
                   EcJwk(*jwks_ec_, "jwks-ec")}}};
    WriteFile("jwks.json", jwks.dump(2));
  }

  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    for (TestKey *key : {rsa_, ec_, jwks_rsa_a_, jwks_rsa_b_, jwks_ec_, attacker_rsa_}) {
      EVP_PKEY_free(key->pkey);
      delete key;
    }
    delete dir_;
  }

  static std::string PathOf(const std::string &name) { return *dir_ + "/" + name; }

  static void WriteFile(const std::string &name, const std::string &contents) {
    std::ofstream out(PathOf(name), std::ios::binary);
    out << contents;
    if (!out) throw std::runtime_error("cannot write " + name);
  }

  // Secret + the RSA and EC PEM files (kids rsa-1, ec-1).
  static JwtConfig FullConfig() {
    JwtConfig config;
    config.hs256_secret = kSecret;
    config.public_key_files = {{"rsa-1", PathOf("rsa.pem")}, {"ec-1", PathOf("ec.pem")}};
    config.leeway_seconds = kLeeway;
    return config;
  }

  static JwtConfig JwksConfig() {
    JwtConfig config;
    config.jwks_file = PathOf("jwks.json");
    config.leeway_seconds = kLeeway;
    return config;
  }

  // Verifies `token` at `now` and returns the error ("" on success).
  static std::string ErrorOf(const JwtConfig &config, const std::string &token,
                             int64_t now = kNow) {
    auto verifier = JwtVerifier::Create(config);
    VerifiedToken out;
    std::string error;
    bool ok = verifier->Verify(token, now, &out, &error);
    EXPECT_EQ(ok, error.empty()) << "Verify returned " << ok << " with error '" << error << "'";
    return ok ? "" : error;
  }

  static std::string HsToken(const std::string &claims) {
    return Sign(JWT_ALG_HS256, kSecret, claims);
  }

  static std::string *dir_;
  static TestKey *rsa_;
  static TestKey *ec_;
  static TestKey *jwks_rsa_a_;
  static TestKey *jwks_rsa_b_;
  static TestKey *jwks_ec_;
  static TestKey *attacker_rsa_;
};

std::string *JwtTest::dir_ = nullptr;
TestKey *JwtTest::rsa_ = nullptr;
TestKey *JwtTest::ec_ = nullptr;
TestKey *JwtTest::jwks_rsa_a_ = nullptr;
TestKey *JwtTest::jwks_rsa_b_ = nullptr;
TestKey *JwtTest::jwks_ec_ = nullptr;
TestKey *JwtTest::attacker_rsa_ = nullptr;

// ---- Valid tokens -------------------------------------------------------------------------

TEST_F(JwtTest, ValidHs256TokenYieldsSubjectExpiryAndClaims) {
  auto verifier = JwtVerifier::Create(FullConfig());
  std::string token = HsToken(Claims({{"role", "editor"}, {"lists", {"L1", "L2"}}}));
  VerifiedToken out;
  std::string error;
  ASSERT_TRUE(verifier->Verify(token, kNow, &out, &error)) << error;
  EXPECT_EQ(error, "");
  EXPECT_EQ(out.subject, "user-1");
  EXPECT_EQ(out.expires_at, kNow + 3600);
  json claims = json::parse(out.claims_json);
  EXPECT_EQ(claims["role"], "editor");
  EXPECT_EQ(claims["lists"], json({"L1", "L2"}));
  EXPECT_EQ(claims["sub"], "user-1");
}

TEST_F(JwtTest, ValidRs256TokenWithAndWithoutKid) {
  EXPECT_EQ(ErrorOf(FullConfig(), Sign(JWT_ALG_RS256, rsa_->private_pem, Claims(), "rsa-1")), "");
  // No kid: the only RSA key configured is used.
  EXPECT_EQ(ErrorOf(FullConfig(), Sign(JWT_ALG_RS256, rsa_->private_pem, Claims())), "");
}

TEST_F(JwtTest, ValidEs256TokenWithAndWithoutKid) {
  EXPECT_EQ(ErrorOf(FullConfig(), Sign(JWT_ALG_ES256, ec_->private_pem, Claims(), "ec-1")), "");
  EXPECT_EQ(ErrorOf(FullConfig(), Sign(JWT_ALG_ES256, ec_->private_pem, Claims())), "");
}

TEST_F(JwtTest, PublicKeyOnlyConfigWorksWithoutSecret) {
  JwtConfig config;
  config.public_key_files = {{"rsa-1", PathOf("rsa.pem")}};
  EXPECT_EQ(ErrorOf(config, Sign(JWT_ALG_RS256, rsa_->private_pem, Claims())), "");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims())),
            "alg HS256 is not accepted: the gateway has no hs256_secret configured");
}

// ---- JWKS ---------------------------------------------------------------------------------

TEST_F(JwtTest, JwksRsaAndEcKeysAreSelectedByKid) {
  EXPECT_EQ(
      ErrorOf(JwksConfig(), Sign(JWT_ALG_RS256, jwks_rsa_a_->private_pem, Claims(), "jwks-rsa-a")),
      "");
  EXPECT_EQ(
      ErrorOf(JwksConfig(), Sign(JWT_ALG_RS256, jwks_rsa_b_->private_pem, Claims(), "jwks-rsa-b")),
      "");
  EXPECT_EQ(ErrorOf(JwksConfig(), Sign(JWT_ALG_ES256, jwks_ec_->private_pem, Claims(), "jwks-ec")),
            "");
  // Signed by key b but naming key a: the kid decides, so the signature fails.
  EXPECT_EQ(
      ErrorOf(JwksConfig(), Sign(JWT_ALG_RS256, jwks_rsa_b_->private_pem, Claims(), "jwks-rsa-a")),
      "signature does not verify (alg RS256, key 'jwks-rsa-a')");
  // Two RSA keys and no kid: ambiguous.
  EXPECT_EQ(ErrorOf(JwksConfig(), Sign(JWT_ALG_RS256, jwks_rsa_a_->private_pem, Claims())),
            "token has no kid, but 2 RSA keys are configured; a kid is required");
  // One EC key in the JWKS: no kid needed.
  EXPECT_EQ(ErrorOf(JwksConfig(), Sign(JWT_ALG_ES256, jwks_ec_->private_pem, Claims())), "");
}

TEST_F(JwtTest, JwkConversionMatchesThePemOfTheSameKey) {
  json rsa = RsaJwk(*rsa_, "r");
  auto rsa_key = RsaPublicKeyFromJwk(rsa["n"].get<std::string>(), rsa["e"].get<std::string>(), "r");
  EXPECT_EQ(rsa_key.type, PublicKeyType::kRsa);
  EXPECT_EQ(rsa_key.pem, rsa_->public_pem);
  json ec = EcJwk(*ec_, "e");
  auto ec_key = EcP256PublicKeyFromJwk(ec["x"].get<std::string>(), ec["y"].get<std::string>(), "e");
  EXPECT_EQ(ec_key.type, PublicKeyType::kEcP256);
  EXPECT_EQ(ec_key.pem, ec_->public_pem);
}

TEST_F(JwtTest, JwksSkipsUnsupportedKeysAndNamesThemInErrors) {
  json jwks = {
      {"keys",
       {RsaJwk(*jwks_rsa_a_, "good"),
        {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "AAAA"}, {"kid", "ed"}},
        {{"kty", "EC"}, {"crv", "P-384"}, {"x", "AAAA"}, {"y", "AAAA"}, {"kid", "p384"}}}}};
  WriteFile("mixed_jwks.json", jwks.dump());
  JwtConfig config;
  config.jwks_file = PathOf("mixed_jwks.json");
  EXPECT_EQ(ErrorOf(config, Sign(JWT_ALG_RS256, jwks_rsa_a_->private_pem, Claims(), "good")), "");
  std::string error = ErrorOf(config, Sign(JWT_ALG_ES256, ec_->private_pem, Claims(), "p384"));
  EXPECT_EQ(error,
            "unknown key id 'p384' (the JWKS has it, but it was skipped: its curve P-384 is not "
            "supported (P-256 is))");
}

TEST_F(JwtTest, BadJwksFilesAreRejectedWithThePath) {
  struct Case {
    std::string name, contents, expected;
  };
  json ec_off_curve = EcJwk(*ec_, "bad-ec");
  std::string y;
  ASSERT_TRUE(Base64UrlDecode(ec_off_curve["y"].get<std::string>(), &y));
  y[31] = static_cast<char>(y[31] ^ 1);
  ec_off_curve["y"] = B64Url(y);
  const Case cases[] = {
      {"j1.json", "{\"keys\": [", "not valid JSON"},
      {"j2.json", "{\"kees\": []}", "not a JWKS"},
      {"j3.json", json({{"keys", {RsaJwk(*rsa_, ""), EcJwk(*ec_, "e")}}}).dump(),
       "key #0 has no kid; every key needs one when the JWKS holds 2 usable keys"},
      {"j4.json", json({{"keys", {ec_off_curve}}}).dump(),
       "key #0 (kid 'bad-ec'): cannot build EC public key: error:0800006B:elliptic curve "
       "routines::point is not on curve"},
      {"j5.json",
       json({{"keys", {{{"kty", "RSA"}, {"kid", "r"}, {"n", "!!"}, {"e", "AQAB"}}}}}).dump(),
       "key #0 (kid 'r'): member 'n' is not valid base64url"},
      {"j6.json", json({{"keys", json::array()}}).dump(), "has no usable keys"},
      {"j7.json", json({{"keys", {RsaJwk(*rsa_, "x"), EcJwk(*ec_, "x")}}}).dump(),
       "kid 'x' is used by more than one key"},
  };
  for (const Case &c : cases) {
    WriteFile(c.name, c.contents);
    JwtConfig config;
    config.jwks_file = PathOf(c.name);
    try {
      JwtVerifier::Create(config);
      ADD_FAILURE() << c.name << ": Create did not throw";
    } catch (const std::runtime_error &e) {
      std::string message = e.what();
      EXPECT_NE(message.find(PathOf(c.name)), std::string::npos) << message;
      EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    }
  }
}

// ---- Signatures ---------------------------------------------------------------------------

TEST_F(JwtTest, SignatureFromAnotherKeyIsRejected) {
  std::string forged = Sign(JWT_ALG_RS256, attacker_rsa_->private_pem, Claims(), "rsa-1");
  EXPECT_EQ(ErrorOf(FullConfig(), forged), "signature does not verify (alg RS256, key 'rsa-1')");
  // The failure leaves nothing in OpenSSL's per-thread error queue for the next TLS call to find.
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(JwtTest, TamperedPayloadIsRejected) {
  for (jwt_alg_t alg : {JWT_ALG_HS256, JWT_ALG_RS256, JWT_ALG_ES256}) {
    std::string key = alg == JWT_ALG_HS256   ? std::string(kSecret)
                      : alg == JWT_ALG_RS256 ? rsa_->private_pem
                                             : ec_->private_pem;
    std::string token = Sign(alg, key, Claims());
    ASSERT_EQ(ErrorOf(FullConfig(), token), "");
    std::string tampered =
        Part(token, 0) + "." + B64Url(Claims({{"sub", "admin"}})) + "." + Part(token, 2);
    EXPECT_EQ(ErrorOf(FullConfig(), tampered).rfind("signature does not verify", 0), 0u)
        << jwt_alg_str(alg);
  }
}

TEST_F(JwtTest, WrongSecretIsRejected) {
  std::string token = Sign(JWT_ALG_HS256, "another-secret-of-32-bytes-or-more!!", Claims());
  EXPECT_EQ(ErrorOf(FullConfig(), token),
            "signature does not verify (alg HS256, the HS256 secret)");
}

TEST_F(JwtTest, AlgNoneIsRejected) {
  for (const char *alg : {"none", "None", "NONE"}) {
    std::string token = HandToken(json({{"alg", alg}, {"typ", "JWT"}}).dump(), Claims());
    EXPECT_EQ(ErrorOf(FullConfig(), token), "alg none is not accepted") << alg;
  }
  // Even with a (meaningless) signature part.
  std::string token = HandToken("{\"alg\":\"none\"}", Claims(), "c2ln");
  EXPECT_EQ(ErrorOf(FullConfig(), token), "alg none is not accepted");
}

TEST_F(JwtTest, Hs256SignedWithThePublicKeyIsRejected) {
  // The classic algorithm confusion attack: HMAC keyed with the (public) RSA PEM file bytes.
  std::string forged = Sign(JWT_ALG_HS256, rsa_->public_pem, Claims({{"sub", "admin"}}), "rsa-1");
  // Proof the attack is real: libjwt alone, handed the public key, accepts this token.
  jwt_t *naive = nullptr;
  ASSERT_EQ(jwt_decode(&naive, forged.c_str(),
                       reinterpret_cast<const unsigned char *>(rsa_->public_pem.data()),
                       static_cast<int>(rsa_->public_pem.size())),
            0);
  jwt_free(naive);

  JwtConfig rsa_only;
  rsa_only.public_key_files = {{"rsa-1", PathOf("rsa.pem")}};
  EXPECT_EQ(ErrorOf(rsa_only, forged),
            "alg HS256 is not accepted: the gateway has no hs256_secret configured");
  // With a secret configured as well, HS256 is checked against the secret only.
  EXPECT_EQ(ErrorOf(FullConfig(), forged),
            "signature does not verify (alg HS256, the HS256 secret)");
}

TEST_F(JwtTest, UnknownKidIsRejected) {
  std::string token = Sign(JWT_ALG_RS256, rsa_->private_pem, Claims(), "k9");
  EXPECT_EQ(ErrorOf(FullConfig(), token), "unknown key id 'k9'");
}

TEST_F(JwtTest, KidOfAKeyOfAnotherTypeIsRejected) {
  std::string token = Sign(JWT_ALG_ES256, ec_->private_pem, Claims(), "rsa-1");
  EXPECT_EQ(ErrorOf(FullConfig(), token),
            "key 'rsa-1' is an RSA key, but the token says alg ES256");
}

TEST_F(JwtTest, UnsupportedAlgIsRejected) {
  std::string token = Sign(JWT_ALG_HS512, kSecret, Claims());
  EXPECT_EQ(ErrorOf(FullConfig(), token),
            "unsupported alg 'HS512' (accepted: HS256, RS256, ES256)");
  token = Sign(JWT_ALG_RS384, rsa_->private_pem, Claims(), "rsa-1");
  EXPECT_EQ(ErrorOf(FullConfig(), token),
            "unsupported alg 'RS384' (accepted: HS256, RS256, ES256)");
}

TEST_F(JwtTest, UnsupportedHeaderFeaturesAreRejected) {
  std::string typ = HandToken("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", Claims(), "c2ln");
  EXPECT_EQ(ErrorOf(FullConfig(), typ), "unsupported token typ 'at+jwt' (only JWT is accepted)");
  std::string crit =
      HandToken("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", Claims(), "c2ln");
  EXPECT_EQ(ErrorOf(FullConfig(), crit),
            "token has critical header extensions (crit), none of which are supported");
  std::string kid = HandToken("{\"alg\":\"RS256\",\"kid\":7}", Claims(), "c2ln");
  EXPECT_EQ(ErrorOf(FullConfig(), kid), "malformed token: header kid is not a string");
}

// ---- Time claims --------------------------------------------------------------------------

TEST_F(JwtTest, ExpiredTokenIsRejected) {
  std::string token = HsToken(Claims({{"exp", kNow - 120}}));
  EXPECT_EQ(ErrorOf(FullConfig(), token), "token expired 120 s ago");
}

TEST_F(JwtTest, NotYetValidTokenIsRejected) {
  std::string token = HsToken(Claims({{"nbf", kNow + 120}}));
  EXPECT_EQ(ErrorOf(FullConfig(), token), "token not valid yet: nbf is 120 s in the future");
}

TEST_F(JwtTest, TokenIssuedInTheFutureIsRejected) {
  std::string token = HsToken(Claims({{"iat", kNow + 120}}));
  EXPECT_EQ(ErrorOf(FullConfig(), token),
            "token issued in the future: iat is 120 s ahead of the gateway clock");
}

TEST_F(JwtTest, LeewayEdges) {
  const int64_t t = kNow;
  // exp: valid strictly before exp + leeway.
  std::string exp = HsToken(Claims({{"exp", t}, {"iat", t - 100}}));
  EXPECT_EQ(ErrorOf(FullConfig(), exp, t + kLeeway - 1), "");
  EXPECT_EQ(ErrorOf(FullConfig(), exp, t + kLeeway), "token expired 30 s ago");
  // nbf: valid from nbf - leeway on.
  std::string nbf = HsToken(Claims({{"nbf", t}, {"iat", t - 100}}));
  EXPECT_EQ(ErrorOf(FullConfig(), nbf, t - kLeeway), "");
  EXPECT_EQ(ErrorOf(FullConfig(), nbf, t - kLeeway - 1),
            "token not valid yet: nbf is 31 s in the future");
  // iat: at most leeway ahead of the clock.
  std::string iat = HsToken(Claims({{"iat", t}}));
  EXPECT_EQ(ErrorOf(FullConfig(), iat, t - kLeeway), "");
  EXPECT_EQ(ErrorOf(FullConfig(), iat, t - kLeeway - 1),
            "token issued in the future: iat is 31 s ahead of the gateway clock");
  // Zero leeway: exp is exclusive.
  JwtConfig strict = FullConfig();
  strict.leeway_seconds = 0;
  EXPECT_EQ(ErrorOf(strict, exp, t - 1), "");
  EXPECT_EQ(ErrorOf(strict, exp, t), "token expired 0 s ago");
}

// One rule for a token at verification and on a live session: it is valid until exp + leeway.
// A session's end (valid_until) is the first second Verify refuses the same token, so a token
// that just passed verification is never cut off at once.
TEST_F(JwtTest, ValidUntilIsExpPlusLeewayTheSameRuleAsVerify) {
  auto verifier = JwtVerifier::Create(FullConfig());
  std::string token = HsToken(Claims({{"exp", kNow - 5}}));  // expired 5 s ago
  VerifiedToken out;
  std::string error;
  ASSERT_TRUE(verifier->Verify(token, kNow, &out, &error)) << error;
  EXPECT_EQ(out.expires_at, kNow - 5);
  EXPECT_EQ(out.valid_until, kNow - 5 + kLeeway);
  EXPECT_TRUE(verifier->Verify(token, out.valid_until - 1, &out, &error)) << error;
  EXPECT_FALSE(verifier->Verify(token, out.valid_until, &out, &error));
}

TEST_F(JwtTest, FractionalTimesAreRoundedTheStrictWay) {
  std::string token = HsToken(Claims({{"exp", static_cast<double>(kNow) + 0.5}}));
  auto verifier = JwtVerifier::Create(FullConfig());
  VerifiedToken out;
  std::string error;
  ASSERT_TRUE(verifier->Verify(token, kNow - kLeeway - 1, &out, &error)) << error;
  EXPECT_EQ(out.expires_at, kNow);
  EXPECT_FALSE(verifier->Verify(token, kNow + kLeeway, &out, &error));
}

TEST_F(JwtTest, MissingOrNonNumericExpIsRejected) {
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"exp", nullptr}}))),
            "token has no exp claim; tokens without an expiry are not accepted");
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"exp", "tomorrow"}}))),
            "claim exp must be a number of seconds since the epoch");
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"nbf", true}}))),
            "claim nbf must be a number of seconds since the epoch");
}

// ---- aud, iss, sub ------------------------------------------------------------------------

TEST_F(JwtTest, AudienceStringAndArray) {
  JwtConfig config = FullConfig();
  config.audience = "syncline";
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"aud", "syncline"}}))), "");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"aud", {"web", "syncline"}}}))), "");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"aud", "billing"}}))),
            "audience mismatch: token aud is 'billing', expected 'syncline'");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"aud", {"web", "billing"}}}))),
            "audience mismatch: token aud [\"web\",\"billing\"] does not contain 'syncline'");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims())),
            "token has no aud claim; expected audience 'syncline'");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"aud", 5}}))),
            "claim aud must be a string or an array of strings");
  // Not configured: not checked.
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"aud", "billing"}}))), "");
}

TEST_F(JwtTest, Issuer) {
  JwtConfig config = FullConfig();
  config.issuer = "https://auth.example.com/";
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"iss", "https://auth.example.com/"}}))), "");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims({{"iss", "https://evil.example.com/"}}))),
            "issuer mismatch: token iss is 'https://evil.example.com/', expected "
            "'https://auth.example.com/'");
  EXPECT_EQ(ErrorOf(config, HsToken(Claims())),
            "token has no iss claim; expected issuer 'https://auth.example.com/'");
}

TEST_F(JwtTest, SubjectIsRequired) {
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"sub", nullptr}}))),
            "token has no sub claim; the gateway needs it as the user id");
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"sub", ""}}))),
            "claim sub must be a non-empty string");
  EXPECT_EQ(ErrorOf(FullConfig(), HsToken(Claims({{"sub", 42}}))),
            "claim sub must be a non-empty string");
}

// The claims reach the database as jsonb, which cannot hold U+0000: a token holding one in any
// claim is refused when verified, not accepted into a session whose every query would fail.
TEST_F(JwtTest, ClaimsHoldingNulAreRejected) {
  std::string header = Part(HsToken(Claims()), 0);
  // Signed right (HMAC-SHA256 with the suite's secret), so only the claims can refuse it.
  auto sign = [&](const std::string &payload) {
    std::string input = header + "." + B64Url(payload);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), kSecret, static_cast<int>(strlen(kSecret)),
         reinterpret_cast<const unsigned char *>(input.data()), input.size(), mac, &mac_len);
    return input + "." + B64Url(std::string(reinterpret_cast<const char *>(mac), mac_len));
  };
  EXPECT_EQ(ErrorOf(FullConfig(), sign(R"({"sub":"u","exp":1700003600,"role":"a\\u0000b"})")),
            "");  // an escaped backslash, then "u0000": fine
  for (const char *payload : {R"({"sub":"a\u0000b","exp":1700003600})",
                              R"({"sub":"u","exp":1700003600,"lists":["L1","x\u0000"]})",
                              R"({"sub":"u","exp":1700003600,"a\u0000":1})"}) {
    // libjwt 1.x's jansson refuses the escape itself; Verify checks the claims again, so a
    // libjwt that let it through would not let it into a session either.
    std::string error = ErrorOf(FullConfig(), sign(payload));
    EXPECT_TRUE(error.rfind("malformed token: libjwt cannot parse it", 0) == 0 ||
                error == "a claim holds U+0000, which PostgreSQL cannot store")
        << payload << ": " << error;
  }
}

// ---- Malformed input ----------------------------------------------------------------------

TEST_F(JwtTest, MalformedTokensSayWhatIsWrong) {
  std::string good = HsToken(Claims());
  std::string header = Part(good, 0), payload = Part(good, 1), sig = Part(good, 2);
  struct Case {
    std::string token, expected;
  };
  const Case cases[] = {
      {"", "malformed token: empty"},
      {"abc", "malformed token: expected three base64url parts separated by '.', found 1"},
      {header + "." + payload,
       "malformed token: expected three base64url parts separated by '.', found 2"},
      {good + ".x", "malformed token: expected three base64url parts separated by '.', found 4"},
      {"." + payload + "." + sig, "malformed token: header is empty"},
      {"e30*." + payload + "." + sig, "malformed token: header is not valid base64url"},
      {header + ".eyJzdWIi OiJ1In0." + sig, "malformed token: payload is not valid base64url"},
      {header + "." + payload + "." + sig + "=",
       "malformed token: signature is not valid base64url"},
      {B64Url("{\"alg\":") + "." + payload + "." + sig,
       "malformed token: header is not valid JSON"},
      {header + "." + B64Url("{\"sub\":\"u\",") + "." + sig,
       "malformed token: payload is not valid JSON"},
      {header + "." + B64Url("[1,2]") + "." + sig, "malformed token: payload is not a JSON object"},
      {B64Url("\"HS256\"") + "." + payload + "." + sig,
       "malformed token: header is not a JSON object"},
      {B64Url("{\"typ\":\"JWT\"}") + "." + payload + "." + sig,
       "malformed token: header has no alg"},
      {B64Url("{\"alg\":256}") + "." + payload + "." + sig,
       "malformed token: header alg is not a string"},
      {std::string(70 * 1024, 'a'), "malformed token: 71680 bytes, more than the 65536 accepted"},
  };
  for (const Case &c : cases) {
    EXPECT_EQ(ErrorOf(FullConfig(), c.token), c.expected) << c.token.substr(0, 80);
  }
}

TEST_F(JwtTest, ClaimsLibjwtCannotParseAreReportedAsMalformed) {
  // Valid JSON that jansson (inside libjwt) refuses: an integer beyond 64 bits.
  std::string header = Part(HsToken(Claims()), 0);
  std::string token = header + "." +
                      B64Url("{\"sub\":\"u\",\"n\":123456789012345678901234567890}") + "." +
                      B64Url("0123456789abcdef0123456789abcdef");
  EXPECT_EQ(ErrorOf(FullConfig(), token).rfind("malformed token: libjwt cannot parse it", 0), 0u);
}

TEST_F(JwtTest, NullErrorAndOutputPointersAreAllowed) {
  auto verifier = JwtVerifier::Create(FullConfig());
  EXPECT_TRUE(verifier->Verify(HsToken(Claims()), kNow, nullptr, nullptr));
  EXPECT_FALSE(verifier->Verify("x.y.z", kNow, nullptr, nullptr));
}

// ---- Configuration errors -----------------------------------------------------------------

std::string CreateError(const JwtConfig &config) {
  try {
    JwtVerifier::Create(config);
  } catch (const std::runtime_error &e) {
    return e.what();
  }
  return "(Create did not throw)";
}

TEST_F(JwtTest, UnreadableKeyFileNamesThePath) {
  JwtConfig config;
  config.public_key_files = {{"k1", PathOf("missing.pem")}};
  EXPECT_EQ(CreateError(config),
            "cannot read public key file " + PathOf("missing.pem") + ": No such file or directory");
  config.public_key_files = {{"k1", *dir_}};
  EXPECT_EQ(CreateError(config), "cannot read public key file " + *dir_ + ": Is a directory");
  config.public_key_files.clear();
  config.jwks_file = PathOf("missing.json");
  EXPECT_EQ(CreateError(config),
            "cannot read JWKS file " + PathOf("missing.json") + ": No such file or directory");
}

TEST_F(JwtTest, KeyFilesThatAreNotUsablePublicKeysAreRejected) {
  WriteFile("private.pem", rsa_->private_pem);
  TestKey small = GenerateKey(true, 1024);
  WriteFile("small.pem", small.public_pem);
  EVP_PKEY_free(small.pkey);
  JwtConfig config;
  config.public_key_files = {{"k1", PathOf("private.pem")}};
  std::string error = CreateError(config);
  EXPECT_EQ(
      error.rfind("public key file " + PathOf("private.pem") +
                      " (kid 'k1'): not a PEM public key (expected -----BEGIN PUBLIC KEY-----)",
                  0),
      0u)
      << error;
  config.public_key_files = {{"k1", PathOf("small.pem")}};
  EXPECT_EQ(CreateError(config), "public key file " + PathOf("small.pem") +
                                     " (kid 'k1'): RSA key is 1024 bits; at least 2048 are "
                                     "required (RFC 7518 3.3)");
}

TEST_F(JwtTest, InconsistentConfigurationsAreRejected) {
  JwtConfig none;
  EXPECT_EQ(CreateError(none),
            "no JWT keys configured: set hs256_secret, public_key_files or jwks_file");
  JwtConfig short_secret;
  short_secret.hs256_secret = "secret";
  EXPECT_EQ(CreateError(short_secret),
            "hs256_secret is 6 bytes; HS256 needs at least 32 (RFC 7518 3.2). Use a longer random "
            "secret");
  JwtConfig duplicate = FullConfig();
  duplicate.public_key_files.push_back({"rsa-1", PathOf("ec.pem")});
  EXPECT_EQ(CreateError(duplicate), "kid 'rsa-1' is configured twice (public key file " +
                                        PathOf("rsa.pem") + " and public key file " +
                                        PathOf("ec.pem") + ")");
  JwtConfig empty_kid = FullConfig();
  empty_kid.public_key_files[0].first = "";
  EXPECT_EQ(CreateError(empty_kid),
            "public key file " + PathOf("rsa.pem") +
                ": key has an empty kid; every public key needs a kid when more than one is "
                "configured");
  JwtConfig negative = FullConfig();
  negative.leeway_seconds = -1;
  EXPECT_EQ(CreateError(negative), "leeway_seconds is -1; it must be between 0 and 86400");
}

}  // namespace
