#include "gateway/gateway.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace syncline::gateway {
namespace {

namespace pb = syncline::v1;

// Messages written per WRITEABLE callback at most (each after checking the
// socket still takes more), so one busy client cannot starve the others.
constexpr int kMessagesPerWriteable = 16;
constexpr size_t kUncheckedBytesPerWriteable = 8192;
// Live changes up to this size go out on the fan-out threads; a bigger one is
// queued, so that what lws keeps of a short write stays small and the send
// queue's byte limit still bounds a slow reader.
constexpr size_t kFanoutMaxBytes = 64 << 10;

int64_t UnixNow() { return static_cast<int64_t>(time(nullptr)); }

lws_protocols kProtocols[] = {
    {"http", Gateway::Callback, sizeof(Pss), 0, 0, nullptr, 0},
    {"syncline.v1", Gateway::Callback, sizeof(Pss), 8192, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

// The address --listen names, as a numeric literal: IP literals as given, a host name
// resolved (its first address). Returns false when it is neither.
bool NumericListenAddress(const std::string &host, std::string *numeric, int *family) {
  in_addr a4;
  in6_addr a6;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    *numeric = host;
    *family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    *numeric = host;
    *family = AF_INET6;
    return true;
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo *found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return false;
  char text[INET6_ADDRSTRLEN] = "";
  const void *addr =
      found->ai_family == AF_INET6
          ? static_cast<const void *>(&reinterpret_cast<sockaddr_in6 *>(found->ai_addr)->sin6_addr)
          : &reinterpret_cast<sockaddr_in *>(found->ai_addr)->sin_addr;
  bool ok = inet_ntop(found->ai_family, addr, text, sizeof text) != nullptr;
  *family = found->ai_family;
  freeaddrinfo(found);
  *numeric = text;
  return ok;
}

// Every listening TCP socket of this process, as "address" text (inet_ntop form; an
// IPv4-mapped IPv6 address as its IPv4 text).
std::vector<std::string> ListeningAddresses() {
  std::vector<std::string> out;
  DIR *dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (dirent *e = readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (fd <= 2 || fd == dirfd(dir)) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage ss{};
    len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0) continue;
    char text[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in *>(&ss)->sin_addr, text, sizeof text);
    } else if (ss.ss_family == AF_INET6) {
      const in6_addr &a = reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_addr;
      if (IN6_IS_ADDR_V4MAPPED(&a))
        inet_ntop(AF_INET, &a.s6_addr[12], text, sizeof text);
      else
        inet_ntop(AF_INET6, &a, text, sizeof text);
    } else {
      continue;
    }
    out.push_back(text);
  }
  closedir(dir);
  return out;
}

// Canonical text of a numeric address (so "::0001" and "::1" compare equal).
std::string CanonicalAddress(const std::string &numeric, int family) {
  unsigned char buf[sizeof(in6_addr)];
  char text[INET6_ADDRSTRLEN] = "";
  if (inet_pton(family, numeric.c_str(), buf) != 1) return numeric;
  inet_ntop(family, buf, text, sizeof text);
  return text;
}

// True when the upgrade request's Sec-WebSocket-Protocol list names `name`.
bool OffersSubprotocol(lws *wsi, const char *name) {
  int n = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
  if (n <= 0 || n > 4096) return false;
  std::string list(n + 1, '\0');
  if (lws_hdr_copy(wsi, &list[0], n + 1, WSI_TOKEN_PROTOCOL) < 0) return false;
  list.resize(strlen(list.c_str()));
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string item = list.substr(start, comma - start);
    size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos && item.compare(b, e - b + 1, name) == 0) return true;
    start = comma + 1;
  }
  return false;
}

}  // namespace

double MonotonicSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

void LogEvent(const Session *s, const char *event, const std::string &detail) {
  fprintf(stderr, "syncline-gateway: conn=%llu peer=%s sub=%s event=%s%s%s\n",
          static_cast<unsigned long long>(s->id), s->peer.c_str(),
          s->subject.empty() ? "-" : s->subject.c_str(), event, detail.empty() ? "" : " ",
          detail.c_str());
}

Gateway::Gateway(Config config, std::unique_ptr<JwtVerifier> verifier)
    : config_(std::move(config)), verifier_(std::move(verifier)) {}

Gateway::~Gateway() {
  if (db_) db_->Stop();
  if (context_) lws_context_destroy(context_);
  if (loop_) ev_loop_destroy(loop_);
  for (auto &[id, s] : sessions_) delete s;
}

