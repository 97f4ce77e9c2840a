// Gateway configuration: flags, environment fallbacks, and the errors for bad values.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "gateway/config.hpp"

namespace {

using syncline::gateway::Config;
using syncline::gateway::EnvLookup;
using syncline::gateway::ParseByteSize;
using syncline::gateway::ParseConfig;
using syncline::gateway::ParseListen;

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars](const std::string &name, std::string *value) {
    auto it = vars.find(name);
    if (it == vars.end()) return false;
    *value = it->second;
    return true;
  };
}

bool Parse(std::vector<std::string> args, std::map<std::string, std::string> env, Config *c,
           std::string *error) {
  return ParseConfig(args, Env(std::move(env)), c, error);
}

TEST(Config, DefaultsNeedOnlyAKey) {
  Config c;
  std::string error;
  ASSERT_TRUE(Parse({"--jwt-hs256-secret", "s"}, {}, &c, &error)) << error;
  EXPECT_EQ(c.listen_host, "127.0.0.1");
  EXPECT_EQ(c.listen_port, 8080);
  EXPECT_EQ(c.max_message_bytes, 1u << 20);
  EXPECT_EQ(c.pool_size, 4);
  EXPECT_EQ(c.fanout_threads, 0);  // one per CPU, at most 4
  EXPECT_EQ(c.jwt.hs256_secret, "s");
  EXPECT_EQ(c.jwt.leeway_seconds, 30);
  EXPECT_FALSE(c.log_debug);
}

TEST(Config, LogLevel) {
  Config c;
  std::string error;
  ASSERT_TRUE(Parse({"--jwt-hs256-secret=s", "--log-level", "debug"}, {}, &c, &error)) << error;
  EXPECT_TRUE(c.log_debug);
  Config e;
  ASSERT_TRUE(Parse({"--jwt-hs256-secret=s"}, {{"SYNCLINE_LOG_LEVEL", "debug"}}, &e, &error))
      << error;
  EXPECT_TRUE(e.log_debug);
  Config f;
  ASSERT_TRUE(Parse({"--jwt-hs256-secret=s", "--log-level=info"}, {{"SYNCLINE_LOG_LEVEL", "debug"}},
                    &f, &error))
      << error;
  EXPECT_FALSE(f.log_debug);  // the flag wins
}

TEST(Config, TokensAreRequiredSoSomeKeyMustBeConfigured) {
  Config c;
  std::string error;
  EXPECT_FALSE(Parse({}, {}, &c, &error));
  EXPECT_NE(error.find("no JWT key configured"), std::string::npos) << error;
}

TEST(Config, HelpNeedsNothingElse) {
  Config c;
  std::string error;
  ASSERT_TRUE(Parse({"--help"}, {}, &c, &error)) << error;
  EXPECT_TRUE(c.help);
}

TEST(Config, EnvironmentIsUsedAndFlagsWin) {
  Config c;
  std::string error;
  ASSERT_TRUE(Parse({"--listen", "0.0.0.0:9000"},
                    {{"SYNCLINE_DATABASE_URL", "postgres://x/db"},
                     {"SYNCLINE_LISTEN", "127.0.0.1:7000"},
                     {"SYNCLINE_JWT_HS256_SECRET", "env-secret"},
                     {"SYNCLINE_POOL_SIZE", "8"},
                     {"SYNCLINE_FANOUT_THREADS", "3"}},
                    &c, &error))
      << error;
  EXPECT_EQ(c.database_url, "postgres://x/db");
  EXPECT_EQ(c.listen_host, "0.0.0.0");
  EXPECT_EQ(c.listen_port, 9000);
  EXPECT_EQ(c.jwt.hs256_secret, "env-secret");
  EXPECT_EQ(c.pool_size, 8);
  EXPECT_EQ(c.fanout_threads, 3);
}

