// Gateway configuration: command-line flags with environment fallbacks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/jwt.hpp"

namespace syncline::gateway {

struct Config {
  std::string database_url;  // libpq conninfo or URI; empty = libpq defaults (PG* env)
  std::string listen_host = "127.0.0.1";
  int listen_port = 8080;
  JwtConfig jwt;
  size_t max_message_bytes = 1 << 20;
  int max_connections = 10000;
  int max_connections_per_user = 64;  // per JWT subject; 0 = no limit
  size_t send_queue_bytes = 8 << 20;
  int pool_size = 4;
  int fanout_threads = 0;       // threads writing a live round's frames; 0: one per CPU, at most 4
  int page_ops = 10000;         // ops per bucket_data query
  size_t page_bytes = 4 << 20;  // ... and about this many bytes (past the first op)
  size_t live_round_bytes = 16 << 20;  // live ops held per round; buckets past it catch up alone
  size_t write_queue_bytes = 4 << 20;  // WriteBatch bytes queued per connection
  int statement_timeout_ms = 30000;    // statement_timeout of gateway sessions; 0 = server's
  int lock_timeout_ms = 5000;          // lock_timeout of gateway sessions; 0 = server's
  int token_expiring_seconds = 30;     // TokenExpiring is sent this long before exp
  int hello_timeout_seconds = 30;      // a connection without Hello is closed after this
  int shutdown_grace_ms = 2000;
  bool log_debug = false;         // --log-level debug: each live round's and catch-up's decisions
  std::string cors_origin = "*";  // Access-Control-Allow-Origin for the PowerSync endpoints
  std::string tls_cert;
  std::string tls_key;
  bool help = false;
};

// Reads an environment variable; returns false when unset.
using EnvLookup = std::function<bool(const std::string &name, std::string *value)>;

// The process environment.
EnvLookup ProcessEnv();

// Fills *config from args (argv without argv[0]) and env; flags win over env.
// Returns false with a message naming the bad flag or value.
bool ParseConfig(const std::vector<std::string> &args, const EnvLookup &env, Config *config,
                 std::string *error);

// Text printed for --help.
std::string UsageText();

// Splits "host:port", "[v6]:port" or ":port"; false when malformed.
bool ParseListen(const std::string &text, std::string *host, int *port);

// Parses "123", "64k", "1M", "1MiB"; false when malformed.
bool ParseByteSize(const std::string &text, size_t *out);

}  // namespace syncline::gateway