bool Gateway::Start() {
  lws_set_log_level(LLL_ERR | LLL_WARN, nullptr);
  lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = config_.listen_port;
  // Bind exactly the address --listen names: an IPv4 address on an IPv4 socket (lws would
  // otherwise open an IPv6 socket), an IPv6 address IPv6-only; 0.0.0.0 is every IPv4
  // address and :: every address of both families.
  std::string numeric;
  int family = AF_UNSPEC;
  if (!NumericListenAddress(config_.listen_host, &numeric, &family)) {
    fprintf(stderr, "syncline-gateway: --listen %s: not an IP address or a resolvable host name\n",
            config_.listen_host.c_str());
    return false;
  }
  numeric = CanonicalAddress(numeric, family);
  bool wildcard = numeric == "0.0.0.0" || numeric == "::";
  listen_iface_ = numeric;
  info.iface = wildcard ? nullptr : listen_iface_.c_str();
  if (family == AF_INET) {
    info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  } else if (!wildcard) {
    info.options |= LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY | LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE;
  }
  info.protocols = kProtocols;
  info.user = this;
  info.timeout_secs = 10;
  // HTTP/1.1 only, also over TLS: PowerSync's stream is written with chunked transfer coding.
  info.alpn = "http/1.1";
  // Idle websockets get a PING after 60 s and are dropped after 120 s without
  // a valid frame, so vanished peers (half-open TCP) do not pile up.
  static const lws_retry_bo_t kIdlePolicy = {nullptr, 0, 0, 60, 120, 0};
  info.retry_and_idle_policy = &kIdlePolicy;
  // (no LWS_SERVER_OPTION_VALIDATE_UTF8: a binary protocol)
  if (!config_.tls_cert.empty()) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = config_.tls_cert.c_str();
    info.ssl_private_key_filepath = config_.tls_key.c_str();
  }
  // The sockets are watched with epoll through libev, not lws' default poll(): poll() scans
  // every connection on each wakeup, which at 10,000 connections was most of the gateway's
  // CPU and the bulk of a live fan-out's latency. lws runs on our loop (a foreign loop), so
  // Run() still regains control after each wakeup.
  loop_ = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
  if (loop_ == nullptr) {
    fprintf(stderr, "syncline-gateway: cannot create the event loop (epoll)\n");
    return false;
  }
  info.options |= LWS_SERVER_OPTION_LIBEV;
  info.foreign_loops = reinterpret_cast<void **>(&loop_);
  context_ = lws_create_context(&info);
  if (context_ == nullptr) {
    fprintf(stderr,
            "syncline-gateway: cannot listen on %s:%d (address in use, bad TLS files, or bad "
            "interface)\n",
            config_.listen_host.c_str(), config_.listen_port);
    return false;
  }
  // Whatever lws did with the address: refuse to serve bound wider (or elsewhere) than asked.
  for (const std::string &bound : ListeningAddresses()) {
    if (bound != numeric) {
      fprintf(stderr,
              "syncline-gateway: --listen %s: the listening socket is bound to %s instead; "
              "not serving\n",
              config_.listen_host.c_str(), bound.c_str());
      return false;
    }
  }
  Database::Handlers handlers;
  lws_context *context = context_;
  handlers.wake = [context] { lws_cancel_service(context); };
  handlers.notify = [this](const std::string &payload) { OnNotify(payload); };
  handlers.listener_state = [this](bool up) { OnListenerState(up); };
  Database::SessionSettings session;
  session.statement_timeout_ms = config_.statement_timeout_ms;
  session.lock_timeout_ms = config_.lock_timeout_ms;
  db_ = std::make_unique<Database>(config_.database_url, config_.pool_size, std::move(handlers),
                                   session);
  db_->Start();
  int fanout_threads = config_.fanout_threads;
  if (fanout_threads == 0)
    fanout_threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 4);
  fanout_ = std::make_unique<FanoutSender>(fanout_threads);
  tick_.gateway = this;
  ScheduleTick();
  fprintf(stderr,
          "syncline-gateway: listening on %s://%s:%d (subprotocol syncline.v1; PowerSync: POST "
          "/sync/stream, GET /write-checkpoint2.json, POST /upload)\n",
          config_.tls_cert.empty() ? "ws" : "wss", config_.listen_host.c_str(),
          config_.listen_port);
  return true;
}

int Gateway::Run() {
  while (!stopped_) {
    ev_run(loop_, EVRUN_ONCE);
    if (shutdown_requested_ && !shutting_down_) {
      shutting_down_ = true;
      shutdown_deadline_ = MonotonicSeconds() + config_.shutdown_grace_ms / 1000.0;
      fprintf(stderr, "syncline-gateway: shutting down, closing %zu connections\n",
              sessions_.size());
      for (auto &[id, s] : sessions_)
        CloseWithError(s, pb::Error::SHUTTING_DOWN, "server shutting down; reconnect", true,
                       kCloseGoingAway, 1000);
    }
    if (shutting_down_ && (sessions_.empty() || MonotonicSeconds() > shutdown_deadline_))
      stopped_ = true;
  }
  db_->Stop();
  fprintf(stderr, "syncline-gateway: stopped\n");
  return 0;
}

void Gateway::RequestShutdown() {
  shutdown_requested_ = 1;
  if (context_) lws_cancel_service(context_);
}

int Gateway::Callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, size_t len) {
  lws_context *context = lws_get_context(wsi);
  auto *g = context ? static_cast<Gateway *>(lws_context_user(context)) : nullptr;
  if (g == nullptr) return lws_callback_http_dummy(wsi, reason, user, in, len);
  return g->OnCallback(wsi, reason, user, in, len);
}

