// The websocket server: sessions, their send queues, initial sync and the
// shared live fan-out. Everything here runs on the libwebsockets loop thread.
#pragma once

#include <ev.h>
#include <libwebsockets.h>

#include <csignal>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "gateway/checkpoint.hpp"
#include "gateway/config.hpp"
#include "gateway/database.hpp"
#include "gateway/fanout.hpp"
#include "gateway/framing.hpp"
#include "gateway/jwt.hpp"
#include "gateway/metrics.hpp"
#include "gateway/pg_text.hpp"

namespace syncline::gateway {

using Bytes = std::shared_ptr<const std::string>;  // serialized message with LWS_PRE headroom

// A sync run for one session: checkpoint, then pages of bucket data, then
// CheckpointComplete. Used for the first sync and for per-session catch-up.
struct SyncJob {
  bool initial = true;  // answer to a SyncRequest (full Checkpoint) vs catch-up (diff)
  uint64_t request_id = 0;
  std::map<std::string, uint64_t> known;  // initial: bucket -> op id the client has
  uint64_t upto = 0;
  BucketMap target;
  std::vector<std::pair<std::string, uint64_t>> todo;  // bucket, after
  // Buckets whose known position is beyond the checkpoint: sent from op 0
  // after a CLEAR, so the client drops what it holds of them.
  std::set<std::string> reset;
  size_t index = 0;
  bool query_in_flight = false;
  bool waiting_for_drain = false;
  bool quiet = false;        // catch-up found nothing new: send nothing
  uint64_t recheck_seq = 0;  // recheck_seq_ when the job started
  bool recheck = false;      // started by the recheck queue (counts against its limit)
  double started = 0;
};

// A session served over PowerSync's HTTP stream (POST /sync/stream) rather than a syncline.v1
// websocket: NDJSON lines in HTTP/1.1 chunks (powersync_front.cpp).
struct PowerSyncStream {
  std::string origin;         // the request's Origin, echoed for CORS
  bool head_queued = false;   // the response head is queued (once the first checkpoint is known)
  bool head_written = false;  // ... and written: what follows is body
  uint64_t write_checkpoint = 0;       // the client's newest known write checkpoint (may be ahead)
  uint64_t write_checkpoint_sent = 0;  // what the last checkpoint line carried (never decreases)
  // The client asked for its write checkpoint (/write-checkpoint2.json): send a checkpoint
  // carrying it even when that value went out before, see MaybeSendWriteCheckpoint.
  bool write_checkpoint_asked = false;
  double next_keepalive = 0;
};

// One plain HTTP request/response (routing, CORS, uploads, write checkpoints; http_front.cpp).
struct HttpExchange {
  uint64_t id = 0;
  lws *wsi = nullptr;
  std::string method, path, origin;
  std::string token;          // from "Authorization: Token|Bearer <jwt>"
  bool auth_present = false;  // an Authorization header was sent
  std::string body;
  bool body_too_big = false;
  bool waiting = false;       // a database reply is pending
  std::string head, payload;  // response: LWS_PRE + head, LWS_PRE + body
  bool head_written = false;
  bool responding = false;
  bool close_after = false;  // the request body was not read: close after answering
};

// Per-connection storage that libwebsockets allocates for us.
struct Pss {
  struct Session *session;
  std::string *header_token;  // captured during the upgrade request
  std::string *http_body;     // response body for /healthz and /metrics
  HttpExchange *exchange;     // any other HTTP request
};

struct Session {
  uint64_t id = 0;
  lws *wsi = nullptr;
  std::string peer;
  double connected_at = 0;
  FrameAssembler rx{0};

  // Authentication.
  std::string header_token;
  bool hello_done = false;
  std::string client_id;
  std::string subject;
  std::string claims_json;
  int64_t token_expires_at = 0;  // VerifiedToken::valid_until (exp + leeway); 0 = never
  bool expiring_sent = false;

