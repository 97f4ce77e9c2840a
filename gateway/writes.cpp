// Client writes: each WriteBatch goes to syncline.apply_writes with the
// session's verified claims, one batch at a time per connection so a client's
// batches are applied in the order it sent them. The next batch starts when the
// previous one's statement returns, not when its ack (which waits for the
// write checkpoint) goes out; acks still go out in batch order. The database
// decides (authorization, constraints, exactly-once per (client_id, seq)); the
// gateway only translates its outcome into a WriteAck.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "gateway/gateway.hpp"
#include "gateway/pg_text.hpp"
#include "extension/json_exact.hpp"

namespace syncline::gateway {
namespace {

namespace pb = syncline::v1;
using json = nlohmann::json;

constexpr size_t kMaxQueuedWrites = 64;
// An applied batch normally gets its write checkpoint from the background
// worker's next flush within milliseconds; after this long the gateway
// flushes itself, and after kAckGiveUpSeconds it acknowledges without one.
constexpr double kAckForceSeconds = 0.5;
constexpr double kAckGiveUpSeconds = 10;
// Published batches remembered for a reply still on its way.
constexpr size_t kMaxPublishedWrites = 65536;

const char *OpName(pb::WriteOp::Kind kind) {
  switch (kind) {
    case pb::WriteOp::PUT:
      return "PUT";
    case pb::WriteOp::PATCH:
      return "PATCH";
    case pb::WriteOp::DELETE:
      return "DELETE";
    default:
      return "UNSPECIFIED";
  }
}

pb::ServerMessage Ack(uint64_t request_id, uint64_t seq, pb::WriteAck::Status status,
                      const std::string &code = "", const std::string &message = "",
                      const std::string &hint = "") {
  pb::ServerMessage m;
  m.set_request_id(request_id);
  auto *ack = m.mutable_write_ack();
  ack->set_seq(seq);
  ack->set_status(status);
  ack->set_error_code(code);
  ack->set_error_message(message);
  ack->set_error_hint(hint);
  return m;
}

}  // namespace

// The error_code of a RETRY ack for a failed apply_writes query: never empty, so a client
// can always tell why (no pool connection up, connection lost, or the SQLSTATE).
std::string RetryCode(const QueryReply &reply) {
  if (reply.unavailable || reply.sqlstate.empty()) return "DATABASE_UNAVAILABLE";
  return reply.sqlstate;
}

namespace {

// Builds apply_writes' batch JSON.
json BuildBatch(const pb::WriteBatch &batch, const std::string &default_schema) {
  json ops = json::array();
  for (int i = 0; i < batch.ops_size(); i++) {
    const pb::WriteOp &op = batch.ops(i);
    json refusal = RefusalOf(json(op.type()), OpName(op.op()), "type");
    if (refusal.is_null()) refusal = RefusalOf(json(op.id()), OpName(op.op()), "id");
    if (!refusal.is_null()) {
      ops.push_back(std::move(refusal));
      continue;
    }
    json o = {{"op", OpName(op.op())}, {"type", op.type()}, {"id", op.id()}};
    if (!op.id().empty() && op.id().front() == '[') {
      // A composite key, sent as a JSON array text.
      json key = ParseJsonExact(op.id());
      refusal = RefusalOf(key, OpName(op.op()), "id");
      if (!refusal.is_null()) {
        ops.push_back(std::move(refusal));
        continue;
      }
      if (key.is_array()) o["id"] = std::move(key);
    }
    if (op.op() != pb::WriteOp::DELETE) {
      // Numbers kept as the client wrote them (json_exact.hpp): 1.10 stays 1.10, and a
      // decimal of more than 17 digits is not rounded to a double.
      json data = op.data().empty() ? json::object() : ParseJsonExact(op.data());
      if (data.is_discarded()) {
        // Let the database refuse it, so the rejection is recorded under this
        // seq like any other and the client's seq sequence has no hole.
        data = op.data();
      }
      // Sent as is, a value with U+0000 would fail the whole statement before apply_writes (the
      // batch retried forever), and one nested 100,000 deep would crash the dump below: refused,
      // under its seq, like any bad data. Checked before the value is copied or dumped.
      refusal = RefusalOf(data, OpName(op.op()), "data");
      if (!refusal.is_null()) {
        ops.push_back(std::move(refusal));
        continue;
      }
      o["data"] = std::move(data);
    }
    ops.push_back(std::move(o));
  }
  std::string schema = batch.schema_version().empty() ? default_schema : batch.schema_version();
  json refusal = RefusalOf(json(schema), batch.ops_size() > 0 ? OpName(batch.ops(0).op()) : "PUT",
                           "schema_version");
  if (!refusal.is_null()) {
    ops = json::array({std::move(refusal)});
    schema.clear();
  }
  json out = {{"seq", batch.seq()}, {"ops", std::move(ops)}};
  if (!schema.empty()) out["schema_version"] = schema;
  return out;
}

}  // namespace

void Gateway::QueueWrite(Session *s, const pb::ClientMessage &m) {
  if (s->client_id.empty()) {
    Send(s, Ack(m.request_id(), m.write_batch().seq(), pb::WriteAck::REJECTED, "client_id",
                "writes need Hello.client_id (a stable id per installation)",
                "send Hello with client_id, then upload the batch again"));
    return;
  }
  if (m.write_batch().seq() > kMaxWriteSeq) {
    // Never reachable by seqs counted from 1; apply_writes would fail on it, not record it.
    Send(s, Ack(m.request_id(), m.write_batch().seq(), pb::WriteAck::REJECTED, "22003",
                "seq " + std::to_string(m.write_batch().seq()) + " is past 2^62",
                "number batches 1, 2, 3, ... per client_id"));
    return;
  }
  size_t bytes = m.ByteSizeLong();
  // Batches waiting on this connection: queued, and applied but not yet acknowledged.
  size_t waiting = s->write_queue.size() + s->owed_acks.size();
  if (waiting > kMaxQueuedWrites ||
      (!s->write_queue.empty() && s->write_queue_bytes + bytes > config_.write_queue_bytes)) {
    // Back-pressure in bytes as well as batches: a client cannot park more than
    // --write-queue-bytes of batches in the gateway's memory.
    metrics_.writes_busy++;
    Send(s, Ack(m.request_id(), m.write_batch().seq(), pb::WriteAck::RETRY, "BUSY",
                "too many batches waiting on this connection (" + std::to_string(waiting) +
                    " batches, " + std::to_string(s->write_queue_bytes) +
                    " bytes); wait for their acks",
                "send it again with the same seq once earlier batches are acknowledged"));
    return;
  }
  s->write_queue_bytes += bytes;
  s->write_queue.push_back(m);
  StartNextWrite(s);
}

void Gateway::StartNextWrite(Session *s) {
  if (!s->write_in_flight && !s->write_queue.empty() && !s->closing) {
    pb::ClientMessage m = std::move(s->write_queue.front());
    s->write_queue.pop_front();
    s->write_queue_bytes -= std::min(s->write_queue_bytes, m.ByteSizeLong());
    const pb::WriteBatch &batch = m.write_batch();
    s->write_in_flight = true;
    uint64_t slot = s->next_ack_slot++;
    s->owed_acks.push_back({slot, std::nullopt});
    uint64_t id = s->id, request_id = m.request_id(), seq = batch.seq();
    std::string client_id = s->client_id;
    WriteCall call;
    call.claims_json = s->claims_json;
    call.client_id = client_id;
    call.body = DumpJsonExact(BuildBatch(batch, s->client_schema_version));
    call.subject = s->subject;
    call.done = [this, id, slot, request_id, seq, client_id](QueryReply &reply, const char *text) {
      // The statement returned: committed, rolled back or failed. The session's next batch
      // may go now; this one's ack follows when it is ready.
      ReleaseWrite(id);
      if (text == nullptr) {
        // apply_writes raises only for transient trouble: keep the batch.
        FillAck(
            id, slot,
            Ack(request_id, seq, pb::WriteAck::RETRY, RetryCode(reply),
                "could not apply the batch now: " + reply.error, "retry later with the same seq"));
        return;
      }
      json outcome;
      try {
        outcome = json::parse(text);
      } catch (const std::exception &e) {
        FillAck(id, slot,
                Ack(request_id, seq, pb::WriteAck::RETRY, "UNKNOWN_OUTCOME",
                    std::string("unreadable apply_writes outcome: ") + e.what(),
                    "retry later with the same seq"));
        return;
      }
      std::string status = outcome.value("status", "");
      std::string message = outcome.value("message", "");
      if (outcome.contains("op_index"))
        message = "op " + outcome["op_index"].dump() + ": " + message;
      if (status == "rejected") {
        FillAck(id, slot,
                Ack(request_id, seq, pb::WriteAck::REJECTED, outcome.value("code", ""), message,
                    outcome.value("hint", "")));
        return;
      }
      if (status != "applied") {  // out_of_order, or something newer
        FillAck(
            id, slot,
            Ack(request_id, seq, pb::WriteAck::RETRY, status.empty() ? "UNKNOWN_OUTCOME" : status,
                message.empty() ? "apply_writes answered " + outcome.dump() : message,
                outcome.value("hint", "")));
        return;
      }
      if (outcome.contains("write_checkpoint") && outcome["write_checkpoint"].is_number()) {
        pb::ServerMessage ack = Ack(request_id, seq, pb::WriteAck::APPLIED);
        ack.mutable_write_ack()->set_write_checkpoint(outcome["write_checkpoint"].get<uint64_t>());
        FillAck(id, slot, ack);
        return;
      }
      // Applied. Its write checkpoint is the last op id of the flush that publishes it, which
      // the flusher's NOTIFY names (possibly before this reply arrived).
      PendingAck ack;
      ack.session_id = id;
      ack.request_id = request_id;
      ack.seq = seq;
      ack.slot = slot;
      ack.client_id = client_id;
      ack.since = MonotonicSeconds();
      OnApplied(std::move(ack));
    };
    SubmitWrite(std::move(call));
  }
}

namespace {

// One apply_writes statement carries at most this many batches (and stops taking more
// once it holds this many bytes of them): a group is one transaction, so its first batch
// waits for its last.
constexpr size_t kMaxGroupBatches = 64;
constexpr size_t kMaxGroupBytes = 1 << 20;

constexpr const char *kApplyOne = "SELECT syncline.apply_writes($1::jsonb, $2, $3::jsonb)";
// Several clients' batches in one statement, applied in array order. Each apply_writes call
// keeps its own exactly-once record, claims and subtransaction, so a rejected batch rejects
// only itself; an error that escapes one (lock timeout, deadlock, lost connection) rolls the
// whole statement back, and RunWriteGroup then applies each batch on its own.
//
// A batch that waits for a lock held elsewhere holds back its whole group, so a group waits
// at most kGroupLockTimeoutMs for any lock (set_config(..., true): for this transaction only;
// it runs before the first apply_writes, since every joined row whose projection calls
// apply_writes needs its one row), then fails and is re-run batch by batch, where each batch
// waits the full --db-lock-timeout on its own.
constexpr int kGroupLockTimeoutMs = 1000;
constexpr const char *kApplyGroup =
    "SELECT syncline.apply_writes(e -> 'c', e ->> 'i', e -> 'b') "
    "FROM (SELECT pg_catalog.set_config('lock_timeout', $2, true)) AS l(lock_timeout), "
    "pg_catalog.jsonb_array_elements($1::pg_catalog.jsonb) WITH ORDINALITY AS t(e, n) "
    "ORDER BY n";

}  // namespace

void Gateway::SubmitWrite(WriteCall call) {
  std::string subject = call.subject;
  write_waiting_.Push(subject, std::move(call));
  DispatchWrites();
}

// Group commit for client writes: apply_writes statements run on at most half the pool's
// connections (at least one), so syncs and catch-ups always have the others. While those are
// busy, the batches that arrive wait here; the next statement takes all of them (up to
// kMaxGroupBatches), one batch per token subject in turn. A batch that finds a statement free
// goes at once, alone. (100 clients, pool 4: two statements gave 13.5k and 14.1k batches/s,
// four 13.1k and 13.3k, in single alternated runs.)
void Gateway::DispatchWrites() {
  size_t limit = static_cast<size_t>(std::max(1, config_.pool_size / 2));
  while (write_statements_ < limit && !write_waiting_.empty()) {
    std::vector<WriteCall> group;
    size_t bytes = 0;
    while (!write_waiting_.empty() && group.size() < kMaxGroupBatches && bytes < kMaxGroupBytes) {
      group.push_back(write_waiting_.Pop());
      bytes += group.back().body.size() + group.back().claims_json.size();
    }
    write_statements_++;
    if (group.size() == 1) {
      RunWriteAlone(std::move(group.front()), /*counted=*/true);
    } else {
      RunWriteGroup(std::move(group));
    }
  }
}

// Row `row` of a successful apply_writes result to its batch: the outcome, or a failure
// (sent again later) when it is NULL.
void Gateway::DeliverOutcome(WriteCall &call, QueryReply &reply, int row) {
  if (PQgetisnull(reply.result.get(), row, 0)) {
    QueryReply none;
    none.error = "apply_writes returned no outcome";
    call.done(none, nullptr);
    return;
  }
  call.done(reply, PQgetvalue(reply.result.get(), row, 0));
}

void Gateway::RunWriteAlone(WriteCall call, bool counted) {
  std::string subject = call.subject;
  auto shared = std::make_shared<WriteCall>(std::move(call));
  db_->Query(
      kApplyOne, {shared->claims_json, shared->client_id, shared->body},
      [this, shared, counted](QueryReply &reply) {
        if (counted) write_statements_--;
        if (reply.ok() && PQntuples(reply.result.get()) != 1)
          reply.error = "apply_writes returned no outcome";
        if (reply.ok()) {
          DeliverOutcome(*shared, reply, 0);
        } else {
          shared->done(reply, nullptr);
        }
        if (counted) DispatchWrites();
      },
      /*urgent=*/false, subject);
}

void Gateway::RunWriteGroup(std::vector<WriteCall> group) {
  // Spliced as text: each piece is exactly one JSON value. claims_json is the verified
  // token's claims, which the verifier parsed as one object; body is a json::dump (BuildBatch,
  // ParseUploadRequest); the client id is dumped here as a string. Nothing a client sends is
  // spliced raw, so no batch can add claims or batches of its own to the group.
  std::string array = "[";
  for (const WriteCall &call : group) {
    if (array.size() > 1) array.push_back(',');
    array += "{\"c\":";
    array += call.claims_json;
    array += ",\"i\":";
    array += json(call.client_id).dump();
    array += ",\"b\":";
    array += call.body;
    array.push_back('}');
  }
  array.push_back(']');
  metrics_.write_groups++;
  metrics_.write_group_batches += group.size();
  auto shared = std::make_shared<std::vector<WriteCall>>(std::move(group));
  // The gateway's own turn in the pool's queue (""): the group is many users' batches.
  int lock_timeout = config_.lock_timeout_ms > 0
                         ? std::min(config_.lock_timeout_ms, kGroupLockTimeoutMs)
                         : kGroupLockTimeoutMs;
  db_->Query(
      kApplyGroup, {std::move(array), std::to_string(lock_timeout)},
      [this, shared](QueryReply &reply) {
        write_statements_--;
        std::vector<WriteCall> &calls = *shared;
        if (reply.ok() && PQntuples(reply.result.get()) == static_cast<int>(calls.size())) {
          for (size_t i = 0; i < calls.size(); i++)
            DeliverOutcome(calls[i], reply, static_cast<int>(i));
        } else if (!reply.ok() && reply.unavailable) {
          // No connection, or it was lost: every batch is retried by its client.
          for (WriteCall &call : calls) call.done(reply, nullptr);
        } else {
          // One batch's error rolled back the whole statement (nothing of the group is applied;
          // or, for a wrong row count, all of it is, and apply_writes answers each again as a
          // duplicate): each batch runs again on its own, so only a batch that fails is refused.
          metrics_.write_group_retries++;
          fprintf(
              stderr,
              "syncline-gateway: a group of %zu write batches failed (%s), applying them one by "
              "one\n",
              calls.size(), reply.ok() ? "wrong row count" : reply.error.c_str());
          for (WriteCall &call : calls) RunWriteAlone(std::move(call), /*counted=*/false);
        }
        DispatchWrites();
      });
}

void Gateway::OnApplied(PendingAck ack) {
  WriteKey key{ack.client_id, ack.seq};
  auto published = published_writes_.find(key);
  if (published != published_writes_.end()) {
    // Kept (until it ages out of published_order_): the same batch sent on another
    // connection, or retried, is answered from it too.
    ack.write_checkpoint = published->second;
    AckApplied(ack);
    return;
  }
  // Every waiter is kept, one per connection or upload: the same (client_id, seq) may be
  // waiting on several connections at once (a client that reconnected and sent it again).
  pending_acks_.emplace(std::move(key), std::move(ack));
}

void Gateway::AckApplied(const PendingAck &p) {
  if (p.done) {
    p.done(p.write_checkpoint);  // an /upload waiting for its answer
    return;
  }
  pb::ServerMessage ack = Ack(p.request_id, p.seq, pb::WriteAck::APPLIED);
  if (p.write_checkpoint) ack.mutable_write_ack()->set_write_checkpoint(p.write_checkpoint);
  FillAck(p.session_id, p.slot, ack);
}

// NOTIFY syncline: the batches a flush published, with its last op id.
void Gateway::OnPublishedWrites(const nlohmann::json &writes, uint64_t checkpoint) {
  for (const auto &w : writes) {
    if (!w.is_array() || w.size() != 2 || !w[0].is_string() || !w[1].is_number_unsigned()) continue;
    WriteKey key{w[0].get<std::string>(), w[1].get<uint64_t>()};
    NotePowerSyncWriteCheckpoint(key.first, checkpoint);
    auto [first, last] = pending_acks_.equal_range(key);
    std::vector<PendingAck> waiting;
    for (auto it = first; it != last; ++it) waiting.push_back(std::move(it->second));
    pending_acks_.erase(first, last);
    for (PendingAck &p : waiting) {
      p.write_checkpoint = checkpoint;
      AckApplied(p);
    }
    // Another gateway's client, or ours whose apply_writes reply is still on
    // its way (or the same batch on another connection): remembered briefly,
    // oldest forgotten first.
    if (published_writes_.emplace(key, checkpoint).second) published_order_.push_back(key);
    while (published_order_.size() > kMaxPublishedWrites) {
      published_writes_.erase(published_order_.front());
      published_order_.pop_front();
    }
  }
}

// Looks up the write checkpoints of every applied batch still waiting for one,
// in one query: after a NOTIFY whose write list was cut short, and from Tick
// for batches that waited too long (force: flush first, for a database whose
// background worker is not running).
void Gateway::CheckPendingAcks(bool force) {
  if (pending_acks_.empty()) return;
  if (ack_query_in_flight_) {
    ack_recheck_ = true;  // ask again once the running query returns
    ack_recheck_force_ = ack_recheck_force_ || force;
    return;
  }
  ack_query_in_flight_ = true;
  ack_recheck_ = ack_recheck_force_ = false;
  std::string client_ids = "{", seqs = "{";
  const WriteKey *previous = nullptr;
  for (const auto &[key, p] : pending_acks_) {
    if (previous && *previous == key) continue;  // several connections wait for this batch
    previous = &key;
    if (client_ids.size() > 1) {
      client_ids.push_back(',');
      seqs.push_back(',');
    }
    client_ids.push_back('"');
    for (char c : p.client_id) {
      if (c == '"' || c == '\\') client_ids.push_back('\\');
      client_ids.push_back(c);
    }
    client_ids.push_back('"');
    seqs += std::to_string(p.seq);
  }
  client_ids.push_back('}');
  seqs.push_back('}');
  db_->Query(
      "SELECT client_id, seq, write_checkpoint "
      "FROM syncline.write_checkpoints($1::text[], $2::bigint[], $3::boolean)",
      {client_ids, seqs, force ? "true" : "false"}, [this, force](QueryReply &reply) {
        ack_query_in_flight_ = false;
        std::vector<PendingAck> done;
        if (reply.ok()) {
          PGresult *r = reply.result.get();
          for (int i = 0; i < PQntuples(r); i++) {
            auto [first, last] = pending_acks_.equal_range(
                {PQgetvalue(r, i, 0), std::strtoull(PQgetvalue(r, i, 1), nullptr, 10)});
            for (auto it = first; it != last; ++it) {
              it->second.write_checkpoint = std::strtoull(PQgetvalue(r, i, 2), nullptr, 10);
              done.push_back(std::move(it->second));
            }
            pending_acks_.erase(first, last);
          }
        }
        // A batch that still has no checkpoint after a forced flush, or that
        // waited far too long, is acknowledged without one: it is applied,
        // and the client's next checkpoint carries its write checkpoint.
        double now = MonotonicSeconds();
        for (auto it = pending_acks_.begin(); it != pending_acks_.end();) {
          if ((force && reply.ok()) || now - it->second.since > kAckGiveUpSeconds) {
            done.push_back(std::move(it->second));
            it = pending_acks_.erase(it);
          } else {
            ++it;
          }
        }
        for (const PendingAck &p : done) AckApplied(p);
        if (ack_recheck_) CheckPendingAcks(ack_recheck_force_);
      });
}

// Tick: batches that waited for a flush longer than a busy worker needs.
void Gateway::ForceStaleAcks() {
  double now = MonotonicSeconds();
  for (const auto &[key, p] : pending_acks_)
    if (now - p.since > kAckForceSeconds) {
      CheckPendingAcks(true);
      return;
    }
}

void Gateway::ReleaseWrite(uint64_t session_id) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  it->second->write_in_flight = false;
  StartNextWrite(it->second);
}

void Gateway::FillAck(uint64_t session_id, uint64_t slot, const pb::ServerMessage &ack) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  Session *s = it->second;
  for (Session::OwedAck &owed : s->owed_acks)
    if (owed.slot == slot) {
      owed.ack = ack;
      break;
    }
  while (!s->owed_acks.empty() && s->owed_acks.front().ack) {
    const pb::ServerMessage &m = *s->owed_acks.front().ack;
    const auto &a = m.write_ack();
    if (a.status() != pb::WriteAck::APPLIED)
      LogEvent(s, "write-not-applied",
               "seq=" + std::to_string(a.seq()) +
                   " status=" + pb::WriteAck::Status_Name(a.status()) + " code=" + a.error_code() +
                   " message=\"" + a.error_message() + "\"");
    Send(s, m);
    s->owed_acks.pop_front();
  }
  // A full queue waits for acks (QueueWrite): sending some may let the next batch in.
  StartNextWrite(s);
}

}  // namespace syncline::gateway