int Gateway::OnCallback(lws *wsi, lws_callback_reasons reason, void *user, void *in, size_t len) {
  Pss *pss = static_cast<Pss *>(user);
  switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
      if (db_) db_->RunCompletions();
      return 0;
    case LWS_CALLBACK_HTTP:
      return OnHttp(wsi, user, static_cast<const char *>(in));
    case LWS_CALLBACK_HTTP_BODY:
      return pss ? OnHttpBody(pss, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
      return pss ? OnHttpBodyComplete(pss) : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
      if (pss && pss->session) return OnWriteable(pss->session);
      if (pss && pss->exchange) return OnExchangeWriteable(pss);
      return OnHttpWriteable(wsi, user);
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
      if (pss && pss->http_body) {
        delete pss->http_body;
        pss->http_body = nullptr;
      }
      if (pss && pss->exchange) OnExchangeClosed(pss);
      if (pss && pss->session && reason == LWS_CALLBACK_CLOSED_HTTP) {
        OnClosed(pss->session);
        pss->session = nullptr;
      }
      break;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
      // A websocket is served only as syncline.v1: an upgrade that does not offer it gets a
      // plain HTTP 400 and never becomes a websocket (proto/README.md, close codes).
      if (in == nullptr || strcmp(static_cast<const char *>(in), "websocket") != 0) return 0;
      if (!OffersSubprotocol(wsi, "syncline.v1")) {
        metrics_.protocol_errors++;
        lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                               "websocket subprotocol syncline.v1 is required "
                               "(Sec-WebSocket-Protocol: syncline.v1)");
        return 1;
      }
      return 0;
    }
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
      int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
      if (pss && n > 0 && n < 16384) {
        std::string header(n + 1, '\0');
        lws_hdr_copy(wsi, &header[0], n + 1, WSI_TOKEN_HTTP_AUTHORIZATION);
        header.resize(strlen(header.c_str()));
        const char kBearer[] = "Bearer ";
        if (strncasecmp(header.c_str(), kBearer, sizeof kBearer - 1) == 0)
          pss->header_token = new std::string(header.substr(sizeof kBearer - 1));
        else
          pss->header_token = new std::string();  // present but not a bearer token
      }
      return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
      Session *s = OnEstablished(wsi);
      pss->session = s;
      if (pss->header_token) {
        s->header_token = *pss->header_token;
        delete pss->header_token;
        pss->header_token = nullptr;
        if (!s->closing) {
          std::string error;
          if (s->header_token.empty()) {
            metrics_.auth_failures++;
            CloseWithError(s, pb::Error::UNAUTHENTICATED,
                           "Authorization header is not \"Bearer <jwt>\"", false,
                           kCloseUnauthenticated);
          } else if (!Authenticate(s, s->header_token, &error)) {
            metrics_.auth_failures++;
            CloseWithError(s, pb::Error::UNAUTHENTICATED, "token refused: " + error, false,
                           kCloseUnauthenticated);
          }
        }
      }
      return 0;
    }
    case LWS_CALLBACK_RECEIVE:
      if (pss && pss->session) return OnReceive(pss->session, in, len);
      return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
      if (pss && pss->session) return OnWriteable(pss->session);
      return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
      if (pss && pss->session && len >= 2) {
        const auto *p = static_cast<const unsigned char *>(in);
        pss->session->close_code = static_cast<uint16_t>((p[0] << 8) | p[1]);
      }
      return 0;
    case LWS_CALLBACK_CLOSED:
      if (pss && pss->header_token) {
        delete pss->header_token;
        pss->header_token = nullptr;
      }
      if (pss && pss->session) {
        OnClosed(pss->session);
        pss->session = nullptr;
      }
      return 0;
    default:
      break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

int Gateway::OnHttp(lws *wsi, void *user, const char *uri) {
  Pss *pss = static_cast<Pss *>(user);
  std::string path = uri ? uri : "";
  int routed = OnHttpRequest(wsi, pss, path);
  if (routed != -2) return routed;
  unsigned int status = HTTP_STATUS_OK;
  std::string body;
  const char *type = "text/plain; charset=utf-8";
  if (path == "/healthz") {
    auto st = db_->stats();
    bool ok = st.pool_connected > 0 && st.listener_connected && !shutting_down_;
    status = ok ? HTTP_STATUS_OK : HTTP_STATUS_SERVICE_UNAVAILABLE;
    char text[160];
    snprintf(text, sizeof text, "%s pool=%d/%d listener=%s connections=%zu\n",
             ok ? "ok" : "unavailable", st.pool_connected, st.pool_size,
             st.listener_connected ? "up" : "down", sessions_.size());
    body = text;
  } else if (path == "/metrics") {
    body = RenderMetrics();
    type = "text/plain; version=0.0.4; charset=utf-8";
  } else {
    status = HTTP_STATUS_NOT_FOUND;
    body = "not found; try /healthz or /metrics\n";
  }
  uint8_t headers[LWS_PRE + 512];
  uint8_t *start = headers + LWS_PRE;
  uint8_t *p = start;
  uint8_t *end = headers + sizeof headers - 1;
  if (lws_add_http_common_headers(wsi, status, type, body.size(), &p, end) ||
      lws_finalize_write_http_header(wsi, start, &p, end))
    return 1;
  pss->http_body = new std::string(LWS_PRE, '\0');
  pss->http_body->append(body);
  lws_callback_on_writable(wsi);
  return 0;
}

int Gateway::OnHttpWriteable(lws *wsi, void *user) {
  Pss *pss = static_cast<Pss *>(user);
  if (!pss || !pss->http_body) return 0;
  std::string *b = pss->http_body;
  int n = lws_write(wsi, reinterpret_cast<unsigned char *>(&(*b)[LWS_PRE]), b->size() - LWS_PRE,
                    LWS_WRITE_HTTP_FINAL);
  delete b;
  pss->http_body = nullptr;
  if (n < 0) return -1;
  if (lws_http_transaction_completed(wsi)) return -1;
  return 0;
}

