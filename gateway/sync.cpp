// Initial sync / catch-up runs per session, and the live fan-out shared by all
// sessions (one syncline.changes() query and one bucket_data() fetch per
// changed bucket, whatever the number of clients holding it).
#include <stdarg.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "gateway/gateway.hpp"
#include "gateway/powersync.hpp"

namespace syncline::gateway {
namespace {

namespace pb = syncline::v1;

constexpr size_t kOpsPerMessage = 1000;
constexpr size_t kBytesPerMessage = 256 * 1024;
constexpr uint32_t kRetryAfterMs = 1000;

const char kBucketDataSql[] =
    "SELECT op_id, op, object_type, object_id, data, checksum "
    "FROM syncline.bucket_data($1, $2::bigint, $3::bigint, $4::int, $5::int)";

uint64_t ToU64(const char *text) { return std::strtoull(text, nullptr, 10); }

// What an op costs in memory and on the wire, about (bucket_data's max_bytes counts the same).
size_t OpBytes(const pb::OplogEntry &e) {
  return 32 + e.data().size() + e.object_id().size() + e.object_type().size();
}

// Whether a bucket_data page left ops behind: its last op is below the bucket's last op in
// range. Pages are cut by bytes as well as ops, so a page's length says nothing.
bool PageHasMore(PGresult *r, uint64_t bucket_last_op, uint64_t upto) {
  int rows = PQntuples(r);
  if (rows == 0) return false;
  return ToU64(PQgetvalue(r, rows - 1, 0)) < std::min(bucket_last_op, upto);
}

pb::OplogEntry::Op ParseOp(const char *text) {
  if (strcmp(text, "PUT") == 0) return pb::OplogEntry::PUT;
  if (strcmp(text, "REMOVE") == 0) return pb::OplogEntry::REMOVE;
  if (strcmp(text, "MOVE") == 0) return pb::OplogEntry::MOVE;
  if (strcmp(text, "CLEAR") == 0) return pb::OplogEntry::CLEAR;
  return pb::OplogEntry::OP_UNSPECIFIED;
}

// Reads bucket_data() rows into entries.
void ReadOps(PGresult *r, std::vector<pb::OplogEntry> *out) {
  int rows = PQntuples(r);
  out->reserve(out->size() + rows);
  for (int i = 0; i < rows; i++) {
    pb::OplogEntry e;
    e.set_op_id(ToU64(PQgetvalue(r, i, 0)));
    e.set_op(ParseOp(PQgetvalue(r, i, 1)));
    if (!PQgetisnull(r, i, 2)) e.set_object_type(PQgetvalue(r, i, 2), PQgetlength(r, i, 2));
    if (!PQgetisnull(r, i, 3)) e.set_object_id(PQgetvalue(r, i, 3), PQgetlength(r, i, 3));
    if (!PQgetisnull(r, i, 4)) e.set_data(PQgetvalue(r, i, 4), PQgetlength(r, i, 4));
    e.set_checksum(static_cast<uint32_t>(ToU64(PQgetvalue(r, i, 5))));
    out->push_back(std::move(e));
  }
}

// Splits ops [begin, end) into BucketData messages; the last one has
// has_more = more_after. Always yields at least one message.
std::vector<pb::ServerMessage> MakeBucketData(const std::string &bucket, uint64_t request_id,
                                              std::vector<pb::OplogEntry>::const_iterator begin,
                                              std::vector<pb::OplogEntry>::const_iterator end,
                                              bool more_after) {
  std::vector<pb::ServerMessage> out;
  auto it = begin;
  do {
    pb::ServerMessage m;
    m.set_request_id(request_id);
    auto *bd = m.mutable_bucket_data();
    bd->set_bucket(bucket);
    size_t bytes = 0;
    while (it != end && static_cast<size_t>(bd->ops_size()) < kOpsPerMessage &&
           bytes < kBytesPerMessage) {
      bytes += it->data().size() + it->object_id().size() + it->object_type().size() + 24;
      *bd->add_ops() = *it++;
    }
    bd->set_has_more(it != end || more_after);
    out.push_back(std::move(m));
  } while (it != end);
  return out;
}

void FillChecksum(pb::BucketChecksum *out, const std::string &bucket, const BucketState &st) {
  out->set_bucket(bucket);
  out->set_checksum(st.checksum);
  out->set_count(st.count);
}

}  // namespace

// ---------------------------------------------------------------- per-session sync

void Gateway::StartSync(Session *s, std::unique_ptr<SyncJob> job) {
  metrics_.syncs_started++;
  job->started = MonotonicSeconds();
  job->recheck_seq = recheck_seq_;
  s->position = LivePosition(s);  // before it stops being live
  Debug("conn=%llu sync-start %s position=%llu live_position=%llu%s%s",
        static_cast<unsigned long long>(s->id),
        job->initial   ? "initial"
        : job->recheck ? "recheck"
                       : "catch-up",
        static_cast<unsigned long long>(s->position),
        static_cast<unsigned long long>(live_position_), live_position_known_ ? "" : "(unknown)",
        lagging_.count(s->id) ? " was-lagging" : "");
  lagging_.erase(s->id);
  s->live = false;
  s->job = std::move(job);
  uint64_t id = s->id;
  // The client's write checkpoint rides along, so a client that lost a
  // WriteAck still learns when its writes are in.
  db_->Query(
      "SELECT syncline.checkpoint($1::jsonb), "
      "CASE WHEN $2 <> '' THEN syncline.client_write_checkpoint($1::jsonb, $2) END",
      {s->claims_json, s->client_id}, [this, id](QueryReply &reply) { OnCheckpoint(id, reply); },
      /*urgent=*/false, s->subject);
}

void Gateway::StartCatchUp(Session *s) {
  if (s->closing || !s->hello_done) return;
  if (s->job) {
    s->needs_recheck = true;  // picked up when the running job ends
    return;
  }
  if (!s->live) return;  // never synced: nothing to catch up
  s->needs_recheck = false;
  auto job = std::make_unique<SyncJob>();
  job->initial = false;
  StartSync(s, std::move(job));
}

void Gateway::OnCheckpoint(uint64_t session_id, QueryReply &reply) {
  Session *s = FindSession(session_id);
  if (s == nullptr || !s->job) return;
  SyncJob *job = s->job.get();
  if (!reply.ok()) {
    FailJob(s, "syncline.checkpoint() failed: " + reply.error, reply.unavailable);
    return;
  }
  metrics_.checkpoint_seconds.Observe(reply.seconds);
  std::string error;
  if (!reply.result || PQntuples(reply.result.get()) != 1 ||
      !ParseCheckpointJson(PQgetvalue(reply.result.get(), 0, 0), &job->upto, &job->target,
                           &error)) {
    FailJob(s, error.empty() ? "syncline.checkpoint() returned no row" : error, false);
    return;
  }
  uint64_t write_checkpoint =
      PQgetisnull(reply.result.get(), 0, 1) ? 0 : ToU64(PQgetvalue(reply.result.get(), 0, 1));
  if (job->initial) {
    pb::ServerMessage m;
    m.set_request_id(job->request_id);
    auto *cp = m.mutable_checkpoint();
    cp->set_last_op_id(job->upto);
    cp->set_write_checkpoint(write_checkpoint);
    for (const auto &[bucket, st] : job->target) {
      FillChecksum(cp->add_buckets(), bucket, st);
      auto known = job->known.find(bucket);
      uint64_t after = known == job->known.end() ? 0 : known->second;
      if (after > job->upto) {
        // The client holds ops this database does not have (it was restored
        // from a backup, or the client synced elsewhere): start the bucket over.
        job->reset.insert(bucket);
        job->todo.emplace_back(bucket, 0);
      } else if (st.last_op_id > after) {
        job->todo.emplace_back(bucket, after);
      }
    }
    for (const auto &[bucket, after] : job->known)
      if (job->target.count(bucket) == 0) cp->add_removed_buckets(bucket);
    if (!job->reset.empty())
      LogEvent(s, "stale-position",
               "resetting " + std::to_string(job->reset.size()) +
                   " buckets the client claims past last_op_id=" + std::to_string(job->upto) +
                   " (first: " + *job->reset.begin() + ")");
    if (s->powersync) {
      // The response head goes out with the first checkpoint, so a failing first query can
      // still be answered with a 503. A full checkpoint names every bucket: the SDK drops others.
      QueuePowerSyncHead(s, 200);
      uint64_t wc = PowerSyncWriteCheckpoint(s, job->upto, write_checkpoint);
      SendPowerSyncLines(s, powersync::CheckpointLine(job->upto, wc, job->target), 0, false);
      s->powersync->write_checkpoint_sent = wc;
      if (wc >= s->powersync->write_checkpoint) s->powersync->write_checkpoint_asked = false;
    } else {
      Send(s, m, /*enforce_limit=*/false);
    }
  } else {
    pb::ServerMessage m;
    auto *diff = m.mutable_checkpoint_diff();
    diff->set_last_op_id(std::max(job->upto, s->position));
    diff->set_write_checkpoint(write_checkpoint);
    for (const auto &[bucket, st] : job->target) {
      auto held = s->buckets.find(bucket);
      if (held != s->buckets.end() && held->second == st) continue;
      FillChecksum(diff->add_updated_buckets(), bucket, st);
      uint64_t after = held == s->buckets.end() ? 0 : s->position;
      if (st.last_op_id > after) job->todo.emplace_back(bucket, after);
    }
    for (const auto &[bucket, st] : s->buckets)
      if (job->target.count(bucket) == 0) diff->add_removed_buckets(bucket);
    uint64_t wc = 0;
    bool new_write_checkpoint = false;
    if (s->powersync) {
      wc = PowerSyncWriteCheckpoint(s, diff->last_op_id(), write_checkpoint);
      new_write_checkpoint =
          wc > s->powersync->write_checkpoint_sent ||
          (s->powersync->write_checkpoint_asked && wc >= s->powersync->write_checkpoint);
    }
    if (diff->updated_buckets_size() == 0 && diff->removed_buckets_size() == 0 &&
        !new_write_checkpoint) {
      // Nothing changed for this client: no messages.
      job->quiet = true;
    } else if (s->powersync) {
      std::vector<std::pair<const std::string *, const BucketState *>> updated;
      for (const auto &b : diff->updated_buckets()) {
        auto it = job->target.find(b.bucket());
        updated.emplace_back(&it->first, &it->second);
      }
      std::vector<std::string> removed(diff->removed_buckets().begin(),
                                       diff->removed_buckets().end());
      SendPowerSyncLines(
          s, powersync::DiffHead(diff->last_op_id(), wc) + powersync::DiffTail(updated, removed), 0,
          false);
      s->powersync->write_checkpoint_sent = wc;
      if (wc >= s->powersync->write_checkpoint) s->powersync->write_checkpoint_asked = false;
    } else {
      Send(s, m, /*enforce_limit=*/false);
    }
  }
  FetchNextPage(s);
}

void Gateway::FetchNextPage(Session *s) {
  SyncJob *job = s->job.get();
  if (job->query_in_flight) return;
  if (job->index >= job->todo.size()) {
    FinishJob(s);
    return;
  }
  // Back-pressure: do not read more from the database for a client that has
  // not taken what it was sent.
  if (s->send_queue_bytes >= config_.send_queue_bytes / 2) {
    job->waiting_for_drain = true;
    return;
  }
  job->waiting_for_drain = false;
  job->query_in_flight = true;
  const auto &[bucket, after] = job->todo[job->index];
  uint64_t id = s->id;
  db_->Query(
      kBucketDataSql,
      {bucket, std::to_string(after), std::to_string(job->upto), std::to_string(config_.page_ops),
       PageBytesParam()},
      [this, id](QueryReply &reply) { OnPage(id, reply); }, /*urgent=*/false, s->subject);
}

void Gateway::MaybeResumeJob(Session *s) {
  if (s->job && s->job->waiting_for_drain && !s->closing &&
      s->send_queue_bytes < config_.send_queue_bytes / 2)
    FetchNextPage(s);
}

void Gateway::OnPage(uint64_t session_id, QueryReply &reply) {
  Session *s = FindSession(session_id);
  if (s == nullptr || !s->job) return;
  SyncJob *job = s->job.get();
  job->query_in_flight = false;
  if (!reply.ok()) {
    FailJob(s, "syncline.bucket_data() failed: " + reply.error, reply.unavailable);
    return;
  }
  auto &[bucket, after] = job->todo[job->index];
  std::vector<pb::OplogEntry> ops;
  if (after == 0 && job->reset.erase(bucket) > 0) {
    // Op 0 CLEAR with checksum 0: the client empties the bucket, then applies it from the start.
    ops.emplace_back();
    ops.back().set_op(pb::OplogEntry::CLEAR);
  }
  ReadOps(reply.result.get(), &ops);
  auto target = job->target.find(bucket);
  bool full_page =
      PageHasMore(reply.result.get(),
                  target == job->target.end() ? job->upto : target->second.last_op_id, job->upto);
  if (s->powersync) {
    std::string lines;
    powersync::AppendDataLines(lines, bucket, after, ops.begin(), ops.end(), full_page);
    SendPowerSyncLines(s, lines, ops.size(), /*enforce_limit=*/false);
  } else {
    for (auto &m : MakeBucketData(bucket, job->request_id, ops.begin(), ops.end(), full_page))
      Send(s, m, /*enforce_limit=*/false);
  }
  if (full_page) {
    after = ops.back().op_id();
  } else {
    job->index++;
  }
  FetchNextPage(s);
}

void Gateway::FinishJob(Session *s) {
  std::unique_ptr<SyncJob> job = std::move(s->job);
  bool was_recheck = job->recheck;
  if (!job->quiet && s->powersync) {
    SendPowerSyncLines(s, powersync::CompleteLine(std::max(job->upto, s->position)), 0, false);
  } else if (!job->quiet) {
    pb::ServerMessage m;
    m.set_request_id(job->request_id);
    m.mutable_checkpoint_complete()->set_last_op_id(std::max(job->upto, s->position));
    Send(s, m, /*enforce_limit=*/false);
  }
  if (job->initial)
    s->position = job->upto;
  else
    s->position = std::max(job->upto, s->position);
  SetBuckets(s, std::move(job->target));
  s->live = true;
  // Behind the live position (a round published changes of its buckets while it ran): the
  // session holds what it was sent, up to s->position, and must not be taken to be at the live
  // position (LivePosition) by the catch-up started below or any round before it.
  NoteLagging(s);
  metrics_.syncs_completed++;
  if (job->initial)
    LogEvent(s, "synced",
             "last_op_id=" + std::to_string(s->position) +
                 " buckets=" + std::to_string(s->buckets.size()) +
                 " seconds=" + std::to_string(MonotonicSeconds() - job->started));
  if (s->powersync) MaybeSendWriteCheckpoint(s);
  if (s->pending_request) {
    StartSync(s, std::move(s->pending_request));
  } else if (job->recheck_seq != recheck_seq_ || (was_recheck && s->needs_recheck)) {
    // Rules or parameter data changed while this job ran: a recheck, through the queue.
    s->needs_recheck = false;
    RequestRecheck(s);
  } else if (s->needs_recheck || (live_position_known_ && s->position < live_position_)) {
    // Changes were announced while this job ran: catch up from its end.
    s->needs_recheck = false;
    auto next = std::make_unique<SyncJob>();
    next->initial = false;
    StartSync(s, std::move(next));
  }
  Debug("conn=%llu sync-done upto=%llu position=%llu live_position=%llu next=%s%s",
        static_cast<unsigned long long>(s->id), static_cast<unsigned long long>(job->upto),
        static_cast<unsigned long long>(s->position),
        static_cast<unsigned long long>(live_position_),
        s->job              ? "sync"
        : s->recheck_queued ? "recheck-queued"
                            : "live",
        lagging_.count(s->id) ? " lagging" : "");
  EndRecheck(job.get());  // last: the next queued recheck may be this session's
}

void Gateway::FailJob(Session *s, const std::string &why, bool retryable) {
  std::unique_ptr<SyncJob> job = std::move(s->job);
  metrics_.syncs_failed++;
  LogEvent(s, "sync-failed", why);
  if (job->initial && s->powersync) {
    // Before the first checkpoint: a 503 (the SDK retries); later: the stream ends.
    EndPowerSyncStream(s, why);
  } else if (job->initial) {
    // The client asked: tell it, it retries its SyncRequest.
    Send(s,
         MakeError(retryable ? pb::Error::DATABASE_UNAVAILABLE : pb::Error::SYNC_FAILED, why, true,
                   kRetryAfterMs, job->request_id),
         /*enforce_limit=*/false);
    if (s->pending_request) StartSync(s, std::move(s->pending_request));
  } else {
    // A catch-up: the client still holds its last checkpoint; retry later.
    s->live = true;
    s->needs_recheck = true;
    NoteLagging(s);
  }
  EndRecheck(job.get());
}

void Gateway::SetBuckets(Session *s, BucketMap buckets) {
  for (const auto &[bucket, st] : s->buckets) {
    if (buckets.count(bucket)) continue;
    auto it = holders_.find(bucket);
    if (it == holders_.end()) continue;
    it->second.erase(s->id);
    if (it->second.empty()) holders_.erase(it);
  }
  for (const auto &[bucket, st] : buckets) holders_[bucket].insert(s->id);
  s->buckets = std::move(buckets);
}

// ---------------------------------------------------------------- rechecks

// At most this many rechecks run at once per pool connection: a change to a parameter table
// that every connection must re-run its checkpoint for does not fill the database queue in
// front of everybody's other requests.
constexpr size_t kRechecksPerPoolConnection = 2;
// A connection is rechecked at most once per this many seconds: the first change of a burst
// is rechecked at once, the rest of the burst is merged into one more recheck (Tick pumps).
constexpr double kRecheckMinInterval = 1.0;

void Gateway::RequestRecheck(Session *s) {
  if (s->closing || !s->hello_done) return;
  if (s->recheck_queued) {
    metrics_.rechecks_coalesced++;  // one re-run covers every change announced so far
    return;
  }
  if (s->job && s->job->recheck) {
    s->needs_recheck = true;  // a recheck is running: one more once it ends
    metrics_.rechecks_coalesced++;
    return;
  }
  s->recheck_queued = true;
  recheck_queue_.push_back(s->id);
  PumpRechecks();
}

void Gateway::PumpRechecks() {
  size_t limit = kRechecksPerPoolConnection * static_cast<size_t>(config_.pool_size);
  double now = MonotonicSeconds();
  // Each waiting connection is looked at once per pump; one rechecked less than
  // kRecheckMinInterval ago stays queued (later requests keep merging into it).
  for (size_t looked = recheck_queue_.size();
       looked > 0 && rechecks_running_ < limit && !recheck_queue_.empty(); looked--) {
    uint64_t id = recheck_queue_.front();
    recheck_queue_.pop_front();
    Session *s = FindSession(id);
    if (s == nullptr) continue;
    if (now - s->last_recheck_at < kRecheckMinInterval) {
      recheck_queue_.push_back(id);
      continue;
    }
    s->recheck_queued = false;
    if (s->job) {
      s->needs_recheck = true;  // re-run when its current job ends
      continue;
    }
    if (!s->live) continue;  // never synced: its first sync reads the new state anyway
    s->needs_recheck = false;
    auto job = std::make_unique<SyncJob>();
    job->initial = false;
    job->recheck = true;
    s->last_recheck_at = now;
    rechecks_running_++;
    metrics_.rechecks++;
    StartSync(s, std::move(job));
  }
}

void Gateway::EndRecheck(SyncJob *job) {
  if (!job->recheck) return;
  job->recheck = false;
  rechecks_running_--;
  PumpRechecks();
}

// ---------------------------------------------------------------- live fan-out

void Gateway::OnNotify(const std::string &payload) {
  metrics_.notifications++;
  try {
    auto j = nlohmann::json::parse(payload);
    uint64_t last = j.value("last_op_id", static_cast<uint64_t>(0));
    notified_upto_ = std::max(notified_upto_, last);
    if (j.contains("definitions") && j["definitions"].is_array())
      for (const auto &d : j["definitions"])
        if (d.is_string()) pending_definitions_.insert(d.get<std::string>());
    if (j.value("rules_changed", false)) pending_rules_changed_ = true;
    if (j.contains("writes") && j["writes"].is_array()) OnPublishedWrites(j["writes"], last);
    if (j.value("writes_truncated", false)) CheckPendingAcks(false);
    if (pending_rules_changed_ || !pending_definitions_.empty()) {
      recheck_seq_++;
      metrics_.recheck_notifications++;
      fprintf(stderr, "syncline-gateway: %s; rechecking %zu connections\n",
              pending_rules_changed_ ? "sync rules changed" : "parameter data changed",
              sessions_.size());
    }
  } catch (const std::exception &e) {
    fprintf(stderr, "syncline-gateway: unreadable NOTIFY payload (%s); rechecking everyone\n",
            e.what());
    pending_rules_changed_ = true;
    recheck_seq_++;
  }
  MaybeStartLiveRound();
}

void Gateway::OnListenerState(bool connected) {
  if (!connected) {
    fprintf(stderr, "syncline-gateway: LISTEN connection down; live updates paused\n");
    return;
  }
  if (!listener_seen_) {
    listener_seen_ = true;
    return;
  }
  // Notifications sent while we were not listening are lost: resync everyone.
  fprintf(stderr, "syncline-gateway: LISTEN connection back; resyncing %zu connections\n",
          sessions_.size());
  ForgetLivePosition();
  recheck_seq_++;
  metrics_.recheck_notifications++;
  for (auto &[id, s] : sessions_) RequestRecheck(s);
}

void Gateway::MaybeStartLiveRound() {
  if (live_round_running_) return;
  // Called on every NOTIFY and after every round: the lowest position is
  // needed only when it is unknown, else the first live session will do.
  bool any_live = false;
  uint64_t min_position = UINT64_MAX;
  for (auto &[id, s] : sessions_) {
    if (!s->live || s->job || s->closing) continue;
    any_live = true;
    if (live_position_known_) break;
    min_position = std::min(min_position, s->position);
  }
  if (!live_position_known_) {
    live_position_ = any_live ? min_position : notified_upto_;
    live_position_known_ = true;
  }
  if (!any_live) {
    // Nobody to push to; jobs that are running catch up at their end.
    if (notified_upto_ > live_position_)
      Debug("live-round skipped: no live connection; live_position=%llu -> %llu",
            static_cast<unsigned long long>(live_position_),
            static_cast<unsigned long long>(notified_upto_));
    live_position_ = std::max(live_position_, notified_upto_);
    pending_definitions_.clear();
    pending_rules_changed_ = false;
    return;
  }
  bool recheck = !pending_definitions_.empty() || pending_rules_changed_;
  if (notified_upto_ <= live_position_ && !recheck) return;
  round_ = std::make_unique<LiveRound>();
  round_->from = live_position_;
  round_->upto = std::max(live_position_, notified_upto_);
  round_->started = MonotonicSeconds();
  round_->definitions.swap(pending_definitions_);
  round_->rules_changed = pending_rules_changed_;
  pending_rules_changed_ = false;
  live_round_running_ = true;
  Debug("live-round start from=%llu notified=%llu definitions=%zu rules_changed=%d",
        static_cast<unsigned long long>(round_->from),
        static_cast<unsigned long long>(round_->upto), round_->definitions.size(),
        round_->rules_changed ? 1 : 0);
  if (notified_upto_ <= live_position_) {
    FinishLiveRound();
    return;
  }
  db_->Query(
      "SELECT bucket, checksum, count, last_op_id FROM syncline.changes($1::bigint)",
      {std::to_string(round_->from)}, [this](QueryReply &reply) { OnChanges(reply); },
      /*urgent=*/true);
}

void Gateway::OnChanges(QueryReply &reply) {
  if (!reply.ok()) {
    fprintf(stderr, "syncline-gateway: syncline.changes() failed: %s\n", reply.error.c_str());
    round_->failed = true;
    FinishLiveRound();
    return;
  }
  PGresult *r = reply.result.get();
  for (int i = 0; i < PQntuples(r); i++) {
    BucketState st;
    st.checksum = static_cast<uint32_t>(ToU64(PQgetvalue(r, i, 1)));
    st.count = ToU64(PQgetvalue(r, i, 2));
    st.last_op_id = ToU64(PQgetvalue(r, i, 3));
    round_->upto = std::max(round_->upto, st.last_op_id);
    round_->changed[PQgetvalue(r, i, 0)] = st;
  }
  for (const auto &[bucket, st] : round_->changed) {
    if (holders_.count(bucket) == 0) continue;  // nobody connected holds it
    round_->fetches_outstanding++;
    round_->fetched.insert(bucket);
    FetchLiveBucket(bucket, round_->from);
  }
  if (round_->fetches_outstanding == 0) FinishLiveRound();
}

std::string Gateway::PageBytesParam() const {
  return std::to_string(std::min<size_t>(config_.page_bytes, INT32_MAX));
}

void Gateway::FetchLiveBucket(const std::string &bucket, uint64_t after) {
  db_->Query(
      kBucketDataSql,
      {bucket, std::to_string(after), std::to_string(round_->upto),
       std::to_string(config_.page_ops), PageBytesParam()},
      [this, bucket](QueryReply &reply) { OnLivePage(bucket, reply); }, /*urgent=*/true);
}

void Gateway::OnLivePage(const std::string &bucket, QueryReply &reply) {
  if (!reply.ok()) {
    fprintf(stderr, "syncline-gateway: live bucket_data(%s) failed: %s\n", bucket.c_str(),
            reply.error.c_str());
    round_->failed = true;
  } else {
    auto &ops = round_->ops[bucket];
    size_t before = ops.size();
    ReadOps(reply.result.get(), &ops);
    for (size_t i = before; i < ops.size(); i++) round_->bytes += OpBytes(ops[i]);
    if (round_->bytes > config_.live_round_bytes) {
      // Over the round's budget: this bucket's change is left out of the shared round, and
      // each client holding it catches up on its own, paged and back-pressured.
      for (const auto &op : ops) round_->bytes -= OpBytes(op);
      round_->ops.erase(bucket);
      round_->fetched.erase(bucket);
      metrics_.live_buckets_over_budget++;
    } else if (PageHasMore(reply.result.get(), round_->changed[bucket].last_op_id, round_->upto)) {
      FetchLiveBucket(bucket, ops.back().op_id());
      return;
    }
  }
  if (--round_->fetches_outstanding == 0) FinishLiveRound();
}

void Gateway::FinishLiveRound() {
  std::unique_ptr<LiveRound> round = std::move(round_);
  live_round_running_ = false;
  metrics_.live_rounds++;
  if (round->failed) {
    // Put the work back and let each client catch up on its own once the
    // database answers again.
    ForgetLivePosition();
    live_retry_ = true;
    for (auto &[id, s] : sessions_)
      if (s->live && !s->job) s->needs_recheck = true;
    return;
  }
  // Serialize each changed bucket's ops once for all clients at round->from.
  std::map<std::string, std::vector<Bytes>> shared;
  std::map<std::string, size_t> shared_ops;
  for (const auto &[bucket, ops] : round->ops) {
    auto &list = shared[bucket];
    for (const auto &m : MakeBucketData(bucket, 0, ops.begin(), ops.end(), false))
      list.push_back(std::make_shared<const std::string>(EncodeWithHeadroom(m, LWS_PRE)));
    shared_ops[bucket] = ops.size();
  }
  // The sessions this round visits: those holding a changed bucket, each with the changed
  // buckets it holds (in bucket order: the caches below are keyed by that list), then the few
  // that are lagging or owed a write checkpoint. Every other live session is left alone: moving
  // live_position_ to round->upto moves them all, so a round costs what it changed, not the
  // number of connections.
  std::vector<std::pair<uint64_t, const std::string *>> held;
  size_t changed_held = 0;
  for (const auto &[bucket, st] : round->changed) {
    auto it = holders_.find(bucket);
    if (it == holders_.end()) continue;
    changed_held++;
    for (uint64_t id : it->second) held.emplace_back(id, &bucket);
  }
  if (changed_held > 1)  // one holders_ set is in id order already
    std::stable_sort(held.begin(), held.end(),
                     [](const auto &a, const auto &b) { return a.first < b.first; });
  bool recheck_all = round->rules_changed || !round->definitions.empty();
  // Every session is rechecked after a rules change; and with no known live position (LISTEN
  // came back while the round ran) each session's own position is all there is.
  std::vector<uint64_t> others;
  if (recheck_all || !live_position_known_) {
    others.reserve(sessions_.size());
    for (const auto &[id, s] : sessions_) others.push_back(id);
  } else {
    others.assign(lagging_.begin(), lagging_.end());
    others.insert(others.end(), write_checkpoint_waiting_.begin(), write_checkpoint_waiting_.end());
  }
  std::map<std::vector<const std::string *>, Bytes> diff_cache;
  struct FramedChange {
    Bytes bytes;
    uint32_t messages = 0;
    size_t ops = 0;
  };
  std::map<std::vector<const std::string *>, FramedChange> framed_cache;
  std::map<std::vector<const std::string *>, PowerSyncChange> powersync_cache;
  pb::ServerMessage done;
  done.mutable_checkpoint_complete()->set_last_op_id(round->upto);
  Bytes complete_bytes = std::make_shared<const std::string>(EncodeWithHeadroom(done, LWS_PRE));
  std::vector<const std::string *> mine;  // the changed buckets the visited session holds
  auto visit = [&](Session *s) {
    metrics_.live_round_sessions++;
    if (!s->live || s->job || s->closing) return;
    uint64_t q = LivePosition(s);
    if (q < round->from) {
      Debug("conn=%llu live-round behind: position=%llu from=%llu%s",
            static_cast<unsigned long long>(s->id), static_cast<unsigned long long>(q),
            static_cast<unsigned long long>(round->from), lagging_.count(s->id) ? " lagging" : "");
      StartCatchUp(s);
      return;
    }
    s->position = q;
    lagging_.erase(s->id);  // at the round's start or past it: it moves with the rounds again
    if (q >= round->upto || mine.empty()) {
      s->position = std::max(q, round->upto);
      if (s->powersync) MaybeSendWriteCheckpoint(s);  // a write that changed nothing it holds
      if (recheck_all) RequestRecheck(s);
      return;
    }
    bool all_fetched = true;
    for (const std::string *bucket : mine) all_fetched &= round->fetched.count(*bucket) > 0;
    if (!all_fetched) {
      // Joined while the round ran, holding a bucket nobody else held: its
      // ops were not fetched, so catch up on its own.
      Debug("conn=%llu live-round holds an unfetched bucket: position=%llu",
            static_cast<unsigned long long>(s->id), static_cast<unsigned long long>(q));
      StartCatchUp(s);
      return;
    }
    if (s->powersync) {
      SendLivePowerSync(s, mine, *round, powersync_cache);
      NoteWriteCheckpointWaiting(s);
      if (s->closing) return;
      for (const std::string *bucket : mine) s->buckets[*bucket] = round->changed[*bucket];
      s->position = round->upto;
      if (recheck_all) RequestRecheck(s);
      return;
    }
    // The diff depends only on the set of changed buckets held: build it once per set.
    Bytes &diff_bytes = diff_cache[mine];
    if (!diff_bytes) {
      pb::ServerMessage diff_msg;
      auto *diff = diff_msg.mutable_checkpoint_diff();
      diff->set_last_op_id(round->upto);
      for (const std::string *bucket : mine)
        FillChecksum(diff->add_updated_buckets(), *bucket, round->changed[*bucket]);
      diff_bytes = std::make_shared<const std::string>(EncodeWithHeadroom(diff_msg, LWS_PRE));
    }
    if (q == round->from) {
      // The usual case: the whole change (diff, data, complete) is the same
      // for every client holding this set of buckets. Framed once, it goes
      // out in one write per client.
      FramedChange &framed = framed_cache[mine];
      if (!framed.bytes) {
        std::string buffer(LWS_PRE, '\0');
        auto append = [&](const Bytes &message) {
          AppendBinaryFrame(buffer, message->data() + LWS_PRE, message->size() - LWS_PRE);
          framed.messages++;
        };
        append(diff_bytes);
        for (const std::string *bucket : mine) {
          for (const auto &bytes : shared[*bucket]) append(bytes);
          framed.ops += shared_ops[*bucket];
        }
        append(complete_bytes);
        framed.bytes = std::make_shared<const std::string>(std::move(buffer));
      }
      SendBytes(s, framed.bytes, framed.ops, /*enforce_limit=*/true, framed.messages);
      if (s->closing) return;
      for (const std::string *bucket : mine) s->buckets[*bucket] = round->changed[*bucket];
      s->position = round->upto;
      if (recheck_all) RequestRecheck(s);
      return;
    }
    // This client is already past round->from: only the newer ops.
    SendBytes(s, diff_bytes, 0, /*enforce_limit=*/true);
    for (const std::string *bucket : mine) {
      if (s->closing) break;
      const auto &ops = round->ops[*bucket];
      auto first =
          std::upper_bound(ops.begin(), ops.end(), q,
                           [](uint64_t v, const pb::OplogEntry &e) { return v < e.op_id(); });
      for (const auto &m : MakeBucketData(*bucket, 0, first, ops.end(), false)) Send(s, m);
      s->buckets[*bucket] = round->changed[*bucket];
    }
    SendBytes(s, complete_bytes, 0, /*enforce_limit=*/true);
    s->position = round->upto;
    if (recheck_all) RequestRecheck(s);
  };
  uint64_t seq = ++live_round_seq_;
  direct_writes_ = true;
  for (size_t i = 0; i < held.size();) {
    uint64_t id = held[i].first;
    mine.clear();
    for (; i < held.size() && held[i].first == id; i++) mine.push_back(held[i].second);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) continue;
    it->second->live_round_seen = seq;
    visit(it->second);
  }
  mine.clear();
  for (uint64_t id : others) {
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second->live_round_seen == seq) continue;
    it->second->live_round_seen = seq;
    visit(it->second);
  }
  direct_writes_ = false;
  FlushFanout();
  live_position_ = std::max(live_position_, round->upto);
  metrics_.live_round_seconds.Observe(MonotonicSeconds() - round->started);
  Debug("live-round done from=%llu upto=%llu changed=%zu fetched=%zu held=%zu others=%zu",
        static_cast<unsigned long long>(round->from), static_cast<unsigned long long>(round->upto),
        round->changed.size(), round->fetched.size(), held.size(), others.size());
  MaybeStartLiveRound();
}

uint64_t Gateway::LivePosition(const Session *s) const {
  if (!s->live || s->job || s->closing || !live_position_known_ || lagging_.count(s->id) > 0)
    return s->position;
  return std::max(s->position, live_position_);
}

void Gateway::ForgetLivePosition() {
  if (live_position_known_)
    for (auto &[id, s] : sessions_) s->position = LivePosition(s);
  live_position_known_ = false;
}

void Gateway::NoteLagging(Session *s) {
  if (s->live && !s->job && !s->closing && live_position_known_ && s->position < live_position_)
    lagging_.insert(s->id);
}

void Gateway::Debug(const char *format, ...) const {
  if (!config_.log_debug) return;
  char line[512];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof line, format, args);
  va_end(args);
  fprintf(stderr, "syncline-gateway: debug %s\n", line);
}

void Gateway::NoteWriteCheckpointWaiting(Session *s) {
  PowerSyncStream *p = s->powersync.get();
  if (p != nullptr && !s->closing &&
      (p->write_checkpoint > p->write_checkpoint_sent || p->write_checkpoint_asked))
    write_checkpoint_waiting_.insert(s->id);
  else
    write_checkpoint_waiting_.erase(s->id);
}

}  // namespace syncline::gateway
