#include "gateway/config.hpp"

#include <cctype>
#include <cstdlib>
#include <map>

namespace syncline::gateway {
namespace {

bool ParseInt(const std::string &text, int64_t min, int64_t max, int64_t *out) {
  if (text.empty()) return false;
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max) return false;
  *out = v;
  return true;
}

// Applies one option by its long name. Returns false with *error set.
bool ApplyOption(const std::string &name, const std::string &value, Config *c, std::string *error) {
  auto bad = [&](const char *what) {
    *error = "--" + name + ": " + what + " (got \"" + value + "\")";
    return false;
  };
  int64_t n = 0;
  if (name == "database-url") {
    c->database_url = value;
  } else if (name == "listen") {
    if (!ParseListen(value, &c->listen_host, &c->listen_port)) return bad("expected host:port");
  } else if (name == "jwt-hs256-secret") {
    c->jwt.hs256_secret = value;
  } else if (name == "jwt-public-key") {
    size_t eq = value.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == value.size())
      return bad("expected kid=path.pem");
    c->jwt.public_key_files.emplace_back(value.substr(0, eq), value.substr(eq + 1));
  } else if (name == "jwks") {
    c->jwt.jwks_file = value;
  } else if (name == "jwt-audience") {
    c->jwt.audience = value;
  } else if (name == "jwt-issuer") {
    c->jwt.issuer = value;
  } else if (name == "jwt-leeway") {
    if (!ParseInt(value, 0, 86400, &n)) return bad("expected seconds 0..86400");
    c->jwt.leeway_seconds = n;
  } else if (name == "max-message-bytes") {
    size_t s = 0;
    if (!ParseByteSize(value, &s) || s < 64 || s > (256u << 20))
      return bad("expected a size between 64 and 256M");
    c->max_message_bytes = s;
  } else if (name == "max-connections") {
    if (!ParseInt(value, 1, 1000000, &n)) return bad("expected 1..1000000");
    c->max_connections = static_cast<int>(n);
  } else if (name == "max-connections-per-user") {
    if (!ParseInt(value, 0, 1000000, &n)) return bad("expected 0..1000000 (0 = no limit)");
    c->max_connections_per_user = static_cast<int>(n);
  } else if (name == "send-queue-bytes") {
    size_t s = 0;
    if (!ParseByteSize(value, &s) || s < 4096) return bad("expected a size of at least 4k");
    c->send_queue_bytes = s;
  } else if (name == "pool-size") {
    if (!ParseInt(value, 1, 64, &n)) return bad("expected 1..64");
    c->pool_size = static_cast<int>(n);
  } else if (name == "fanout-threads") {
    if (!ParseInt(value, 0, 64, &n)) return bad("expected 0..64 (0 = one per CPU, at most 4)");
    c->fanout_threads = static_cast<int>(n);
  } else if (name == "page-ops") {
    if (!ParseInt(value, 1, 1000000, &n)) return bad("expected 1..1000000");
    c->page_ops = static_cast<int>(n);
  } else if (name == "page-bytes") {
    size_t s = 0;
    if (!ParseByteSize(value, &s) || s < 4096 || s > (1u << 30))
      return bad("expected a size between 4k and 1G");
    c->page_bytes = s;
  } else if (name == "live-round-bytes") {
    size_t s = 0;
    if (!ParseByteSize(value, &s) || s < 4096) return bad("expected a size of at least 4k");
    c->live_round_bytes = s;
  } else if (name == "write-queue-bytes") {
    size_t s = 0;
    if (!ParseByteSize(value, &s) || s < 4096) return bad("expected a size of at least 4k");
    c->write_queue_bytes = s;
  } else if (name == "db-statement-timeout") {
    if (!ParseInt(value, 0, 86400000, &n)) return bad("expected milliseconds 0..86400000");
    c->statement_timeout_ms = static_cast<int>(n);
  } else if (name == "db-lock-timeout") {
    if (!ParseInt(value, 0, 86400000, &n)) return bad("expected milliseconds 0..86400000");
    c->lock_timeout_ms = static_cast<int>(n);
  } else if (name == "token-expiring-seconds") {
    if (!ParseInt(value, 0, 3600, &n)) return bad("expected 0..3600");
    c->token_expiring_seconds = static_cast<int>(n);
  } else if (name == "hello-timeout") {
    if (!ParseInt(value, 1, 3600, &n)) return bad("expected 1..3600 seconds");
    c->hello_timeout_seconds = static_cast<int>(n);
  } else if (name == "log-level") {
    if (value != "info" && value != "debug") return bad("expected info or debug");
    c->log_debug = value == "debug";
  } else if (name == "cors-origin") {
    if (value.empty()) return bad("expected * or an origin such as https://app.example.com");
    c->cors_origin = value;
  } else if (name == "tls-cert") {
    c->tls_cert = value;
  } else if (name == "tls-key") {
    c->tls_key = value;
  } else {
    *error = "unknown option --" + name + " (see --help)";
    return false;
  }
  return true;
}