Session *Gateway::OnEstablished(lws *wsi) {
  auto *s = new Session();
  s->id = next_session_id_++;
  s->wsi = wsi;
  s->connected_at = MonotonicSeconds();
  s->rx = FrameAssembler(config_.max_message_bytes);
  char peer[64] = "?";
  lws_get_peer_simple(wsi, peer, sizeof peer);
  s->peer = peer;
  sessions_[s->id] = s;
  metrics_.connections_total++;
  LogEvent(s, "open");
  if (shutting_down_) {
    CloseWithError(s, pb::Error::SHUTTING_DOWN, "server shutting down; reconnect", true,
                   kCloseGoingAway, 1000);
  } else if (static_cast<int>(sessions_.size()) > config_.max_connections) {
    metrics_.connections_rejected++;
    CloseWithError(s, pb::Error::TOO_MANY_CONNECTIONS,
                   "too many connections to this gateway; retry later", true,
                   kCloseTooManyConnections, 1000);
  } else if (strcmp(lws_get_protocol(wsi)->name, "syncline.v1") != 0) {
    metrics_.protocol_errors++;
    CloseWithError(s, pb::Error::BAD_MESSAGE, "websocket subprotocol \"syncline.v1\" is required",
                   false, kCloseProtocol);
  }
  return s;
}

int Gateway::OnReceive(Session *s, const void *in, size_t len) {
  metrics_.bytes_in += len;
  if (s->closing) {
    // Ignore what arrives after we decided to close, but read the rest of an
    // oversized message first: closing with unread data would reset the TCP
    // connection and the client would never see our Error and close frame.
    if (s->discarding && lws_is_final_fragment(s->wsi) &&
        lws_remaining_packet_payload(s->wsi) == 0) {
      s->discarding = false;
      lws_callback_on_writable(s->wsi);
    }
    return 0;
  }
  if (!lws_frame_is_binary(s->wsi)) {
    metrics_.protocol_errors++;
    CloseWithError(s, pb::Error::BAD_MESSAGE,
                   "text frames are not accepted: send binary syncline.v1.ClientMessage protobufs",
                   false, kCloseUnsupportedData);
    return 0;
  }
  auto status =
      s->rx.Add(in, len, lws_is_final_fragment(s->wsi) != 0, lws_remaining_packet_payload(s->wsi));
  if (status == FrameAssembler::Status::kTooBig) {
    metrics_.protocol_errors++;
    CloseWithError(
        s, pb::Error::MESSAGE_TOO_BIG,
        "message exceeds the limit of " + std::to_string(config_.max_message_bytes) + " bytes",
        false, kCloseTooBig);
    s->discarding = !(lws_is_final_fragment(s->wsi) && lws_remaining_packet_payload(s->wsi) == 0);
    return 0;
  }
  if (status == FrameAssembler::Status::kIncomplete) return 0;
  metrics_.messages_in++;
  pb::ClientMessage m;
  DecodeStatus decoded = DecodeClientMessage(s->rx.message(), config_.max_message_bytes, &m);
  s->rx.Reset();
  if (decoded != DecodeStatus::kOk) {
    metrics_.protocol_errors++;
    if (!s->hello_done) {
      CloseWithError(s, pb::Error::HELLO_REQUIRED,
                     std::string("expected Hello first; got: ") + DecodeStatusText(decoded), false,
                     kCloseProtocol);
    } else {
      Send(s,
           MakeError(pb::Error::BAD_MESSAGE, DecodeStatusText(decoded), false, 0, m.request_id()));
    }
    return 0;
  }
  HandleMessage(s, m);
  return 0;
}

void Gateway::HandleMessage(Session *s, const pb::ClientMessage &m) {
  if (m.kind_case() == pb::ClientMessage::kHello) {
    HandleHello(s, m);
    return;
  }
  if (!s->hello_done) {
    metrics_.protocol_errors++;
    CloseWithError(s, pb::Error::HELLO_REQUIRED, "the first message must be Hello", false,
                   kCloseProtocol);
    return;
  }
  switch (m.kind_case()) {
    case pb::ClientMessage::kSyncRequest: {
      auto job = std::make_unique<SyncJob>();
      job->initial = true;
      job->request_id = m.request_id();
      for (const auto &kb : m.sync_request().buckets()) job->known[kb.bucket()] = kb.last_op_id();
      if (s->job) {
        s->pending_request = std::move(job);  // answered when the running job ends
      } else {
        StartSync(s, std::move(job));
      }
      break;
    }
    case pb::ClientMessage::kPing: {
      pb::ServerMessage reply;
      reply.set_request_id(m.request_id());
      reply.mutable_keepalive();
      Send(s, reply);
      break;
    }
    case pb::ClientMessage::kWriteBatch:
      QueueWrite(s, m);
      break;
    default:
      Send(s,
           MakeError(pb::Error::BAD_MESSAGE, "unexpected message kind", false, 0, m.request_id()));
  }
}

