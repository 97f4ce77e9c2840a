// The PowerSync front: PowerSync's HTTP sync stream, write checkpoints and an upload endpoint,
// so the official PowerSync SDKs sync against this gateway unchanged. A stream is a Session
// like a syncline.v1 websocket: the same sync jobs, paging, back-pressure, limits, metrics and
// live fan-out (sync.cpp) serve it; only the encoding differs (NDJSON lines in HTTP chunks,
// gateway/powersync.hpp).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "gateway/gateway.hpp"
#include "gateway/powersync.hpp"

namespace syncline::gateway {
namespace {

namespace ps = syncline::gateway::powersync;
using json = nlohmann::json;

// Uploads waiting for the database, per token subject and in all: past these, 429.
constexpr int kMaxUploadsPerUser = 4;
constexpr size_t kMaxUploadsInFlight = 512;

Bytes WithHeadroom(const std::string &bytes) {
  std::string out(LWS_PRE, '\0');
  out.append(bytes);
  return std::make_shared<const std::string>(std::move(out));
}

bool AddHeader(lws *wsi, const char *name, const std::string &value, unsigned char **p,
               unsigned char *end) {
  return lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char *>(name),
                                     reinterpret_cast<const unsigned char *>(value.data()),
                                     static_cast<int>(value.size()), p, end) == 0;
}

std::string ErrorBody(const std::string &code, unsigned status, const std::string &message) {
  return json{{"error", {{"code", code}, {"status", status}, {"description", message}}}}.dump() +
         "\n";
}

}  // namespace

// ---------------------------------------------------------------- POST /sync/stream

void Gateway::StartPowerSyncStream(Pss *pss, HttpExchange *x) {
  VerifiedToken token;
  if (!VerifyRequestToken(x, &token)) return;
  if (shutting_down_) {
    RespondError(x, HTTP_STATUS_SERVICE_UNAVAILABLE, "SHUTTING_DOWN",
                 "server shutting down; reconnect", 1);
    return;
  }
  if (static_cast<int>(sessions_.size()) >= config_.max_connections) {
    metrics_.connections_rejected++;
    RespondError(x, 429, "TOO_MANY_CONNECTIONS",
                 "too many connections to this gateway; retry later", 1);
    return;
  }
  int &count = user_sessions_[token.subject];
  if (config_.max_connections_per_user > 0 && count >= config_.max_connections_per_user) {
    metrics_.connections_rejected++;
    if (count == 0) user_sessions_.erase(token.subject);
    RespondError(x, 429, "TOO_MANY_CONNECTIONS",
                 "too many connections for this user (" + std::to_string(count) +
                     "); close some, then retry",
                 5);
    return;
  }
  ps::StreamRequest request;
  std::string error;
  if (!ps::ParseStreamRequest(x->body, &request, &error)) {
    if (count == 0) user_sessions_.erase(token.subject);
    RespondError(x, HTTP_STATUS_BAD_REQUEST, "BAD_REQUEST", error);
    return;
  }
  count++;

  // From here on the connection is a session; the exchange is done.
  auto *s = new Session();
  s->id = next_session_id_++;
  s->wsi = x->wsi;
  s->connected_at = MonotonicSeconds();
  char peer[64] = "?";
  lws_get_peer_simple(x->wsi, peer, sizeof peer);
  s->peer = peer;
  s->hello_done = true;
  s->subject = token.subject;
  s->claims_json = token.claims_json;
  s->token_expires_at = token.valid_until;  // the rule Verify applies, leeway included
  s->client_id = request.client_id;
  s->powersync = std::make_unique<PowerSyncStream>();
  s->powersync->origin = x->origin;
  s->powersync->next_keepalive = s->connected_at + ps::kKeepaliveSeconds;
  sessions_[s->id] = s;
  if (!s->client_id.empty()) powersync_clients_[s->client_id].insert(s->id);
  metrics_.connections_total++;
  metrics_.powersync_streams_total++;
  exchanges_.erase(x->id);
  delete x;
  pss->exchange = nullptr;
  pss->session = s;
  lws_set_timeout(s->wsi, NO_PENDING_TIMEOUT, 0);  // a stream lives as long as the client wants
  LogEvent(s, "powersync-stream",
           "client_id=" + s->client_id + " buckets=" + std::to_string(request.known.size()));

  auto job = std::make_unique<SyncJob>();
  job->initial = true;
  job->known = std::move(request.known);
  StartSync(s, std::move(job));
}