TEST(Config, EqualsFormAndRepeatedPublicKeys) {
  Config c;
  std::string error;
  ASSERT_TRUE(
      Parse({"--jwt-public-key=k1=/a.pem", "--jwt-public-key", "k2=/b=c.pem", "--jwt-audience=app",
             "--jwt-issuer", "https://issuer", "--jwt-leeway=5", "--max-message-bytes=64k",
             "--send-queue-bytes", "2MiB", "--max-connections", "50"},
            {{"SYNCLINE_JWT_PUBLIC_KEY", "env=/env.pem"}}, &c, &error))
      << error;
  ASSERT_EQ(c.jwt.public_key_files.size(), 2u);  // flags replace the environment's keys
  EXPECT_EQ(c.jwt.public_key_files[0], std::make_pair(std::string("k1"), std::string("/a.pem")));
  EXPECT_EQ(c.jwt.public_key_files[1], std::make_pair(std::string("k2"), std::string("/b=c.pem")));
  EXPECT_EQ(c.jwt.audience, "app");
  EXPECT_EQ(c.jwt.issuer, "https://issuer");
  EXPECT_EQ(c.jwt.leeway_seconds, 5);
  EXPECT_EQ(c.max_message_bytes, 64u * 1024);
  EXPECT_EQ(c.send_queue_bytes, 2u << 20);
  EXPECT_EQ(c.max_connections, 50);
}

TEST(Config, EnvironmentMayListSeveralPublicKeys) {
  Config c;
  std::string error;
  ASSERT_TRUE(Parse({}, {{"SYNCLINE_JWT_PUBLIC_KEY", "a=/a.pem,b=/b.pem"}}, &c, &error)) << error;
  ASSERT_EQ(c.jwt.public_key_files.size(), 2u);
  EXPECT_EQ(c.jwt.public_key_files[1].first, "b");
}

TEST(Config, BadValuesNameTheOption) {
  struct Case {
    std::vector<std::string> args;
    const char *expect;
  };
  std::vector<Case> cases = {
      {{"--listen", "nohost"}, "--listen"},
      {{"--listen", "h:99999"}, "--listen"},
      {{"--pool-size", "0"}, "--pool-size"},
      {{"--pool-size", "four"}, "--pool-size"},
      {{"--fanout-threads", "-1"}, "--fanout-threads"},
      {{"--fanout-threads", "65"}, "--fanout-threads"},
      {{"--max-message-bytes", "12"}, "--max-message-bytes"},
      {{"--max-message-bytes", "1T"}, "--max-message-bytes"},
      {{"--jwt-public-key", "nokid"}, "kid=path.pem"},
      {{"--jwt-leeway", "-1"}, "--jwt-leeway"},
      {{"--frobnicate", "1"}, "unknown option --frobnicate"},
      {{"stray"}, "unexpected argument"},
      {{"--pool-size"}, "needs a value"},
      {{"--tls-cert", "/c.pem"}, "--tls-key"},
      {{"--log-level", "verbose"}, "--log-level"},
  };
  for (const auto &c : cases) {
    Config config;
    std::string error;
    std::vector<std::string> args = c.args;
    args.push_back("--jwt-hs256-secret=s");
    if (c.args == std::vector<std::string>{"--pool-size"})
      args = {"--jwt-hs256-secret=s", "--pool-size"};
    EXPECT_FALSE(ParseConfig(args, Env({}), &config, &error)) << c.args[0];
    EXPECT_NE(error.find(c.expect), std::string::npos) << "error was: " << error;
  }
}

TEST(Config, BadEnvironmentNamesTheVariable) {
  Config c;
  std::string error;
  EXPECT_FALSE(Parse({"--jwt-hs256-secret=s"}, {{"SYNCLINE_POOL_SIZE", "lots"}}, &c, &error));
  EXPECT_NE(error.find("SYNCLINE_POOL_SIZE"), std::string::npos) << error;
}

TEST(Listen, Forms) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseListen("127.0.0.1:8080", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8080);
  ASSERT_TRUE(ParseListen(":9", &host, &port));
  EXPECT_EQ(host, "0.0.0.0");
  ASSERT_TRUE(ParseListen("[::1]:443", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(ParseListen("8080", &host, &port));
  EXPECT_FALSE(ParseListen("h:", &host, &port));
}

TEST(ByteSize, Units) {
  size_t v = 0;
  ASSERT_TRUE(ParseByteSize("1M", &v));
  EXPECT_EQ(v, 1u << 20);
  ASSERT_TRUE(ParseByteSize("64KiB", &v));
  EXPECT_EQ(v, 64u << 10);
  ASSERT_TRUE(ParseByteSize("100", &v));
  EXPECT_EQ(v, 100u);
  EXPECT_FALSE(ParseByteSize("M", &v));
  EXPECT_FALSE(ParseByteSize("5X", &v));
}

}  // namespace