bool Gateway::Authenticate(Session *s, const std::string &token, std::string *error) {
  VerifiedToken verified;
  if (!verifier_->Verify(token, UnixNow(), &verified, error)) return false;
  if (!s->subject.empty() && verified.subject != s->subject) {
    *error = "a refreshed token must have the same subject (\"sub\"); reconnect instead";
    return false;
  }
  bool claims_changed = !s->claims_json.empty() && s->claims_json != verified.claims_json;
  s->subject = verified.subject;
  s->claims_json = verified.claims_json;
  s->token_expires_at = verified.valid_until;  // the rule Verify applies, leeway included
  s->expiring_sent = false;
  if (claims_changed) StartCatchUp(s);
  return true;
}

void Gateway::HandleHello(Session *s, const pb::ClientMessage &m) {
  const pb::Hello &hello = m.hello();
  if (hello.protocol_version() != 1) {
    metrics_.protocol_errors++;
    CloseWithError(s, pb::Error::UNSUPPORTED_VERSION,
                   "protocol_version " + std::to_string(hello.protocol_version()) +
                       " is not served here; this gateway speaks version 1 (syncline.v1)",
                   false, kCloseProtocol);
    return;
  }
  if (s->hello_done && hello.client_id() != s->client_id) {
    // Write acks, write checkpoints and exactly-once batches are per client_id: a
    // connection keeps the one its first Hello named.
    metrics_.protocol_errors++;
    CloseWithError(s, pb::Error::BAD_MESSAGE,
                   "a later Hello must repeat client_id \"" + s->client_id.substr(0, 32) +
                       "\"; open a new connection for another client_id",
                   false, kCloseProtocol);
    return;
  }
  std::string problem = ClientIdProblem(hello.client_id());
  if (!problem.empty())
    problem = "Hello.client_id " + problem;
  else if (hello.client_schema_version().find('\0') != std::string::npos)
    problem = "Hello.client_schema_version must not contain U+0000";
  if (!problem.empty()) {
    // Each write of such a client would fail, or go in under another installation's id.
    metrics_.protocol_errors++;
    CloseWithError(s, pb::Error::BAD_MESSAGE, problem, false, kCloseProtocol);
    return;
  }
  std::string token = hello.has_token() ? hello.token() : s->header_token;
  if (token.empty()) {
    metrics_.auth_failures++;
    CloseWithError(s, pb::Error::UNAUTHENTICATED,
                   "a token is required: send Authorization: Bearer <jwt> or Hello.token", false,
                   kCloseUnauthenticated);
    return;
  }
  std::string error;
  if (!Authenticate(s, token, &error)) {
    metrics_.auth_failures++;
    LogEvent(s, "auth-failed", error);
    CloseWithError(s, pb::Error::UNAUTHENTICATED, "token refused: " + error, false,
                   kCloseUnauthenticated);
    return;
  }
  bool first = !s->hello_done;
  if (first) {
    int &count = user_sessions_[s->subject];
    if (config_.max_connections_per_user > 0 && count >= config_.max_connections_per_user) {
      metrics_.connections_rejected++;
      if (count == 0) user_sessions_.erase(s->subject);
      CloseWithError(s, pb::Error::TOO_MANY_CONNECTIONS,
                     "too many connections for this user (" + std::to_string(count) +
                         "); close some, then retry",
                     true, kCloseTooManyConnections, 5000);
      return;
    }
    count++;
  }
  s->hello_done = true;
  s->client_id = hello.client_id();
  s->client_schema_version = hello.client_schema_version();
  LogEvent(s, first ? "hello" : "token-refreshed", "client_id=" + s->client_id);
}

void Gateway::Tick() {
  double now = MonotonicSeconds();
  int64_t unix_now = UnixNow();
  std::vector<Session *> list;
  list.reserve(sessions_.size());
  for (auto &[id, s] : sessions_) list.push_back(s);
  for (Session *s : list) {
    if (s->closing) continue;
    if (s->powersync) {
      TickPowerSync(s, now, unix_now);
      continue;
    }
    if (!s->hello_done) {
      if (now - s->connected_at > config_.hello_timeout_seconds)
        CloseWithError(s, pb::Error::HELLO_REQUIRED, "no Hello received in time", true,
                       kCloseProtocol);
      continue;
    }
    if (s->token_expires_at == 0) continue;
    int64_t left = s->token_expires_at - unix_now;
    if (left <= 0) {
      LogEvent(s, "token-expired");
      CloseWithError(s, pb::Error::UNAUTHENTICATED, "token expired; reconnect with a fresh token",
                     true, kCloseTokenExpired);
    } else if (left <= config_.token_expiring_seconds && !s->expiring_sent) {
      s->expiring_sent = true;
      pb::ServerMessage m;
      m.mutable_token_expiring()->set_seconds_left(static_cast<uint32_t>(left));
      Send(s, m);
    }
  }
  ForceStaleAcks();
  PumpRechecks();  // rechecks deferred by the minimum interval
  if (db_->healthy()) {
    // Catch-ups that failed while the database was away.
    for (Session *s : list)
      if (s->needs_recheck && !s->job && s->live && !s->closing) StartCatchUp(s);
    if (live_retry_) {
      live_retry_ = false;
      MaybeStartLiveRound();
    }
  }
  ScheduleTick();
}

void Gateway::ScheduleTick() {
  lws_sul_schedule(
      context_, 0, &tick_.sul,
      [](lws_sorted_usec_list_t *sul) { reinterpret_cast<TickTimer *>(sul)->gateway->Tick(); },
      LWS_US_PER_SEC);
}