void Gateway::QueuePowerSyncHead(Session *s, unsigned status, const std::string &body,
                                 int retry_after_seconds) {
  PowerSyncStream *p = s->powersync.get();
  if (p->head_queued) return;
  p->head_queued = true;
  unsigned char buffer[LWS_PRE + 2048];
  unsigned char *start = buffer + LWS_PRE, *at = start, *end = buffer + sizeof buffer - 1;
  bool streaming = status == HTTP_STATUS_OK;
  bool ok =
      lws_add_http_header_status(s->wsi, status, &at, end) == 0 &&
      AddHeader(s->wsi, "content-type:", streaming ? "application/x-ndjson" : "application/json",
                &at, end) &&
      AddHeader(s->wsi, "cache-control:", "no-store", &at, end) &&
      AddCorsHeaders(s->wsi, p->origin, &at, end);
  if (streaming) {
    // Lines are written as they come; proxies (nginx) must not buffer them.
    ok = ok && AddHeader(s->wsi, "transfer-encoding:", "chunked", &at, end) &&
         AddHeader(s->wsi, "x-accel-buffering:", "no", &at, end);
  } else {
    ok = ok && lws_add_http_header_content_length(s->wsi, body.size(), &at, end) == 0 &&
         AddHeader(s->wsi, "connection:", "close", &at, end);
    if (retry_after_seconds > 0)
      ok = ok && AddHeader(s->wsi, "retry-after:", std::to_string(retry_after_seconds), &at, end);
  }
  ok = ok && lws_finalize_http_header(s->wsi, &at, end) == 0;
  if (!ok) return;  // cannot happen with these sizes; the stream then just closes
  SendBytes(s, WithHeadroom(std::string(reinterpret_cast<char *>(start), at - start)), 0,
            /*enforce_limit=*/false);
  if (!body.empty()) SendBytes(s, WithHeadroom(body), 0, /*enforce_limit=*/false);
}

void Gateway::SendPowerSyncLines(Session *s, const std::string &lines, size_t ops,
                                 bool enforce_limit) {
  if (lines.empty() || s->closing) return;
  std::string framed(LWS_PRE, '\0');
  ps::AppendChunk(framed, lines);
  SendBytes(s, std::make_shared<const std::string>(std::move(framed)), ops, enforce_limit,
            ps::CountLines(lines));
}

void Gateway::EndPowerSyncStream(Session *s, const std::string &why) {
  PowerSyncStream *p = s->powersync.get();
  if (!p->head_queued) {
    // Nothing was answered yet (the first checkpoint is still running): a retryable 503.
    QueuePowerSyncHead(s, HTTP_STATUS_SERVICE_UNAVAILABLE,
                       ErrorBody("UNAVAILABLE", HTTP_STATUS_SERVICE_UNAVAILABLE, why), 1);
  } else if (p->head_written || !s->send_queue.empty()) {
    // The last chunk ends the body; the SDK sees the stream end and reconnects.
    SendBytes(s, WithHeadroom(ps::kLastChunk), 0, /*enforce_limit=*/false);
  }
  s->closing = true;
  LogEvent(s, "closing", "reason=\"" + why + "\"");
  lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, 5);
  lws_callback_on_writable(s->wsi);
}

// The write checkpoint the next checkpoint line up to `upto` carries: the client's newest one
// that checkpoint includes, never lower than what it was sent before (the SDK overwrites its
// "seen" value with each one, and a lower one would hold its downloads back).
uint64_t Gateway::PowerSyncWriteCheckpoint(Session *s, uint64_t upto, uint64_t from_database) {
  PowerSyncStream *p = s->powersync.get();
  uint64_t best = p->write_checkpoint_sent;
  if (from_database <= upto) best = std::max(best, from_database);
  if (p->write_checkpoint <= upto) best = std::max(best, p->write_checkpoint);
  p->write_checkpoint = std::max(p->write_checkpoint, from_database);
  return best;
}

