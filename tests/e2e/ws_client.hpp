// A small libwebsockets test client for syncline.v1, shared by the end-to-end
// tests and the gateway benchmark: it keeps a replica of every bucket it is
// sent, verifies checksums at each CheckpointComplete, and records errors and
// close codes. Everything runs on the caller's thread via Pump()/WaitFor().
#pragma once

#include <ev.h>
#include <libwebsockets.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "proto/syncline.pb.h"

namespace syncline::testing {

namespace pb = syncline::v1;

// Base64url without padding.
std::string Base64Url(const std::string &bytes);
// An HS256 JWT over the given claims JSON (header alg/typ fixed unless given).
std::string MakeHs256Token(const std::string &secret, const std::string &claims_json,
                           const std::string &header_json = R"({"alg":"HS256","typ":"JWT"})");
// An RS256 JWT signed with a PEM private key, naming `kid` in its header (none
// when empty). Throws std::runtime_error when the key cannot be used.
std::string MakeRs256Token(const std::string &private_key_pem, const std::string &claims_json,
                           const std::string &kid);
// A JWT with alg "none" and an empty signature.
std::string MakeNoneToken(const std::string &claims_json);

double NowSeconds();

struct ReplicaBucket {
  std::map<std::string, std::string> objects;  // "type/id" -> data JSON
  uint32_t checksum = 0;
  uint64_t last_op_id = 0;
};

class Client;

// One lws client context; all Clients made from it are serviced by Pump().
class ClientContext {
 public:
  ClientContext();
  ~ClientContext();
  lws_context *get() { return context_; }
  // Services events for up to `seconds`.
  void Pump(double seconds);
  // Pumps until pred() or the timeout; returns pred().
  bool WaitFor(const std::function<bool()> &pred, double timeout_seconds);

 private:
  lws_context *context_ = nullptr;
  struct ev_loop *loop_ = nullptr;
  struct Timer {
    lws_sorted_usec_list_t sul;  // first member: Tick casts back
    lws_context *context;
  } timer_{};
  static void Tick(lws_sorted_usec_list_t *sul);
};

class Client {
 public:
  Client(ClientContext *ctx, std::string host, int port);
  ~Client();

  // Starts connecting; header_token, when set, goes into Authorization: Bearer.
  void Connect(const std::string &header_token = "", const char *subprotocol = "syncline.v1");
  bool WaitEstablished(double timeout = 5);
  bool WaitClosed(double timeout = 5);
  void Close();  // client-initiated close

  void SendHello(const std::string *token, uint32_t version = 1,
                 const std::string &client_id = "e2e");
  // Sends a SyncRequest naming every bucket held and the op id it is complete to.
  void SendSync(bool with_known = true);
  void SendPing(uint64_t request_id);
  void SendRaw(const std::string &bytes, bool text = false);
  void Send(const pb::ClientMessage &m);

  // Pumps until `completes()` exceeds `previous`; false on timeout/close.
  bool WaitComplete(uint64_t previous, double timeout = 10);
  // Connect + Hello + Sync + wait for the first CheckpointComplete.
  bool ConnectAndSync(const std::string &token, double timeout = 20);
  // Connect, stop reading, then Hello + Sync (nothing known): the sync's pages wait behind
  // its checkpoint until SetReading(true). False when the connection was not established.
  bool StartSyncNotReading(const std::string &token);

  // Stops (0) or resumes (1) reading from the socket.
  void SetReading(bool on);

  // State.
  bool established = false;
  bool closed = false;
  bool connect_error = false;
  int close_code = 0;  // from the server's close frame; 0 if none
  std::string close_reason;
  uint64_t completes = 0;
  uint64_t position = 0;
  uint64_t write_checkpoint = 0;  // from the last Checkpoint
  uint64_t ops_received = 0;
  uint64_t messages_received = 0;
  uint64_t bytes_received = 0;
  uint64_t keepalives = 0;
  uint64_t token_expiring = 0;
  uint64_t diffs = 0;
  std::vector<pb::Error> errors;
  std::vector<pb::WriteAck> acks;
  std::vector<std::string> checksum_failures;
  std::map<std::string, ReplicaBucket> buckets;
  std::map<std::string, pb::BucketChecksum> expected;
  std::vector<std::string> removed_seen;
  std::string client_id = "e2e";  // Hello.client_id used by ConnectAndSync
  // Connect over TLS (wss), accepting a self-signed certificate for any host name.
  bool tls = false;
  bool keep_objects = true;  // false: checksums only (benchmarks)
  // Called for each op applied (bench: latency measurement).
  std::function<void(const pb::OplogEntry &)> on_op;

  // lws glue.
  static int Callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, size_t len);

 private:
  void OnMessage(const std::string &bytes);
  void Apply(const std::string &bucket, const pb::OplogEntry &op);

  ClientContext *ctx_;
  std::string host_;
  int port_;
  lws *wsi_ = nullptr;
  std::string header_token_;
  struct Outgoing {
    std::string bytes;  // with LWS_PRE headroom
    bool text;
  };
  std::deque<Outgoing> out_;
  std::string rx_;
  bool want_close_ = false;
};

}  // namespace syncline::testing