  // Sending.
  struct Outgoing {
    Bytes bytes;            // LWS_PRE headroom, then a message or complete frames
    uint32_t messages = 1;  // framed: how many websocket messages the frames hold
    bool framed = false;    // written as is (already websocket frames)
  };
  std::unique_ptr<PowerSyncStream> powersync;  // set for PowerSync HTTP streams
  std::deque<Outgoing> send_queue;
  size_t send_queue_bytes = 0;
  bool closing = false;     // close after the queue drains
  bool in_fanout = false;   // its live change waits in Gateway::fanout_batch_
  bool discarding = false;  // reading the rest of an oversized message before closing
  uint16_t close_code = 0;
  std::string close_reason;

  // Sync state: what the client holds once its last checkpoint completed.
  bool live = false;  // completed a checkpoint and not in a job
  // Op id the client is complete up to. While the session is live and idle this is a lower
  // bound: live rounds do not visit sessions they leave alone, so the position that counts is
  // Gateway::LivePosition() (at least the gateway's live position, unless it is lagging).
  uint64_t position = 0;
  uint64_t live_round_seen = 0;  // the last live round that visited it
  BucketMap buckets;
  std::unique_ptr<SyncJob> job;
  bool needs_recheck = false;                // re-run checkpoint when idle
  bool recheck_queued = false;               // waiting in Gateway::recheck_queue_
  double last_recheck_at = 0;                // when its last recheck started (monotonic)
  std::unique_ptr<SyncJob> pending_request;  // SyncRequest that arrived mid-job

  // Writes: applied one batch at a time, in arrival order. The next batch starts once the
  // previous one committed; its WriteAck may still wait for the write checkpoint. Acks go
  // out in the order the batches came: owed_acks holds one slot per batch started and not
  // yet answered, filled when its ack is ready and sent from the front.
  std::string client_schema_version;
  std::deque<syncline::v1::ClientMessage> write_queue;
  size_t write_queue_bytes = 0;  // serialized size of write_queue, under --write-queue-bytes
  bool write_in_flight = false;  // a batch's apply_writes statement has not returned
  struct OwedAck {
    uint64_t slot = 0;
    std::optional<syncline::v1::ServerMessage> ack;  // set: ready, sent once it is in front
  };
  std::deque<OwedAck> owed_acks;
  uint64_t next_ack_slot = 0;
};

// The error_code of a RETRY WriteAck for a failed apply_writes query (never empty).
std::string RetryCode(const QueryReply &reply);

// Seconds on the monotonic clock.
double MonotonicSeconds();

// One stderr line per connection event.
void LogEvent(const Session *s, const char *event, const std::string &detail = "");

class Gateway {
 public:
  Gateway(Config config, std::unique_ptr<JwtVerifier> verifier);
  ~Gateway();

  // Creates the lws context and the database thread; false on failure.
  bool Start();
  // Serves until Shutdown() completes; returns the exit code.
  int Run();
  // Async-signal-safe: asks the loop to close clients and stop.
  void RequestShutdown();

  // libwebsockets entry point.
  static int Callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, size_t len);

 private:
  int OnCallback(lws *wsi, lws_callback_reasons reason, void *user, void *in, size_t len);
  int OnHttp(lws *wsi, void *user, const char *uri);
  int OnHttpWriteable(lws *wsi, void *user);

  // Session lifecycle and messages (gateway.cpp).
  Session *OnEstablished(lws *wsi);
  int OnReceive(Session *s, const void *in, size_t len);
  int OnWriteable(Session *s);
  void OnClosed(Session *s);
  void HandleMessage(Session *s, const syncline::v1::ClientMessage &m);
  void HandleHello(Session *s, const syncline::v1::ClientMessage &m);
  bool Authenticate(Session *s, const std::string &token, std::string *error);
  void Tick();
  void CloseWithError(Session *s, syncline::v1::Error::Code code, const std::string &text,
                      bool retryable, uint16_t close_code, uint32_t retry_after_ms = 0);
  // Queues a message; with enforce_limit, a full queue disconnects the client.
  void Send(Session *s, const syncline::v1::ServerMessage &m, bool enforce_limit = true);
  void SendBytes(Session *s, Bytes bytes, size_t ops, bool enforce_limit,
                 uint32_t framed_messages = 0);
  bool WriteNow(Session *s, const Session::Outgoing &out);
  void DropAfterFailedWrite(Session *s, const std::string &detail);

