// Plain HTTP beside the websockets: routing (404 / 405 at once), CORS, request bodies under
// --max-message-bytes, and JSON responses. /healthz and /metrics are answered by OnHttp
// (gateway.cpp); the PowerSync endpoints by powersync_front.cpp.
#include <strings.h>

#include <time.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "gateway/gateway.hpp"

namespace syncline::gateway {
namespace {

struct Route {
  const char *path;
  const char *method;  // the one method served
  bool cors;           // called by browser apps on other origins
};

constexpr Route kRoutes[] = {
    {"/healthz", "GET", false},     {"/metrics", "GET", false},
    {"/sync/stream", "POST", true}, {"/write-checkpoint2.json", "GET", true},
    {"/upload", "POST", true},
};

const Route *FindRoute(const std::string &path) {
  for (const Route &r : kRoutes)
    if (path == r.path) return &r;
  return nullptr;
}

// The request method, from the header token lws parsed the request line into.
std::string MethodOf(lws *wsi) {
  static const struct {
    lws_token_indexes token;
    const char *name;
  } kMethods[] = {
      {WSI_TOKEN_GET_URI, "GET"},         {WSI_TOKEN_POST_URI, "POST"},
      {WSI_TOKEN_OPTIONS_URI, "OPTIONS"}, {WSI_TOKEN_PUT_URI, "PUT"},
      {WSI_TOKEN_PATCH_URI, "PATCH"},     {WSI_TOKEN_DELETE_URI, "DELETE"},
      {WSI_TOKEN_HEAD_URI, "HEAD"},       {WSI_TOKEN_CONNECT, "CONNECT"},
  };
  for (const auto &m : kMethods)
    if (lws_hdr_total_length(wsi, m.token) > 0) return m.name;
  return "?";
}

// A request header's value, or "" when absent or longer than max.
std::string CopyHeader(lws *wsi, lws_token_indexes token, int max = 16384) {
  int n = lws_hdr_total_length(wsi, token);
  if (n <= 0 || n > max) return "";
  std::string v(static_cast<size_t>(n) + 1, '\0');
  if (lws_hdr_copy(wsi, &v[0], n + 1, token) < 0) return "";
  v.resize(strlen(v.c_str()));
  return v;
}

bool AddHeader(lws *wsi, const char *name, const std::string &value, unsigned char **p,
               unsigned char *end) {
  return lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char *>(name),
                                     reinterpret_cast<const unsigned char *>(value.data()),
                                     static_cast<int>(value.size()), p, end) == 0;
}

}  // namespace