void Gateway::CloseWithError(Session *s, pb::Error::Code code, const std::string &text,
                             bool retryable, uint16_t close_code, uint32_t retry_after_ms) {
  if (s->closing) return;
  if (s->powersync) {
    EndPowerSyncStream(s, text);
    return;
  }
  Send(s, MakeError(code, text, retryable, retry_after_ms), /*enforce_limit=*/false);
  s->closing = true;
  s->close_code = close_code;
  s->close_reason = text.substr(0, 120);  // a close reason must fit in 123 bytes
  LogEvent(s, "closing", "code=" + std::to_string(close_code) + " reason=\"" + text + "\"");
  // A peer that does not read must not keep us waiting for the close to drain.
  lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, 5);
  lws_callback_on_writable(s->wsi);
}

void Gateway::Send(Session *s, const pb::ServerMessage &m, bool enforce_limit) {
  if (s->powersync) return;  // PowerSync streams get lines, never protobufs
  size_t ops = m.kind_case() == pb::ServerMessage::kBucketData ? m.bucket_data().ops_size() : 0;
  SendBytes(s, std::make_shared<const std::string>(EncodeWithHeadroom(m, LWS_PRE)), ops,
            enforce_limit);
}

void Gateway::SendBytes(Session *s, Bytes bytes, size_t ops, bool enforce_limit,
                        uint32_t framed_messages) {
  if (s->closing) return;
  size_t size = bytes->size() - LWS_PRE;
  if (enforce_limit && s->send_queue_bytes + size > config_.send_queue_bytes) {
    // Too far behind: drop what is queued, tell it why, and disconnect.
    metrics_.slow_consumer_disconnects++;
    s->send_queue.clear();
    s->send_queue_bytes = 0;
    CloseWithError(s, pb::Error::SLOW_CONSUMER,
                   "client fell too far behind (send queue over " +
                       std::to_string(config_.send_queue_bytes) + " bytes); reconnect and resume",
                   true, kCloseSlowConsumer, 1000);
    return;
  }
  metrics_.ops_sent += ops;
  s->send_queue_bytes += size;
  Session::Outgoing out;
  out.bytes = std::move(bytes);
  if (framed_messages > 0) {
    out.framed = true;
    out.messages = framed_messages;
  }
  if (direct_writes_ && s->send_queue.empty() && !s->in_fanout && !s->powersync &&
      !lws_partial_buffered(s->wsi)) {
    // A live round, nothing queued and nothing left over from the last
    // write: no writable callback, which would cost two epoll_ctl calls and
    // a poll of the socket per client. Whole frames to a plain socket go to
    // the round's fan-out batch; anything else small is written now (a short
    // write is kept by lws, which finishes it before our next callback).
    if (out.framed && size <= kFanoutMaxBytes && !lws_is_ssl(s->wsi)) {
      s->send_queue_bytes -= size;
      s->in_fanout = true;
      fanout_batch_.push_back({s, std::move(out.bytes), out.messages});
      return;
    }
    if (size <= kUncheckedBytesPerWriteable) {
      s->send_queue_bytes -= size;
      if (!WriteNow(s, out)) DropAfterFailedWrite(s, "");
      return;
    }
  }
  s->send_queue.push_back(std::move(out));
  if (s->send_queue.size() == 1) lws_callback_on_writable(s->wsi);
}

