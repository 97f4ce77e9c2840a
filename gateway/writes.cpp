// Client writes: each WriteBatch goes to syncline.apply_writes with the
// session's verified claims, one batch at a time per connection so a client's
// batches are applied in the order it sent them. The database decides
// (authorization, constraints, exactly-once per (client_id, seq)); the
// gateway only translates its outcome into a WriteAck.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "gateway/gateway.hpp"

namespace syncline::gateway {
namespace {

namespace pb = syncline::v1;
using json = nlohmann::json;

constexpr size_t kMaxQueuedWrites = 64;

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

// Builds apply_writes' batch JSON.
json BuildBatch(const pb::WriteBatch &batch, const std::string &default_schema) {
  json ops = json::array();
  for (int i = 0; i < batch.ops_size(); i++) {
    const pb::WriteOp &op = batch.ops(i);
    json o = {{"op", OpName(op.op())}, {"type", op.type()}, {"id", op.id()}};
    if (!op.id().empty() && op.id().front() == '[') {
      // A composite key, sent as a JSON array text.
      json key = json::parse(op.id(), nullptr, /*allow_exceptions=*/false);
      if (key.is_array()) o["id"] = std::move(key);
    }
    if (op.op() != pb::WriteOp::DELETE) {
      try {
        o["data"] = op.data().empty() ? json::object() : json::parse(op.data());
      } catch (const std::exception &) {
        // Let the database refuse it, so the rejection is recorded under this
        // seq like any other and the client's seq sequence has no hole.
        o["data"] = op.data();
      }
    }
    ops.push_back(std::move(o));
  }
  json out = {{"seq", batch.seq()}, {"ops", std::move(ops)}};
  std::string schema = batch.schema_version().empty() ? default_schema : batch.schema_version();
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
  if (s->write_queue.size() >= kMaxQueuedWrites) {
    Send(s, Ack(m.request_id(), m.write_batch().seq(), pb::WriteAck::RETRY, "busy",
                "too many batches in flight on this connection; wait for their acks"));
    return;
  }
  s->write_queue.push_back(m);
  StartNextWrite(s);
}

void Gateway::StartNextWrite(Session *s) {
  if (!s->write_in_flight && !s->write_queue.empty() && !s->closing) {
    pb::ClientMessage m = std::move(s->write_queue.front());
    s->write_queue.pop_front();
    const pb::WriteBatch &batch = m.write_batch();
    json body = BuildBatch(batch, s->client_schema_version);
    s->write_in_flight = true;
    uint64_t id = s->id, request_id = m.request_id(), seq = batch.seq();
    std::string client_id = s->client_id;
    db_->Query(
        "SELECT syncline.apply_writes($1::jsonb, $2, $3::jsonb)",
        {s->claims_json, client_id, body.dump()},
        [this, id, request_id, seq, client_id](QueryReply &reply) {
          if (!reply.ok()) {
            // apply_writes raises only for transient trouble: keep the batch.
            FinishWrite(id, Ack(request_id, seq, pb::WriteAck::RETRY, reply.sqlstate,
                                "could not apply the batch now: " + reply.error,
                                "retry later with the same seq"));
            return;
          }
          json outcome;
          try {
            outcome = json::parse(PQgetvalue(reply.result.get(), 0, 0));
          } catch (const std::exception &e) {
            FinishWrite(id, Ack(request_id, seq, pb::WriteAck::RETRY, "XX000",
                                std::string("unreadable apply_writes outcome: ") + e.what()));
            return;
          }
          std::string status = outcome.value("status", "");
          std::string message = outcome.value("message", "");
          if (outcome.contains("op_index"))
            message = "op " + outcome["op_index"].dump() + ": " + message;
          if (status == "rejected") {
            FinishWrite(id, Ack(request_id, seq, pb::WriteAck::REJECTED, outcome.value("code", ""),
                                message, outcome.value("hint", "")));
            return;
          }
          if (status != "applied") {  // out_of_order, or something newer
            FinishWrite(id, Ack(request_id, seq, pb::WriteAck::RETRY, status, message,
                                outcome.value("hint", "")));
            return;
          }
          if (outcome.contains("write_checkpoint") && outcome["write_checkpoint"].is_number()) {
            pb::ServerMessage ack = Ack(request_id, seq, pb::WriteAck::APPLIED);
            ack.mutable_write_ack()->set_write_checkpoint(
                outcome["write_checkpoint"].get<uint64_t>());
            FinishWrite(id, ack);
            return;
          }
          // Applied now: ask for the first checkpoint that includes it.
          db_->Query("SELECT syncline.write_checkpoint($1, $2::bigint)",
                     {client_id, std::to_string(seq)}, [this, id, request_id, seq](QueryReply &wc) {
                       pb::ServerMessage ack = Ack(request_id, seq, pb::WriteAck::APPLIED);
                       if (wc.ok() && !PQgetisnull(wc.result.get(), 0, 0))
                         ack.mutable_write_ack()->set_write_checkpoint(
                             std::strtoull(PQgetvalue(wc.result.get(), 0, 0), nullptr, 10));
                       FinishWrite(id, ack);
                     });
        });
  }
}

void Gateway::FinishWrite(uint64_t session_id, const pb::ServerMessage &ack) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  Session *s = it->second;
  s->write_in_flight = false;
  const auto &a = ack.write_ack();
  if (a.status() != pb::WriteAck::APPLIED)
    LogEvent(s, "write-not-applied",
             "seq=" + std::to_string(a.seq()) + " status=" + pb::WriteAck::Status_Name(a.status()) +
                 " code=" + a.error_code() + " message=\"" + a.error_message() + "\"");
  Send(s, ack);
  StartNextWrite(s);
}

}  // namespace syncline::gateway