bool Gateway::AddCorsHeaders(lws *wsi, const std::string &origin, unsigned char **p,
                             unsigned char *end) {
  const std::string &allowed = config_.cors_origin;
  std::string value;
  if (allowed == "*")
    value = "*";
  else if (!origin.empty() && origin == allowed)
    value = origin;
  else
    return true;  // not an origin we serve: no CORS headers, the browser refuses
  return AddHeader(wsi, "access-control-allow-origin:", value, p, end) &&
         (allowed == "*" || AddHeader(wsi, "vary:", "Origin", p, end)) &&
         AddHeader(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS", p, end) &&
         AddHeader(wsi,
                   "access-control-allow-headers:", "Authorization, Content-Type, X-User-Agent", p,
                   end) &&
         AddHeader(wsi, "access-control-expose-headers:", "Retry-After", p, end) &&
         AddHeader(wsi, "access-control-max-age:", "86400", p, end);
}

int Gateway::OnHttpRequest(lws *wsi, Pss *pss, const std::string &path) {
  std::string method = MethodOf(wsi);
  const Route *route = FindRoute(path);
  if (route && method == route->method && !route->cors) return -2;  // /healthz, /metrics

  auto *x = new HttpExchange();
  x->id = next_exchange_id_++;
  x->wsi = wsi;
  x->method = method;
  x->path = path;
  x->origin = CopyHeader(wsi, WSI_TOKEN_ORIGIN, 1024);
  std::string auth = CopyHeader(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
    x->auth_present = true;
    // PowerSync's SDKs send "Token <jwt>"; "Bearer <jwt>" is accepted too.
    for (const char *scheme : {"Token ", "Bearer "}) {
      size_t n = strlen(scheme);
      if (auth.size() > n && strncasecmp(auth.c_str(), scheme, n) == 0) {
        x->token = auth.substr(n);
        break;
      }
    }
  }
  exchanges_[x->id] = x;
  pss->exchange = x;
  bool has_body = method == "POST" || method == "PUT" || method == "PATCH";

  if (!route) {
    x->close_after = has_body;
    RespondError(x, HTTP_STATUS_NOT_FOUND, "NOT_FOUND",
                 "no such endpoint: " + path +
                     " (this gateway serves POST /sync/stream, GET /write-checkpoint2.json, POST "
                     "/upload, GET /healthz, GET /metrics and syncline.v1 websockets)");
    return 0;
  }
  if (method == "OPTIONS" && route->cors) {
    Respond(x, HTTP_STATUS_NO_CONTENT, "", {}, nullptr);  // CORS preflight
    return 0;
  }
  if (method != route->method) {
    x->close_after = has_body;
    RespondError(x, HTTP_STATUS_METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED",
                 path + " takes " + route->method + ", not " + method, 0);
    return 0;
  }
  if (method == "GET") {
    HandleWriteCheckpoint(x);
    return 0;
  }
  // A POST: its body arrives in LWS_CALLBACK_HTTP_BODY. One over the limit is read and dropped,
  // then answered 413 (a client still sending would not see an answer sent earlier: the
  // connection closes under it); one announced as far over the limit is refused at once.
  std::string length = CopyHeader(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, 32);
  if (!length.empty()) {
    unsigned long long n = std::strtoull(length.c_str(), nullptr, 10);
    if (n > 16ull * config_.max_message_bytes) {
      x->close_after = true;
      RespondError(x, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "TOO_BIG",
                   "request body of " + length + " bytes is over the limit of " +
                       std::to_string(config_.max_message_bytes) + " bytes");
      return 0;
    }
    if (n == 0) return OnHttpBodyComplete(pss);  // no body callbacks will come
  }
  return 0;
}

int Gateway::OnHttpBody(Pss *pss, const void *in, size_t len) {
  HttpExchange *x = pss->exchange;
  if (x == nullptr || x->responding) return 0;
  if (x->body.size() + len > config_.max_message_bytes) {
    x->body_too_big = true;
    x->body.clear();
    return 0;
  }
  if (!x->body_too_big) x->body.append(static_cast<const char *>(in), len);
  metrics_.bytes_in += len;
  return 0;
}

int Gateway::OnHttpBodyComplete(Pss *pss) {
  HttpExchange *x = pss->exchange;
  if (x == nullptr || x->responding || x->waiting) return 0;
  if (x->body_too_big) {
    RespondError(
        x, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "TOO_BIG",
        "request body over the limit of " + std::to_string(config_.max_message_bytes) + " bytes");
    return 0;
  }
  if (x->path == "/sync/stream") {
    StartPowerSyncStream(pss, x);
  } else if (x->path == "/upload") {
    HandleUpload(x);
  }
  return 0;
}

void Gateway::Respond(HttpExchange *x, unsigned status, const std::string &body,
                      const std::vector<std::pair<std::string, std::string>> &headers,
                      const char *content_type) {
  if (x->responding) return;
  x->responding = true;
  x->waiting = false;
  unsigned char buffer[LWS_PRE + 2048];
  unsigned char *start = buffer + LWS_PRE, *p = start, *end = buffer + sizeof buffer - 1;
  bool ok =
      lws_add_http_header_status(x->wsi, status, &p, end) == 0 &&
      (content_type == nullptr || AddHeader(x->wsi, "content-type:", content_type, &p, end)) &&
      (status == HTTP_STATUS_NO_CONTENT ||
       lws_add_http_header_content_length(x->wsi, body.size(), &p, end) == 0) &&
      AddHeader(x->wsi, "cache-control:", "no-store", &p, end) &&
      AddCorsHeaders(x->wsi, x->origin, &p, end);
  for (const auto &[name, value] : headers)
    ok = ok && AddHeader(x->wsi, name.c_str(), value, &p, end);
  if (x->close_after) ok = ok && AddHeader(x->wsi, "connection:", "close", &p, end);
  ok = ok && lws_finalize_http_header(x->wsi, &p, end) == 0;
  if (!ok) {
    x->close_after = true;  // cannot happen with these sizes; close rather than send half a head
    x->head.clear();
  } else {
    x->head.assign(LWS_PRE, '\0');
    x->head.append(reinterpret_cast<char *>(start), static_cast<size_t>(p - start));
  }
  x->payload.assign(LWS_PRE, '\0');
  x->payload.append(body);
  lws_callback_on_writable(x->wsi);
}

void Gateway::RespondError(HttpExchange *x, unsigned status, const std::string &code,
                           const std::string &message, int retry_after_seconds) {
  nlohmann::json body = {{"error", {{"code", code}, {"status", status}, {"description", message}}}};
  std::vector<std::pair<std::string, std::string>> headers;
  if (retry_after_seconds > 0)
    headers.emplace_back("retry-after:", std::to_string(retry_after_seconds));
  if (status == HTTP_STATUS_METHOD_NOT_ALLOWED) {
    const Route *route = FindRoute(x->path);
    headers.emplace_back("allow:", std::string(route ? route->method : "GET") +
                                       (route && route->cors ? ", OPTIONS" : ""));
  }
  if (status == HTTP_STATUS_UNAUTHORIZED) headers.emplace_back("www-authenticate:", "Token");
  fprintf(stderr, "syncline-gateway: http %s %s -> %u %s\n", x->method.c_str(), x->path.c_str(),
          status, message.c_str());
  Respond(x, status, body.dump() + "\n", headers);
}

int Gateway::OnExchangeWriteable(Pss *pss) {
  HttpExchange *x = pss->exchange;
  if (!x->responding) return 0;
  if (x->head.empty()) return -1;
  if (!x->head_written) {
    x->head_written = true;
    size_t n = x->head.size() - LWS_PRE;
    if (lws_write(x->wsi, reinterpret_cast<unsigned char *>(&x->head[LWS_PRE]), n,
                  LWS_WRITE_HTTP_HEADERS) < static_cast<int>(n))
      return -1;
    if (x->payload.size() > LWS_PRE) {
      lws_callback_on_writable(x->wsi);
      return 0;
    }
  } else {
    size_t n = x->payload.size() - LWS_PRE;
    if (lws_write(x->wsi, reinterpret_cast<unsigned char *>(&x->payload[LWS_PRE]), n,
                  LWS_WRITE_HTTP_FINAL) < static_cast<int>(n))
      return -1;
    metrics_.bytes_out += n;
  }
  bool close = x->close_after;
  lws *wsi = x->wsi;
  exchanges_.erase(x->id);
  delete x;
  pss->exchange = nullptr;
  if (close || lws_http_transaction_completed(wsi)) return -1;
  return 0;
}

void Gateway::OnExchangeClosed(Pss *pss) {
  exchanges_.erase(pss->exchange->id);
  delete pss->exchange;
  pss->exchange = nullptr;
}

HttpExchange *Gateway::FindExchange(uint64_t id) {
  auto it = exchanges_.find(id);
  return it == exchanges_.end() ? nullptr : it->second;
}

bool Gateway::VerifyRequestToken(HttpExchange *x, VerifiedToken *verified) {
  std::string error;
  if (!x->auth_present) {
    error = "an Authorization header is required: \"Token <jwt>\" or \"Bearer <jwt>\"";
  } else if (x->token.empty()) {
    error = "the Authorization header is not \"Token <jwt>\" or \"Bearer <jwt>\"";
  } else if (verifier_->Verify(x->token, static_cast<int64_t>(time(nullptr)), verified, &error)) {
    return true;
  } else {
    error = "token refused: " + error;
  }
  metrics_.auth_failures++;
  RespondError(x, HTTP_STATUS_UNAUTHORIZED, "UNAUTHENTICATED", error);
  return false;
}

}  // namespace syncline::gateway