// A write outside any callback of the connection failed (peer gone): nothing
// more goes to it, and lws closes it from its own loop.
void Gateway::DropAfterFailedWrite(Session *s, const std::string &detail) {
  LogEvent(s, "write-failed", detail);
  s->closing = true;
  lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

void Gateway::FlushFanout() {
  if (fanout_batch_.empty()) return;
  std::vector<FanoutSender::Item> items(fanout_batch_.size());
  for (size_t i = 0; i < items.size(); i++) {
    const FanoutEntry &e = fanout_batch_[i];
    items[i].fd = lws_get_socket_fd(e.session->wsi);
    items[i].data = e.bytes->data() + LWS_PRE;
    items[i].size = e.bytes->size() - LWS_PRE;
  }
  fanout_->SendAll(&items);
  for (size_t i = 0; i < items.size(); i++) {
    const FanoutEntry &e = fanout_batch_[i];
    const FanoutSender::Item &item = items[i];
    Session *s = e.session;
    s->in_fanout = false;
    bool ok = item.error == 0;
    if (ok && item.sent < item.size) {
      // The socket took part of it: lws keeps the rest and sends it before
      // anything else (a fresh buffer, for lws' headroom before the data).
      metrics_.fanout_short_writes++;
      std::string rest(LWS_PRE, '\0');
      rest.append(item.data + item.sent, item.size - item.sent);
      auto *data = reinterpret_cast<unsigned char *>(&rest[LWS_PRE]);
      ok = lws_write(s->wsi, data, rest.size() - LWS_PRE, LWS_WRITE_RAW) >=
           static_cast<int>(rest.size() - LWS_PRE);
    }
    if (!ok) {
      DropAfterFailedWrite(s, item.error ? "errno=" + std::to_string(item.error) : "");
      continue;
    }
    metrics_.fanout_sends++;
    metrics_.messages_out += e.messages;
    metrics_.bytes_out += item.size;
  }
  fanout_batch_.clear();
}

bool Gateway::WriteNow(Session *s, const Session::Outgoing &out) {
  size_t size = out.bytes->size() - LWS_PRE;
  // lws writes the frame header into the LWS_PRE headroom; the buffer may
  // be shared by several sessions, which is fine on this single thread.
  // Framed buffers already hold whole frames: written as they are.
  auto *data = reinterpret_cast<unsigned char *>(const_cast<char *>(out.bytes->data())) + LWS_PRE;
  lws_write_protocol mode = out.framed ? LWS_WRITE_RAW : LWS_WRITE_BINARY;
  if (s->powersync) {
    // An HTTP stream: the response head first, then chunks of body.
    mode = s->powersync->head_written ? LWS_WRITE_HTTP : LWS_WRITE_HTTP_HEADERS;
    s->powersync->head_written = true;
  }
  if (lws_write(s->wsi, data, size, mode) < static_cast<int>(size)) return false;
  metrics_.messages_out += out.messages;
  metrics_.bytes_out += size;
  return true;
}

int Gateway::OnWriteable(Session *s) {
  if (!s->send_queue.empty()) {
    // Several messages per callback while the socket takes them: a live
    // change is three messages (diff, data, complete), and one poll round
    // per message would make every client wait for all the others' first
    // message before its second.
    size_t round_bytes = 0;
    for (int written = 0; !s->send_queue.empty() && written < kMessagesPerWriteable; written++) {
      // Past a few KB, ask the socket first (a poll per message); below, a
      // short write is buffered by lws and finished before the next callback.
      if (round_bytes >= kUncheckedBytesPerWriteable && lws_send_pipe_choked(s->wsi)) break;
      Session::Outgoing out = std::move(s->send_queue.front());
      s->send_queue.pop_front();
      size_t size = out.bytes->size() - LWS_PRE;
      s->send_queue_bytes -= size;
      if (!WriteNow(s, out)) {
        LogEvent(s, "write-failed");
        return -1;
      }
      round_bytes += size;
    }
    if (!s->send_queue.empty()) {
      lws_callback_on_writable(s->wsi);
    } else if (s->closing) {
      lws_callback_on_writable(s->wsi);  // send the close frame next
    }
    MaybeResumeJob(s);
    return 0;
  }
  if (s->closing && !s->discarding) {
    if (s->powersync) return -1;  // the stream's last chunk is out
    lws_close_reason(s->wsi, static_cast<lws_close_status>(s->close_code),
                     reinterpret_cast<unsigned char *>(&s->close_reason[0]),
                     s->close_reason.size());
    return -1;
  }
  return 0;
}

void Gateway::OnClosed(Session *s) {
  LogEvent(s, "closed", s->close_code ? "code=" + std::to_string(s->close_code) : "");
  if (s->hello_done) {
    auto user = user_sessions_.find(s->subject);
    if (user != user_sessions_.end() && --user->second <= 0) user_sessions_.erase(user);
  }
  for (const auto &[bucket, state] : s->buckets) {
    auto it = holders_.find(bucket);
    if (it == holders_.end()) continue;
    it->second.erase(s->id);
    if (it->second.empty()) holders_.erase(it);
  }
  if (s->powersync) ForgetPowerSyncSession(s);
  lagging_.erase(s->id);
  write_checkpoint_waiting_.erase(s->id);
  sessions_.erase(s->id);
  if (s->job) EndRecheck(s->job.get());  // its slot goes to the next connection waiting
  delete s;
}

Session *Gateway::FindSession(uint64_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->closing) return nullptr;
  return it->second;
}