void Gateway::NotePowerSyncWriteCheckpoint(const std::string &client_id, uint64_t checkpoint,
                                           bool asked) {
  auto it = powersync_clients_.find(client_id);
  if (it == powersync_clients_.end()) return;
  std::vector<uint64_t> ids(it->second.begin(), it->second.end());
  for (uint64_t id : ids) {
    Session *s = FindSession(id);
    if (s == nullptr) continue;
    s->powersync->write_checkpoint = std::max(s->powersync->write_checkpoint, checkpoint);
    if (asked) s->powersync->write_checkpoint_asked = true;
    MaybeSendWriteCheckpoint(s);
  }
}

// A write that changed nothing this client syncs (rejected, or to rows no bucket of theirs
// holds) still has a write checkpoint the SDK waits for before it drops its optimistic rows:
// a checkpoint_diff with no bucket changes carries it. Such a write checkpoint may equal the
// one the client already has (no op was added since), and the SDK applies a checkpoint only
// when one arrives after its upload queue drained: so once the client asked for its write
// checkpoint, it gets a checkpoint carrying it even if the value is not new.
// One still owed (beyond the client's position, or the client is in a sync job) waits in
// write_checkpoint_waiting_, which every live round visits.
void Gateway::MaybeSendWriteCheckpoint(Session *s) {
  PowerSyncStream *p = s->powersync.get();
  if (p == nullptr) return;
  uint64_t position = LivePosition(s);
  if (s->live && !s->job && !s->closing && p->head_queued &&
      p->write_checkpoint <= position &&  // else the live round that reaches it carries it
      (p->write_checkpoint > p->write_checkpoint_sent || p->write_checkpoint_asked)) {
    uint64_t wc = std::max(p->write_checkpoint, p->write_checkpoint_sent);
    p->write_checkpoint_asked = false;
    SendPowerSyncLines(
        s, ps::DiffHead(position, wc) + ps::DiffTail({}, {}) + ps::CompleteLine(position), 0,
        /*enforce_limit=*/true);
    p->write_checkpoint_sent = wc;
  }
  NoteWriteCheckpointWaiting(s);
}

void Gateway::TickPowerSync(Session *s, double now, int64_t unix_now) {
  PowerSyncStream *p = s->powersync.get();
  if (!p->head_queued) return;
  int64_t left = s->token_expires_at == 0 ? ps::kNoExpirySeconds : s->token_expires_at - unix_now;
  if (left <= 0) {
    // The SDK fetches a fresh token and reconnects.
    LogEvent(s, "token-expired");
    SendPowerSyncLines(s, ps::KeepaliveLine(0), 0, /*enforce_limit=*/false);
    EndPowerSyncStream(s, "token expired; reconnect with a fresh token");
    return;
  }
  bool expiring = left <= config_.token_expiring_seconds && !s->expiring_sent;
  if (now >= p->next_keepalive || expiring) {
    // A keepalive that also says when the token expires (the SDK prefetches a new one).
    if (expiring) s->expiring_sent = true;
    SendPowerSyncLines(s, ps::KeepaliveLine(left), 0, /*enforce_limit=*/true);
    p->next_keepalive = now + ps::kKeepaliveSeconds;
  }
}

void Gateway::ForgetPowerSyncSession(Session *s) {
  auto it = powersync_clients_.find(s->client_id);
  if (it == powersync_clients_.end()) return;
  it->second.erase(s->id);
  if (it->second.empty()) powersync_clients_.erase(it);
}