// Options that take a value, with the environment variable that may set them.
const std::map<std::string, const char *> &ValueOptions() {
  static const std::map<std::string, const char *> options = {
      {"database-url", "SYNCLINE_DATABASE_URL"},
      {"listen", "SYNCLINE_LISTEN"},
      {"jwt-hs256-secret", "SYNCLINE_JWT_HS256_SECRET"},
      {"jwt-public-key", "SYNCLINE_JWT_PUBLIC_KEY"},
      {"jwks", "SYNCLINE_JWKS"},
      {"jwt-audience", "SYNCLINE_JWT_AUDIENCE"},
      {"jwt-issuer", "SYNCLINE_JWT_ISSUER"},
      {"jwt-leeway", "SYNCLINE_JWT_LEEWAY"},
      {"max-message-bytes", "SYNCLINE_MAX_MESSAGE_BYTES"},
      {"max-connections", "SYNCLINE_MAX_CONNECTIONS"},
      {"max-connections-per-user", "SYNCLINE_MAX_CONNECTIONS_PER_USER"},
      {"send-queue-bytes", "SYNCLINE_SEND_QUEUE_BYTES"},
      {"pool-size", "SYNCLINE_POOL_SIZE"},
      {"fanout-threads", "SYNCLINE_FANOUT_THREADS"},
      {"page-ops", "SYNCLINE_PAGE_OPS"},
      {"page-bytes", "SYNCLINE_PAGE_BYTES"},
      {"live-round-bytes", "SYNCLINE_LIVE_ROUND_BYTES"},
      {"write-queue-bytes", "SYNCLINE_WRITE_QUEUE_BYTES"},
      {"db-statement-timeout", "SYNCLINE_DB_STATEMENT_TIMEOUT"},
      {"db-lock-timeout", "SYNCLINE_DB_LOCK_TIMEOUT"},
      {"token-expiring-seconds", "SYNCLINE_TOKEN_EXPIRING_SECONDS"},
      {"hello-timeout", "SYNCLINE_HELLO_TIMEOUT"},
      {"cors-origin", "SYNCLINE_CORS_ORIGIN"},
      {"log-level", "SYNCLINE_LOG_LEVEL"},
      {"tls-cert", "SYNCLINE_TLS_CERT"},
      {"tls-key", "SYNCLINE_TLS_KEY"},
  };
  return options;
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string &name, std::string *value) {
    const char *v = std::getenv(name.c_str());
    if (v == nullptr) return false;
    *value = v;
    return true;
  };
}

bool ParseListen(const std::string &text, std::string *host, int *port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  int64_t p = 0;
  if (!ParseInt(text.substr(colon + 1), 0, 65535, &p)) return false;
  *host = h.empty() ? "0.0.0.0" : h;
  *port = static_cast<int>(p);
  return true;
}

bool ParseByteSize(const std::string &text, size_t *out) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) i++;
  if (i == 0 || i > 12) return false;
  unsigned long long v = std::strtoull(text.substr(0, i).c_str(), nullptr, 10);
  std::string unit = text.substr(i);
  for (auto &ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (unit.empty() || unit == "b") {
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    v <<= 10;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    v <<= 20;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    v <<= 30;
  } else {
    return false;
  }
  *out = static_cast<size_t>(v);
  return true;
}