std::string Gateway::RenderMetrics() {
  std::string out;
  auto st = db_->stats();
  RenderMetric("syncline_connections", "gauge", "Open websocket connections.",
               static_cast<double>(sessions_.size()), &out);
  RenderMetric("syncline_connections_total", "counter", "Websocket connections accepted.",
               metrics_.connections_total, &out);
  RenderMetric("syncline_connections_rejected_total", "counter",
               "Connections refused over --max-connections.", metrics_.connections_rejected, &out);
  RenderMetric("syncline_auth_failures_total", "counter", "Tokens refused.", metrics_.auth_failures,
               &out);
  RenderMetric("syncline_protocol_errors_total", "counter",
               "Malformed, oversized, text or out-of-order client messages.",
               metrics_.protocol_errors, &out);
  RenderMetric("syncline_slow_consumer_disconnects_total", "counter",
               "Clients dropped for falling too far behind.", metrics_.slow_consumer_disconnects,
               &out);
  RenderMetric("syncline_messages_in_total", "counter", "Client messages received.",
               metrics_.messages_in, &out);
  RenderMetric("syncline_bytes_in_total", "counter", "Websocket payload bytes received.",
               metrics_.bytes_in, &out);
  RenderMetric("syncline_messages_out_total", "counter", "Server messages written.",
               metrics_.messages_out, &out);
  RenderMetric("syncline_bytes_out_total", "counter", "Websocket payload bytes written.",
               metrics_.bytes_out, &out);
  RenderMetric("syncline_ops_sent_total", "counter", "Bucket ops queued to clients.",
               metrics_.ops_sent, &out);
  RenderMetric("syncline_syncs_started_total", "counter", "Sync runs started.",
               metrics_.syncs_started, &out);
  RenderMetric("syncline_syncs_completed_total", "counter", "Sync runs completed.",
               metrics_.syncs_completed, &out);
  RenderMetric("syncline_syncs_failed_total", "counter", "Sync runs that failed.",
               metrics_.syncs_failed, &out);
  RenderMetric("syncline_notifications_total", "counter", "NOTIFY syncline received.",
               metrics_.notifications, &out);
  RenderMetric("syncline_live_rounds_total", "counter", "Shared live fan-out rounds.",
               metrics_.live_rounds, &out);
  RenderMetric("syncline_live_round_sessions_total", "counter",
               "Connections the live rounds looked at (those holding a changed bucket, plus the "
               "few behind or owed a write checkpoint; all of them when sync rules change).",
               metrics_.live_round_sessions, &out);
  RenderMetric("syncline_powersync_streams_total", "counter",
               "PowerSync sync streams (POST /sync/stream) accepted.",
               metrics_.powersync_streams_total, &out);
  size_t powersync_streams = 0;
  for (auto &[id, s] : sessions_) powersync_streams += s->powersync != nullptr;
  RenderMetric("syncline_powersync_streams", "gauge", "Open PowerSync sync streams.",
               static_cast<double>(powersync_streams), &out);
  RenderMetric("syncline_uploads_applied_total", "counter", "POST /upload transactions applied.",
               metrics_.uploads_applied, &out);
  RenderMetric("syncline_uploads_rejected_total", "counter",
               "POST /upload transactions rejected (permanent).", metrics_.uploads_rejected, &out);
  RenderMetric("syncline_uploads_failed_total", "counter",
               "POST /upload transactions that failed for now (503/409).", metrics_.uploads_failed,
               &out);
  RenderMetric("syncline_live_buckets_over_budget_total", "counter",
               "Changed buckets left out of a live round over --live-round-bytes (caught up "
               "per client instead).",
               metrics_.live_buckets_over_budget, &out);
  RenderMetric("syncline_fanout_sends_total", "counter",
               "Live changes written to a socket by the fan-out threads (--fanout-threads).",
               metrics_.fanout_sends, &out);
  RenderMetric("syncline_fanout_short_writes_total", "counter",
               "Fan-out writes the socket took only part of (the rest queued in order).",
               metrics_.fanout_short_writes, &out);
  RenderMetric("syncline_writes_busy_total", "counter",
               "WriteBatches answered RETRY BUSY (over --write-queue-bytes or 64 queued).",
               metrics_.writes_busy, &out);
  RenderMetric("syncline_write_groups_total", "counter",
               "apply_writes statements that carried the batches of several clients at once.",
               metrics_.write_groups, &out);
  RenderMetric("syncline_write_group_batches_total", "counter",
               "Write batches (WriteBatch or /upload) carried by those statements.",
               metrics_.write_group_batches, &out);
  RenderMetric("syncline_write_group_retries_total", "counter",
               "Groups whose statement failed and whose batches were applied one by one.",
               metrics_.write_group_retries, &out);
  RenderMetric("syncline_write_batches_waiting", "gauge",
               "Write batches waiting for a free apply_writes statement.",
               static_cast<double>(write_waiting_.size()), &out);
  RenderMetric("syncline_recheck_notifications_total", "counter",
               "Notifications naming changed sync rules or parameter data.",
               metrics_.recheck_notifications, &out);
  RenderMetric("syncline_rechecks_total", "counter",
               "Checkpoint re-runs of a connection after rules or parameter data changed.",
               metrics_.rechecks, &out);
  RenderMetric("syncline_rechecks_coalesced_total", "counter",
               "Recheck requests merged into one already waiting for that connection.",
               metrics_.rechecks_coalesced, &out);
  RenderMetric("syncline_recheck_queue", "gauge", "Connections waiting for a recheck.",
               static_cast<double>(recheck_queue_.size()), &out);
  size_t queued_bytes = 0;
  for (auto &[id, s] : sessions_) queued_bytes += s->send_queue_bytes;
  RenderMetric("syncline_send_queue_bytes", "gauge", "Bytes queued to clients.",
               static_cast<double>(queued_bytes), &out);
  RenderMetric("syncline_db_pool_size", "gauge", "Configured pool connections.", st.pool_size,
               &out);
  RenderMetric("syncline_db_pool_connected", "gauge", "Pool connections up.", st.pool_connected,
               &out);
  RenderMetric("syncline_db_pool_busy", "gauge", "Pool connections running a query.", st.pool_busy,
               &out);
  RenderMetric("syncline_db_queue_length", "gauge", "Queries waiting for a connection.",
               static_cast<double>(st.queued), &out);
  RenderMetric("syncline_db_listener_connected", "gauge", "1 when LISTEN syncline is up.",
               st.listener_connected ? 1 : 0, &out);
  RenderMetric("syncline_db_queries_total", "counter", "Queries sent.",
               static_cast<double>(st.queries), &out);
  RenderMetric("syncline_db_query_errors_total", "counter", "Queries that failed.",
               static_cast<double>(st.query_errors), &out);
  RenderMetric("syncline_db_connects_total", "counter", "Successful database connects.",
               static_cast<double>(st.reconnects), &out);
  metrics_.checkpoint_seconds.Render("syncline_checkpoint_seconds",
                                     "Latency of syncline.checkpoint() queries.", &out);
  metrics_.live_round_seconds.Render("syncline_live_round_seconds",
                                     "From NOTIFY to live data queued for every client.", &out);
  return out;
}

}  // namespace syncline::gateway