  // HTTP front (http_front.cpp): routing, CORS, request bodies, plain responses.
  // Returns -2 when the request is /healthz or /metrics (served by OnHttp).
  int OnHttpRequest(lws *wsi, Pss *pss, const std::string &path);
  int OnHttpBody(Pss *pss, const void *in, size_t len);
  int OnHttpBodyComplete(Pss *pss);
  int OnExchangeWriteable(Pss *pss);
  void OnExchangeClosed(Pss *pss);
  void Respond(HttpExchange *x, unsigned status, const std::string &body,
               const std::vector<std::pair<std::string, std::string>> &headers = {},
               const char *content_type = "application/json");
  void RespondError(HttpExchange *x, unsigned status, const std::string &code,
                    const std::string &message, int retry_after_seconds = 0);
  HttpExchange *FindExchange(uint64_t id);
  // Appends the CORS response headers for `origin` to an lws header buffer.
  bool AddCorsHeaders(lws *wsi, const std::string &origin, unsigned char **p, unsigned char *end);
  bool VerifyRequestToken(HttpExchange *x, VerifiedToken *verified);

  // PowerSync front (powersync_front.cpp).
  void StartPowerSyncStream(Pss *pss, HttpExchange *x);
  void HandleUpload(HttpExchange *x);
  void HandleWriteCheckpoint(HttpExchange *x);
  void QueuePowerSyncHead(Session *s, unsigned status, const std::string &body = "",
                          int retry_after_seconds = 0);
  void SendPowerSyncLines(Session *s, const std::string &lines, size_t ops, bool enforce_limit);
  void EndPowerSyncStream(Session *s, const std::string &why);
  uint64_t PowerSyncWriteCheckpoint(Session *s, uint64_t upto, uint64_t from_database);
  void NotePowerSyncWriteCheckpoint(const std::string &client_id, uint64_t checkpoint,
                                    bool asked = false);
  void MaybeSendWriteCheckpoint(Session *s);
  void TickPowerSync(Session *s, double now, int64_t unix_now);
  void ForgetPowerSyncSession(Session *s);
  struct LiveRound;
  struct PowerSyncChange;
  void SendLivePowerSync(Session *s, const std::vector<const std::string *> &buckets,
                         const LiveRound &round,
                         std::map<std::vector<const std::string *>, PowerSyncChange> &cache);
  Session *FindSession(uint64_t id);
  std::string RenderMetrics();

  // Sync (sync.cpp).
  void StartSync(Session *s, std::unique_ptr<SyncJob> job);
  void OnCheckpoint(uint64_t session_id, QueryReply &reply);
  void FetchNextPage(Session *s);
  void OnPage(uint64_t session_id, QueryReply &reply);
  void FinishJob(Session *s);
  void FailJob(Session *s, const std::string &why, bool retryable);
  void MaybeResumeJob(Session *s);  // after the send queue drained below the low mark
  void SetBuckets(Session *s, BucketMap buckets);
  void StartCatchUp(Session *s);
  // Rules or parameter data changed (or LISTEN came back): the session re-runs its checkpoint,
  // queued so that at most a few rechecks run at once and a session is queued only once.
  void RequestRecheck(Session *s);
  void PumpRechecks();
  void EndRecheck(SyncJob *job);