bool ParseConfig(const std::vector<std::string> &args, const EnvLookup &env, Config *config,
                 std::string *error) {
  const auto &options = ValueOptions();
  // Environment first, so that flags override it.
  for (const auto &[name, var] : options) {
    std::string value;
    if (env && env(var, &value) && !value.empty()) {
      if (name == "jwt-public-key") {
        // SYNCLINE_JWT_PUBLIC_KEY may hold several kid=path pairs separated by ','.
        size_t start = 0;
        while (start <= value.size()) {
          size_t comma = value.find(',', start);
          if (comma == std::string::npos) comma = value.size();
          if (!ApplyOption(name, value.substr(start, comma - start), config, error)) {
            *error = std::string(var) + ": " + *error;
            return false;
          }
          start = comma + 1;
        }
      } else if (!ApplyOption(name, value, config, error)) {
        *error = std::string(var) + ": " + *error;
        return false;
      }
    }
  }
  bool public_keys_from_flags = false;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string &arg = args[i];
    if (arg == "--help" || arg == "-h") {
      config->help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      *error = "unexpected argument \"" + arg + "\" (see --help)";
      return false;
    }
    std::string name = arg.substr(2);
    std::string value;
    size_t eq = name.find('=');
    bool has_value = false;
    if (eq != std::string::npos) {  // --name=value (for jwt-public-key: --jwt-public-key=kid=path)
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (options.count(name) == 0) {
      *error = "unknown option --" + name + " (see --help)";
      return false;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        *error = "--" + name + " needs a value";
        return false;
      }
      value = args[++i];
    }
    if (name == "jwt-public-key" && !public_keys_from_flags) {
      // Flags replace keys from the environment rather than adding to them.
      config->jwt.public_key_files.clear();
      public_keys_from_flags = true;
    }
    if (!ApplyOption(name, value, config, error)) return false;
  }
  if (config->help) return true;
  if (config->jwt.hs256_secret.empty() && config->jwt.public_key_files.empty() &&
      config->jwt.jwks_file.empty()) {
    *error =
        "no JWT key configured: tokens are required, so give --jwt-hs256-secret, "
        "--jwt-public-key kid=path.pem or --jwks path";
    return false;
  }
  if (config->tls_cert.empty() != config->tls_key.empty()) {
    *error = "--tls-cert and --tls-key must be given together";
    return false;
  }
  return true;
}

std::string UsageText() {
  return R"(Usage: syncline-gateway [options]

Serves Syncline clients over websockets (subprotocol syncline.v1) from a
PostgreSQL database that has the syncline extension. Every option may also be
set by the environment variable shown; flags win.

Database
  --database-url URL        libpq URI or conninfo (SYNCLINE_DATABASE_URL;
                            default: libpq's PG* environment)
  --pool-size N             query connections shared by all clients (default 4)
  --page-ops N              ops per bucket_data query (default 10000)
  --page-bytes SIZE         ... and about this many bytes past the first op, for
                            initial sync, catch-up and live pages (default 4M)
  --live-round-bytes SIZE   live ops held for one fan-out round; a bucket whose
                            change is bigger is caught up per client (default 16M)
  --fanout-threads N        threads that write a live round to the sockets
                            (default 0: one per CPU, at most 4; 1: the event
                            loop's thread alone)
  --db-statement-timeout MS statement_timeout of the gateway's sessions
                            (default 30000; 0 = the server's setting)
  --db-lock-timeout MS      lock_timeout of the gateway's sessions (default 5000;
                            0 = the server's setting)
Listening
  --listen HOST:PORT        (SYNCLINE_LISTEN, default 127.0.0.1:8080); also
                            serves GET /healthz and GET /metrics
  --tls-cert PATH --tls-key PATH   serve wss:// and https://
  --cors-origin ORIGIN      Access-Control-Allow-Origin of the PowerSync endpoints
                            (SYNCLINE_CORS_ORIGIN; default *, or one origin)
PowerSync front (the official PowerSync SDKs connect unchanged)
  POST /sync/stream, GET /write-checkpoint2.json, POST /upload; same token,
  limits and live fan-out as syncline.v1 (see gateway/README.md)
Authentication (a token is always required)
  --jwt-hs256-secret S      HS256 shared secret
  --jwt-public-key KID=PEM  RS256/ES256 public key file for key id KID (repeatable;
                            env: comma-separated list)
  --jwks PATH               JSON Web Key Set file
  --jwt-audience AUD        required "aud"
  --jwt-issuer ISS          required "iss"
  --jwt-leeway SECONDS      clock skew allowed for exp/nbf (default 30)
  --token-expiring-seconds N   send TokenExpiring this long before exp (default 30)
  --hello-timeout SECONDS   close connections that send no Hello (default 30)
Limits
  --max-message-bytes SIZE  largest client message or HTTP request body
                            (default 1M; bigger -> close 1009 / HTTP 413)
  --max-connections N       concurrent websocket clients (default 10000)
  --max-connections-per-user N   per token subject ("sub"); 0 = no limit (default 64)
  --send-queue-bytes SIZE   per-connection send queue; a client further behind is
                            disconnected with a retryable error (default 8M)
  --write-queue-bytes SIZE  WriteBatch bytes waiting per connection; a batch past
                            it gets WriteAck RETRY "BUSY" (default 4M)
Logging
  --log-level LEVEL         info (default): connections, syncs, errors; debug: also
                            each live round and the catch-ups and rechecks it starts
                            (SYNCLINE_LOG_LEVEL)
  --help                    this text
)";
}

}  // namespace syncline::gateway