// A live change for one PowerSync client holding `buckets` (all of them changed in `round`).
void Gateway::SendLivePowerSync(
    Session *s, const std::vector<const std::string *> &buckets, const LiveRound &round,
    std::map<std::vector<const std::string *>, PowerSyncChange> &cache) {
  static const std::vector<syncline::v1::OplogEntry> kNoOps;
  auto ops_of = [&](const std::string &bucket) -> const std::vector<syncline::v1::OplogEntry> & {
    auto it = round.ops.find(bucket);
    return it == round.ops.end() ? kNoOps : it->second;
  };
  PowerSyncChange &change = cache[buckets];
  if (change.diff_tail.empty()) {
    std::vector<std::pair<const std::string *, const BucketState *>> updated;
    for (const std::string *bucket : buckets)
      updated.emplace_back(bucket, &round.changed.at(*bucket));
    change.diff_tail = ps::DiffTail(updated, {});
    std::string lines;
    for (const std::string *bucket : buckets) {
      const auto &ops = ops_of(*bucket);
      ps::AppendDataLines(lines, *bucket, round.from, ops.begin(), ops.end(), false);
      change.ops += ops.size();
    }
    lines += ps::CompleteLine(round.upto);
    std::string framed(LWS_PRE, '\0');
    ps::AppendChunk(framed, lines);
    change.body = std::make_shared<const std::string>(std::move(framed));
    change.lines = ps::CountLines(lines);
  }
  uint64_t wc = PowerSyncWriteCheckpoint(s, round.upto, 0);
  SendPowerSyncLines(s, ps::DiffHead(round.upto, wc) + change.diff_tail, 0, /*enforce_limit=*/true);
  if (wc >= s->powersync->write_checkpoint) s->powersync->write_checkpoint_asked = false;
  if (s->closing) return;
  if (s->position == round.from) {
    SendBytes(s, change.body, change.ops, /*enforce_limit=*/true, change.lines);
  } else {
    // This client is already past round.from: only the newer ops.
    std::string lines;
    size_t count = 0;
    uint64_t q = s->position;
    for (const std::string *bucket : buckets) {
      const auto &ops = ops_of(*bucket);
      auto first = std::upper_bound(
          ops.begin(), ops.end(), q,
          [](uint64_t v, const syncline::v1::OplogEntry &e) { return v < e.op_id(); });
      ps::AppendDataLines(lines, *bucket, q, first, ops.end(), false);
      count += static_cast<size_t>(ops.end() - first);
    }
    lines += ps::CompleteLine(round.upto);
    SendPowerSyncLines(s, lines, count, /*enforce_limit=*/true);
  }
  s->powersync->write_checkpoint_sent = wc;
}

// ---------------------------------------------------------------- GET /write-checkpoint2.json

void Gateway::HandleWriteCheckpoint(HttpExchange *x) {
  VerifiedToken token;
  if (!VerifyRequestToken(x, &token)) return;
  char buffer[512];
  const char *value = lws_get_urlarg_by_name(x->wsi, "client_id=", buffer, sizeof buffer);
  std::string client_id = value ? value : "";
  if (client_id.empty()) {
    RespondError(x, HTTP_STATUS_BAD_REQUEST, "BAD_REQUEST",
                 "client_id is required: /write-checkpoint2.json?client_id=<id>");
    return;
  }
  x->waiting = true;
  uint64_t id = x->id;
  // The write checkpoint of the client's newest batch: the SDK calls this once its upload
  // queue is empty and shows downloaded rows again once a checkpoint line reaches it.
  db_->Query("SELECT syncline.client_write_checkpoint($1::jsonb, $2)",
             {token.claims_json, client_id}, [this, id, client_id](QueryReply &reply) {
               HttpExchange *x = FindExchange(id);
               if (!reply.ok()) {
                 if (x)
                   RespondError(x, HTTP_STATUS_SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE",
                                "could not read the write checkpoint now: " + reply.error, 1);
                 return;
               }
               PGresult *r = reply.result.get();
               uint64_t wc = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                                 ? std::strtoull(PQgetvalue(r, 0, 0), nullptr, 10)
                                 : 0;
               NotePowerSyncWriteCheckpoint(client_id, wc, /*asked=*/true);
               if (x)
                 Respond(x, HTTP_STATUS_OK,
                         json{{"data", {{"write_checkpoint", std::to_string(wc)}}}}.dump() + "\n");
             });
}

// ---------------------------------------------------------------- POST /upload