  // Writes (writes.cpp).
  void QueueWrite(Session *s, const syncline::v1::ClientMessage &m);
  void StartNextWrite(Session *s);
  // A batch's statement returned: the session's next batch may start.
  void ReleaseWrite(uint64_t session_id);
  // The ack of the batch in `slot` is ready; acks are sent in the session's batch order.
  void FillAck(uint64_t session_id, uint64_t slot, const syncline::v1::ServerMessage &ack);
  // One batch for syncline.apply_writes (a WriteBatch or a PowerSync /upload). `done` gets
  // the outcome's JSON text, or nullptr and the failed query (then nothing was applied, or
  // the outcome is unknown: the batch is sent again with the same seq).
  struct WriteCall {
    std::string claims_json, client_id, body, subject;
    std::function<void(QueryReply &reply, const char *outcome)> done;
  };
  // Queues a batch; batches of different clients that wait at the same time are applied
  // together, in one statement and one transaction (DispatchWrites).
  void SubmitWrite(WriteCall call);
  void DispatchWrites();
  void RunWriteGroup(std::vector<WriteCall> group);
  void RunWriteAlone(WriteCall call, bool counted);
  static void DeliverOutcome(WriteCall &call, QueryReply &reply, int row);
  struct PendingAck;
  void OnApplied(PendingAck ack);
  void AckApplied(const PendingAck &p);
  void OnPublishedWrites(const nlohmann::json &writes, uint64_t checkpoint);
  void CheckPendingAcks(bool force);
  void ForceStaleAcks();

  // Live fan-out (sync.cpp).
  void OnNotify(const std::string &payload);
  void OnListenerState(bool connected);
  void MaybeStartLiveRound();
  void OnChanges(QueryReply &reply);
  void FetchLiveBucket(const std::string &bucket, uint64_t after);
  std::string PageBytesParam() const;  // bucket_data's max_bytes for --page-bytes
  void OnLivePage(const std::string &bucket, QueryReply &reply);
  void FinishLiveRound();
  // Where a session is complete up to: a live, idle session that is not lagging is at least at
  // live_position_ (each round moves that, not the sessions it leaves alone).
  uint64_t LivePosition(const Session *s) const;
  // Writes each live session's position out and forgets live_position_, which may then go
  // down (recomputed from the sessions by the next round).
  void ForgetLivePosition();
  // A live session behind live_position_ (its sync ended behind a round, its catch-up failed
  // or it waits for a recheck): LivePosition() is then its own position, never the live one,
  // and the next round visits it whatever changed, so it catches up.
  void NoteLagging(Session *s);
  // One line on stderr with --log-level debug (live rounds, catch-ups, rechecks), else nothing.
  void Debug(const char *format, ...) const __attribute__((format(printf, 2, 3)));
  // PowerSync sessions with a write checkpoint not yet sent are visited by every round.
  void NoteWriteCheckpointWaiting(Session *s);

  Config config_;
  std::unique_ptr<JwtVerifier> verifier_;
  std::unique_ptr<Database> db_;
  lws_context *context_ = nullptr;
  struct ev_loop *loop_ = nullptr;  // libev (epoll): the loop lws runs its sockets on
  std::string listen_iface_;        // the numeric address bound (lws keeps the pointer)
  struct TickTimer {
    lws_sorted_usec_list_t sul;  // first member: the callback casts back
    Gateway *gateway;
  } tick_{};
  void ScheduleTick();
  volatile sig_atomic_t shutdown_requested_ = 0;
  bool shutting_down_ = false;
  double shutdown_deadline_ = 0;
  bool stopped_ = false;

  uint64_t next_session_id_ = 1;
  std::unordered_map<uint64_t, Session *> sessions_;
  std::unordered_map<std::string, std::set<uint64_t>> holders_;  // bucket -> live session ids
  Metrics metrics_;
  std::unordered_map<std::string, int> user_sessions_;  // subject -> sessions past Hello

  // HTTP front and PowerSync front state.
  uint64_t next_exchange_id_ = 1;
  std::unordered_map<uint64_t, HttpExchange *> exchanges_;
  std::unordered_map<std::string, std::set<uint64_t>> powersync_clients_;  // client id -> sessions
  std::unordered_map<std::string, int> uploads_per_user_;                  // subject -> in flight
  size_t uploads_in_flight_ = 0;

