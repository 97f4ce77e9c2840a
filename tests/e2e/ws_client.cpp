#include "tests/e2e/ws_client.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <time.h>

#include <cstring>
#include <memory>
#include <stdexcept>

namespace syncline::testing {

std::string Base64Url(const std::string &bytes) {
  static const char *kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  const auto *b = reinterpret_cast<const unsigned char *>(bytes.data());
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    uint32_t v = b[i] << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (bytes.size() - i == 2) {
    uint32_t v = (b[i] << 16) | (b[i + 1] << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::string MakeHs256Token(const std::string &secret, const std::string &claims_json,
                           const std::string &header_json) {
  std::string signing_input = Base64Url(header_json) + "." + Base64Url(claims_json);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char *>(signing_input.data()), signing_input.size(), mac,
       &mac_len);
  return signing_input + "." + Base64Url(std::string(reinterpret_cast<char *>(mac), mac_len));
}

std::string MakeRs256Token(const std::string &private_key_pem, const std::string &claims_json,
                           const std::string &kid) {
  std::string header = kid.empty() ? R"({"alg":"RS256","typ":"JWT"})"
                                   : R"({"alg":"RS256","typ":"JWT","kid":")" + kid + R"("})";
  std::string signing_input = Base64Url(header) + "." + Base64Url(claims_json);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(private_key_pem.data(), static_cast<int>(private_key_pem.size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr, EVP_PKEY_free);
  if (!key) throw std::runtime_error("MakeRs256Token: not a PEM private key");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t sig_len = 0;
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &sig_len,
                     reinterpret_cast<const unsigned char *>(signing_input.data()),
                     signing_input.size()) != 1)
    throw std::runtime_error("MakeRs256Token: cannot sign with this key");
  std::string sig(sig_len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char *>(&sig[0]), &sig_len,
                     reinterpret_cast<const unsigned char *>(signing_input.data()),
                     signing_input.size()) != 1)
    throw std::runtime_error("MakeRs256Token: signing failed");
  sig.resize(sig_len);
  return signing_input + "." + Base64Url(sig);
}

std::string MakeNoneToken(const std::string &claims_json) {
  return Base64Url(R"({"alg":"none","typ":"JWT"})") + "." + Base64Url(claims_json) + ".";
}

double NowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// ---------------------------------------------------------------- context

static lws_protocols kClientProtocols[] = {
    {"syncline.v1", Client::Callback, 0, 65536, 0, nullptr, 0},
    {"other", Client::Callback, 0, 65536, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

ClientContext::ClientContext() {
  lws_set_log_level(LLL_ERR, nullptr);
  lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = kClientProtocols;
  info.fd_limit_per_thread = 20000;
  info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_LIBEV;
  // epoll through libev, as in the gateway: with poll() a load generator holding 10,000
  // sockets spent its time scanning them and measured itself instead of the gateway.
  loop_ = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
  info.foreign_loops = reinterpret_cast<void **>(&loop_);
  context_ = lws_create_context(&info);
  timer_.context = context_;
  lws_sul_schedule(context_, 0, &timer_.sul, Tick, 10 * LWS_US_PER_MS);
}

ClientContext::~ClientContext() {
  lws_sul_cancel(&timer_.sul);
  lws_context_destroy(context_);
  ev_loop_destroy(loop_);
}

void ClientContext::Tick(lws_sorted_usec_list_t *sul) {
  // Keeps the loop returning regularly so WaitFor can time out.
  auto *t = reinterpret_cast<Timer *>(sul);
  lws_sul_schedule(t->context, 0, sul, Tick, 10 * LWS_US_PER_MS);
}

void ClientContext::Pump(double seconds) {
  double end = NowSeconds() + seconds;
  while (NowSeconds() < end) ev_run(loop_, EVRUN_ONCE);
}

bool ClientContext::WaitFor(const std::function<bool()> &pred, double timeout_seconds) {
  double end = NowSeconds() + timeout_seconds;
  while (!pred()) {
    if (NowSeconds() > end) return pred();
    ev_run(loop_, EVRUN_ONCE);
  }
  return true;
}

// ---------------------------------------------------------------- client

Client::Client(ClientContext *ctx, std::string host, int port)
    : ctx_(ctx), host_(std::move(host)), port_(port) {}

Client::~Client() {
  if (wsi_ && !closed) {
    Close();
    ctx_->WaitFor([this] { return closed; }, 2);
  }
  if (wsi_ && !closed) lws_set_wsi_user(wsi_, nullptr);
}

void Client::Connect(const std::string &header_token, const char *subprotocol) {
  header_token_ = header_token;
  lws_client_connect_info ci;
  memset(&ci, 0, sizeof ci);
  ci.context = ctx_->get();
  ci.address = host_.c_str();
  ci.port = port_;
  ci.path = "/";
  ci.host = host_.c_str();
  ci.origin = host_.c_str();
  ci.protocol = subprotocol;
  ci.local_protocol_name = "syncline.v1";
  ci.userdata = this;
  ci.pwsi = &wsi_;
  if (tls)
    ci.ssl_connection =
        LCCSCF_USE_SSL | LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
  if (!lws_client_connect_via_info(&ci)) {
    connect_error = true;
    closed = true;
  }
}

bool Client::WaitEstablished(double timeout) {
  return ctx_->WaitFor([this] { return established || closed; }, timeout) && established;
}

bool Client::WaitClosed(double timeout) {
  return ctx_->WaitFor([this] { return closed; }, timeout);
}

void Client::Close() {
  if (closed || !wsi_) return;
  want_close_ = true;
  lws_callback_on_writable(wsi_);
}

void Client::SendRaw(const std::string &bytes, bool text) {
  Outgoing o;
  o.bytes.assign(LWS_PRE, '\0');
  o.bytes += bytes;
  o.text = text;
  out_.push_back(std::move(o));
  if (wsi_ && !closed) lws_callback_on_writable(wsi_);
}

void Client::Send(const pb::ClientMessage &m) { SendRaw(m.SerializeAsString()); }

void Client::SendHello(const std::string *token, uint32_t version, const std::string &client_id) {
  pb::ClientMessage m;
  m.set_request_id(1);
  auto *h = m.mutable_hello();
  h->set_protocol_version(version);
  h->set_client_id(client_id);
  h->set_client_schema_version("1");
  if (token) h->set_token(*token);
  Send(m);
}

void Client::SendSync(bool with_known) {
  pb::ClientMessage m;
  m.set_request_id(2);
  auto *sr = m.mutable_sync_request();
  if (with_known) {
    for (const auto &[bucket, b] : buckets) {
      auto *kb = sr->add_buckets();
      kb->set_bucket(bucket);
      kb->set_last_op_id(position);
    }
  }
  Send(m);
}

void Client::SendPing(uint64_t request_id) {
  pb::ClientMessage m;
  m.set_request_id(request_id);
  m.mutable_ping();
  Send(m);
}

bool Client::WaitComplete(uint64_t previous, double timeout) {
  return ctx_->WaitFor([&] { return completes > previous || closed; }, timeout) &&
         completes > previous;
}

bool Client::ConnectAndSync(const std::string &token, double timeout) {
  Connect();
  if (!WaitEstablished(5)) return false;
  SendHello(&token, 1, client_id);
  uint64_t before = completes;
  SendSync(true);
  return WaitComplete(before, timeout);
}

bool Client::StartSyncNotReading(const std::string &token) {
  Connect();
  if (!WaitEstablished(5)) return false;
  SetReading(false);
  SendHello(&token, 1, client_id);
  SendSync(false);
  return true;
}

void Client::SetReading(bool on) {
  if (wsi_ && !closed) lws_rx_flow_control(wsi_, on ? 1 : 0);
}

void Client::Apply(const std::string &bucket, const pb::OplogEntry &op) {
  ReplicaBucket &b = buckets[bucket];
  std::string key = keep_objects ? op.object_type() + "/" + op.object_id() : std::string();
  switch (op.op()) {
    case pb::OplogEntry::PUT:
      if (keep_objects) b.objects[key] = op.data();
      b.checksum += op.checksum();
      break;
    case pb::OplogEntry::REMOVE:
      if (keep_objects) b.objects.erase(key);
      b.checksum += op.checksum();
      break;
    case pb::OplogEntry::MOVE:
      b.checksum += op.checksum();
      break;
    case pb::OplogEntry::CLEAR:
      b.objects.clear();
      b.checksum = op.checksum();
      break;
    default:
      break;
  }
  b.last_op_id = op.op_id();
  ops_received++;
  if (on_op) on_op(op);
}

void Client::OnMessage(const std::string &bytes) {
  messages_received++;
  bytes_received += bytes.size();
  pb::ServerMessage m;
  if (!m.ParseFromString(bytes)) {
    checksum_failures.push_back("unparseable server message");
    return;
  }
  switch (m.kind_case()) {
    case pb::ServerMessage::kCheckpoint: {
      expected.clear();
      write_checkpoint = m.checkpoint().write_checkpoint();
      for (const auto &b : m.checkpoint().buckets()) expected[b.bucket()] = b;
      for (auto it = buckets.begin(); it != buckets.end();) {
        if (expected.count(it->first) == 0) {
          removed_seen.push_back(it->first);
          it = buckets.erase(it);
        } else {
          ++it;
        }
      }
      for (const auto &r : m.checkpoint().removed_buckets()) removed_seen.push_back(r);
      break;
    }
    case pb::ServerMessage::kCheckpointDiff:
      diffs++;
      for (const auto &b : m.checkpoint_diff().updated_buckets()) expected[b.bucket()] = b;
      for (const auto &r : m.checkpoint_diff().removed_buckets()) {
        expected.erase(r);
        buckets.erase(r);
        removed_seen.push_back(r);
      }
      break;
    case pb::ServerMessage::kBucketData:
      for (const auto &op : m.bucket_data().ops()) Apply(m.bucket_data().bucket(), op);
      break;
    case pb::ServerMessage::kCheckpointComplete: {
      for (const auto &[name, cs] : expected) {
        uint32_t have = buckets.count(name) ? buckets[name].checksum : 0;
        if (have != cs.checksum())
          checksum_failures.push_back(name + ": have " + std::to_string(have) + " expected " +
                                      std::to_string(cs.checksum()));
        buckets[name];  // a bucket with no ops yet is still held
      }
      position = m.checkpoint_complete().last_op_id();
      completes++;
      break;
    }
    case pb::ServerMessage::kError:
      errors.push_back(m.error());
      break;
    case pb::ServerMessage::kWriteAck:
      acks.push_back(m.write_ack());
      break;
    case pb::ServerMessage::kKeepalive:
      keepalives++;
      break;
    case pb::ServerMessage::kTokenExpiring:
      token_expiring++;
      break;
    default:
      break;
  }
}

int Client::Callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, size_t len) {
  auto *c = static_cast<Client *>(user);
  switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
      if (!c || c->header_token_.empty()) break;
      auto **p = static_cast<unsigned char **>(in);
      std::string value = "Bearer " + c->header_token_;
      if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                       reinterpret_cast<const unsigned char *>(value.c_str()),
                                       static_cast<int>(value.size()), p, *p + len))
        return -1;
      break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
      if (c) {
        c->established = true;
        if (!c->out_.empty()) lws_callback_on_writable(wsi);
      }
      break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
      if (c) {
        c->connect_error = true;
        c->closed = true;
        c->wsi_ = nullptr;
      }
      break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
      if (!c) break;
      c->rx_.append(static_cast<const char *>(in), len);
      if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
        std::string msg;
        msg.swap(c->rx_);
        c->OnMessage(msg);
      }
      break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
      if (!c) break;
      if (!c->out_.empty()) {
        auto &o = c->out_.front();
        size_t n = o.bytes.size() - LWS_PRE;
        int wrote = lws_write(wsi, reinterpret_cast<unsigned char *>(&o.bytes[LWS_PRE]), n,
                              o.text ? LWS_WRITE_TEXT : LWS_WRITE_BINARY);
        c->out_.pop_front();
        if (wrote < static_cast<int>(n)) return -1;
        if (!c->out_.empty() || c->want_close_) lws_callback_on_writable(wsi);
        break;
      }
      if (c->want_close_) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, nullptr, 0);
        return -1;
      }
      break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
      if (c && len >= 2) {
        const auto *p = static_cast<const unsigned char *>(in);
        c->close_code = (p[0] << 8) | p[1];
        c->close_reason.assign(reinterpret_cast<const char *>(p) + 2, len - 2);
      }
      break;
    case LWS_CALLBACK_CLIENT_CLOSED:
      if (c) {
        c->closed = true;
        c->wsi_ = nullptr;
      }
      break;
    default:
      break;
  }
  return 0;
}

}  // namespace syncline::testing