void Gateway::HandleUpload(HttpExchange *x) {
  VerifiedToken token;
  if (!VerifyRequestToken(x, &token)) return;
  ps::UploadRequest upload;
  std::string error;
  if (!ps::ParseUploadRequest(x->body, &upload, &error)) {
    RespondError(x, HTTP_STATUS_BAD_REQUEST, "BAD_REQUEST", error);
    return;
  }
  int &mine = uploads_per_user_[token.subject];
  if (mine >= kMaxUploadsPerUser || uploads_in_flight_ >= kMaxUploadsInFlight) {
    if (mine == 0) uploads_per_user_.erase(token.subject);
    RespondError(x, 429, "BUSY", "too many uploads in flight; retry after a second", 1);
    return;
  }
  mine++;
  uploads_in_flight_++;
  x->waiting = true;
  uint64_t id = x->id, seq = upload.transaction_id;
  std::string subject = token.subject, client_id = upload.client_id;
  WriteCall call;
  call.claims_json = token.claims_json;
  call.client_id = client_id;
  call.body = upload.batch_json;
  call.subject = subject;
  call.done = [this, id, seq, subject, client_id](QueryReply &reply, const char *text) {
    uploads_in_flight_--;
    auto user = uploads_per_user_.find(subject);
    if (user != uploads_per_user_.end() && --user->second <= 0) uploads_per_user_.erase(user);
    HttpExchange *x = FindExchange(id);
    if (text == nullptr) {
      // apply_writes raises only for transient trouble: the connector keeps the
      // transaction and sends it again.
      metrics_.uploads_failed++;
      if (x)
        RespondError(
            x, HTTP_STATUS_SERVICE_UNAVAILABLE,
            reply.sqlstate.empty() ? "DATABASE_UNAVAILABLE" : reply.sqlstate,
            "could not apply the transaction now: " + reply.error + "; send it again later", 1);
      return;
    }
    json outcome = json::parse(text, nullptr, false);
    std::string status = outcome.is_object() ? outcome.value("status", "") : "";
    if (status == "rejected") {
      metrics_.uploads_rejected++;
      json body = {{"status", "rejected"},
                   {"code", outcome.value("code", "")},
                   {"message", outcome.value("message", "")}};
      for (const char *key : {"op_index", "hint", "type", "id"})
        if (outcome.contains(key)) body[key] = outcome[key];
      fprintf(stderr,
              "syncline-gateway: upload sub=%s client_id=%s transaction=%llu rejected: %s %s\n",
              subject.c_str(), client_id.c_str(), static_cast<unsigned long long>(seq),
              body["code"].dump().c_str(), body["message"].dump().c_str());
      if (x) Respond(x, HTTP_STATUS_OK, body.dump() + "\n");
      // Its write checkpoint comes with the flusher's NOTIFY like any batch's.
      return;
    }
    if (status != "applied") {
      // out_of_order cannot happen with allow_gaps; report what the database said.
      metrics_.uploads_failed++;
      if (x) Respond(x, HTTP_STATUS_CONFLICT, outcome.dump() + "\n");
      return;
    }
    metrics_.uploads_applied++;
    auto answer = [this, id, client_id](uint64_t wc) {
      if (wc > 0) NotePowerSyncWriteCheckpoint(client_id, wc);
      HttpExchange *x = FindExchange(id);
      if (x == nullptr) return;
      json body = {{"status", "applied"}};
      if (wc > 0) body["write_checkpoint"] = std::to_string(wc);
      Respond(x, HTTP_STATUS_OK, body.dump() + "\n");
    };
    if (outcome.contains("write_checkpoint") && outcome["write_checkpoint"].is_number()) {
      answer(outcome["write_checkpoint"].get<uint64_t>());  // a retry, already published
      return;
    }
    // Applied: its write checkpoint is the last op id of the flush that publishes it,
    // named by the flusher's NOTIFY (the same wait as a WriteAck's).
    PendingAck ack;
    ack.seq = seq;
    ack.client_id = client_id;
    ack.since = MonotonicSeconds();
    ack.done = answer;
    OnApplied(std::move(ack));
  };
  SubmitWrite(std::move(call));
}

}  // namespace syncline::gateway