  // Live fan-out state.
  uint64_t live_position_ = 0;  // every live session at this position is up to date
  bool live_position_known_ = false;
  std::set<uint64_t> lagging_;  // live, idle session ids that may be behind live_position_
  std::set<uint64_t> write_checkpoint_waiting_;  // PowerSync sessions owed a write checkpoint
  uint64_t live_round_seq_ = 0;
  uint64_t notified_upto_ = 0;  // highest last_op_id announced by NOTIFY
  std::set<std::string> pending_definitions_;
  bool pending_rules_changed_ = false;
  bool live_round_running_ = false;
  // Set while a live round hands out its change: outside any connection's
  // callback, SendBytes may then write at once to a socket with nothing queued.
  bool direct_writes_ = false;
  // Framed live changes collected by SendBytes during a round, written by
  // FlushFanout on fanout_'s threads.
  struct FanoutEntry {
    Session *session;
    Bytes bytes;
    uint32_t messages;
  };
  std::vector<FanoutEntry> fanout_batch_;
  std::unique_ptr<FanoutSender> fanout_;
  void FlushFanout();
  bool live_retry_ = false;
  bool listener_seen_ = false;  // the first LISTEN connect is not a reconnect
  uint64_t recheck_seq_ = 0;    // bumped when rules/parameter data change or LISTEN reconnects
  std::deque<uint64_t> recheck_queue_;  // session ids whose checkpoint must be re-run
  size_t rechecks_running_ = 0;
  struct LiveRound {
    uint64_t from = 0, upto = 0;
    double started = 0;
    std::map<std::string, BucketState> changed;
    std::map<std::string, std::vector<syncline::v1::OplogEntry>> ops;
    std::set<std::string>
        fetched;  // changed buckets whose ops were fetched  // fetched, op id order
    size_t fetches_outstanding = 0;
    size_t bytes = 0;  // of the ops held, bounded by --live-round-bytes
    bool failed = false;
    std::set<std::string> definitions;
    bool rules_changed = false;
  };
  std::unique_ptr<LiveRound> round_;
  // A live change as PowerSync lines, shared by the PowerSync clients that hold the same changed
  // buckets: each gets its own small diff head (it carries the client's write checkpoint).
  struct PowerSyncChange {
    std::string diff_tail;
    Bytes body;  // chunk-framed data lines and checkpoint_complete
    uint32_t lines = 0;
    size_t ops = 0;
  };

  // Applied batches waiting for their write checkpoint (writes.cpp).
  struct PendingAck {
    uint64_t session_id = 0, request_id = 0, seq = 0;
    uint64_t slot = 0;  // the session's owed ack (Session::owed_acks)
    std::string client_id;
    double since = 0;
    uint64_t write_checkpoint = 0;
    std::function<void(uint64_t write_checkpoint)> done;  // set: not a WriteAck (an /upload)
  };
  using WriteKey = std::pair<std::string, uint64_t>;  // client id, seq
  struct WriteKeyHash {
    size_t operator()(const WriteKey &k) const {
      return std::hash<std::string>{}(k.first) ^
             (std::hash<uint64_t>{}(k.second) * 0x9e3779b97f4a7c15ULL);
    }
  };
  // Hashed, not ordered: at ~13k batches/s the ordered maps' string comparisons (65,536
  // remembered keys) were ~5% of the gateway's samples. Several waiters per key: the same
  // batch may be sent on more than one connection (equal keys are adjacent when iterated).
  std::unordered_multimap<WriteKey, PendingAck, WriteKeyHash> pending_acks_;
  std::unordered_map<WriteKey, uint64_t, WriteKeyHash>
      published_writes_;  // named by NOTIFY before their reply
  std::deque<WriteKey> published_order_;
  // Batches waiting for apply_writes, taking turns by token subject, and the apply_writes
  // statements running (on at most half the pool's connections).
  FairQueue<WriteCall> write_waiting_;
  size_t write_statements_ = 0;
  bool ack_query_in_flight_ = false;
  bool ack_recheck_ = false;  // asked again while the query ran
  bool ack_recheck_force_ = false;
};

}  // namespace syncline::gateway
