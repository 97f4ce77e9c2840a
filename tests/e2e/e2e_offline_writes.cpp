// End-to-end: a write queued offline that the server state has since made
// impossible is rejected, and does not block the writes queued after it.
//
//   device 1 (client id A, user u_off) goes offline and queues seq 1 = PATCH set S reps=10;
//   device 2 (client id B, same user) deletes S through its own WriteBatch;
//   device 1 comes back: seq 1 -> REJECTED (P0002, the row is gone), a retry of seq 1 gets
//   the same answer, seq 2 = PUT a new set N -> APPLIED, seq 3 -> APPLIED;
//   both devices, once at a checkpoint >= the write checkpoints, hold exactly the table's
//   rows of the user's bucket: S absent, N present with seq 3's change.
//
// Registered in e2e_test.cpp's test list; uses the suite's e2e_items table and its
// e2e_user bucket (rows of e2e_items whose owner is the token's sub).
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "tests/e2e/e2e_support.hpp"
#include "tests/e2e/expect.hpp"
#include "tests/e2e/ws_client.hpp"

namespace {

using syncline::testing::Client;
using syncline::testing::ClientContext;
using syncline::testing::Describe;
using syncline::testing::Env;
using syncline::testing::Failure;
using syncline::testing::MakeHs256Token;
using syncline::testing::Sql;
using syncline::testing::Token;
namespace pb = syncline::v1;
using json = nlohmann::json;

const std::string kUser = "u_off";
const std::string kBucket = "e2e_user[\"u_off\"]";
const std::string kSetS = "off-S";      // deleted by device 2 while device 1 is offline
const std::string kSetN = "off-N";      // created by device 1 after its rejected batch
const std::string kOther = "off-keep";  // untouched, must survive everything

std::string AckText(const pb::WriteAck &a) {
  return "seq=" + std::to_string(a.seq()) + " " + pb::WriteAck::Status_Name(a.status()) +
         " code=" + a.error_code() + " message=" + a.error_message() +
         " wc=" + std::to_string(a.write_checkpoint());
}

pb::ClientMessage Batch(uint64_t seq, pb::WriteOp::Kind kind, const std::string &id,
                        const std::string &data) {
  pb::ClientMessage m;
  m.set_request_id(5000 + seq);
  auto *b = m.mutable_write_batch();
  b->set_seq(seq);
  auto *op = b->add_ops();
  op->set_op(kind);
  op->set_type("e2e_items");
  op->set_id(id);
  op->set_data(data);
  return m;
}

// Sends one batch and waits for the WriteAck answering it.
pb::WriteAck Upload(ClientContext &ctx, Client &c, const pb::ClientMessage &m) {
  size_t before = c.acks.size();
  c.Send(m);
  if (!ctx.WaitFor([&] { return c.acks.size() > before || c.closed; }, 10))
    throw Failure("no WriteAck for seq " + std::to_string(m.write_batch().seq()) + "; " +
                  Describe(c));
  if (c.acks.size() <= before) throw Failure("closed before WriteAck: " + Describe(c));
  EXPECT(c.acks.size() == before + 1, "more than one WriteAck for one batch");
  EXPECT(c.acks.back().seq() == m.write_batch().seq(), AckText(c.acks.back()));
  return c.acks.back();
}

// The server's rows of the user's bucket, as replica keys "e2e_items/<id>" -> row JSON.
std::map<std::string, json> ServerRows(Sql &db) {
  std::string doc = db.Exec(
      "SELECT coalesce(jsonb_object_agg('e2e_items/' || id, to_jsonb(t)), '{}') FROM e2e_items t "
      "WHERE owner = '" +
      kUser + "'");
  std::map<std::string, json> rows;
  json parsed = json::parse(doc);
  for (auto &[k, v] : parsed.items()) rows[k] = v;
  return rows;
}

// Empty when the client's replica of the bucket equals the server's rows.
std::string ReplicaDiff(Client &c, const std::map<std::string, json> &rows) {
  auto it = c.buckets.find(kBucket);
  if (it == c.buckets.end()) return "replica lacks bucket " + kBucket;
  const auto &objects = it->second.objects;
  std::string out;
  for (const auto &[key, row] : rows) {
    auto o = objects.find(key);
    if (o == objects.end()) {
      out += " missing " + key + ";";
      continue;
    }
    json have = json::parse(o->second, nullptr, false);
    if (have != row) out += " " + key + " is " + o->second + " but the row is " + row.dump() + ";";
  }
  for (const auto &[key, data] : objects)
    if (!rows.count(key)) out += " extra " + key + "=" + data + ";";
  return out;
}

}  // namespace

void TestOfflineWritesRejectedThenApplied(ClientContext &ctx) {
  const std::string host = Env("SYNCLINE_GW_HOST", "127.0.0.1");
  const int port = std::atoi(Env("SYNCLINE_GW_PORT", "8080").c_str());
  // Unique installation ids: the database remembers each client id's seqs.
  const std::string suffix = std::to_string(time(nullptr)) + "-" + std::to_string(getpid());
  const std::string id_a = "e2e-off-A-" + suffix, id_b = "e2e-off-B-" + suffix;
  Sql db;
  db.Exec("DELETE FROM e2e_items WHERE owner = '" + kUser + "'");
  db.Exec("INSERT INTO e2e_items VALUES ('" + kSetS + "', '" + kUser + "', 'squat reps=8'), ('" +
          kOther + "', '" + kUser + "', 'plank 60s')");
  db.Exec("SELECT syncline.flush()");

  // Device 1 syncs S, then goes offline with seq 1 queued.
  Client a1(&ctx, host, port);
  a1.client_id = id_a;
  EXPECT(a1.ConnectAndSync(Token(kUser)), Describe(a1));
  EXPECT(a1.buckets[kBucket].objects.count("e2e_items/" + kSetS) == 1, "device 1 never had S");
  a1.Close();
  EXPECT(a1.WaitClosed(), "device 1 did not go offline");
  const pb::ClientMessage queued1 =
      Batch(1, pb::WriteOp::PATCH, kSetS, R"({"title": "squat reps=10"})");

  // Device 2 deletes S.
  Client b(&ctx, host, port);
  b.client_id = id_b;
  EXPECT(b.ConnectAndSync(Token(kUser)), Describe(b));
  auto del = Upload(ctx, b, Batch(1, pb::WriteOp::DELETE, kSetS, ""));
  EXPECT(del.status() == pb::WriteAck::APPLIED && del.write_checkpoint() > 0, AckText(del));
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE id = '" + kSetS + "'") == "0",
         "delete not applied");

  // Device 1 comes back with its old replica (still holding S) and uploads its queue
  // right after Hello, before it syncs.
  Client a(&ctx, host, port);
  a.client_id = id_a;
  a.buckets = a1.buckets;
  a.position = a1.position;
  a.Connect();
  EXPECT(a.WaitEstablished(), Describe(a));
  std::string token = Token(kUser);
  a.SendHello(&token, 1, id_a);
  auto r1 = Upload(ctx, a, queued1);
  EXPECT(r1.status() == pb::WriteAck::REJECTED && r1.error_code() == "P0002", AckText(r1));
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE id = '" + kSetS + "'") == "0",
         "the rejected PATCH brought S back");
  // A retry (the ack was lost) gets the recorded answer, still without effect.
  auto r1again = Upload(ctx, a, queued1);
  EXPECT(r1again.status() == pb::WriteAck::REJECTED && r1again.error_code() == "P0002",
         AckText(r1again));
  // The queue is not stuck behind the rejected batch.
  auto r2 = Upload(
      ctx, a, Batch(2, pb::WriteOp::PUT, kSetN, R"({"owner": "u_off", "title": "bench reps=5"})"));
  EXPECT(r2.status() == pb::WriteAck::APPLIED && r2.write_checkpoint() > 0, AckText(r2));
  auto r3 = Upload(ctx, a, Batch(3, pb::WriteOp::PATCH, kSetN, R"({"title": "bench reps=6"})"));
  EXPECT(r3.status() == pb::WriteAck::APPLIED && r3.write_checkpoint() >= r2.write_checkpoint(),
         AckText(r3) + " after " + AckText(r2));
  EXPECT(db.Exec("SELECT title FROM e2e_items WHERE id = '" + kSetN + "'") == "bench reps=6",
         "seq 2/3 not in the table");
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE id = '" + kSetS + "'") == "0",
         "S reappeared in the table");

  // Now device 1 syncs from where it left off.
  uint64_t before = a.completes;
  a.SendSync(true);
  EXPECT(a.WaitComplete(before), Describe(a));

  // Each device converges once at a checkpoint >= its write checkpoint (device 2 must
  // also see device 1's writes, so it waits for those too).
  const uint64_t wc_a = r3.write_checkpoint();
  const uint64_t wc_b = std::max(del.write_checkpoint(), wc_a);
  EXPECT(ctx.WaitFor([&] { return a.position >= wc_a || a.closed; }, 10) && !a.closed,
         "device 1 at " + std::to_string(a.position) + " < " + std::to_string(wc_a) + "; " +
             Describe(a));
  EXPECT(ctx.WaitFor([&] { return b.position >= wc_b || b.closed; }, 10) && !b.closed,
         "device 2 at " + std::to_string(b.position) + " < " + std::to_string(wc_b) + "; " +
             Describe(b));
  ctx.Pump(0.3);  // anything still in flight (e.g. S coming back) would land now
  auto rows = ServerRows(db);
  EXPECT(rows.size() == 2 && rows.count("e2e_items/" + kSetN) && rows.count("e2e_items/" + kOther),
         "unexpected server rows: " + json(rows).dump());
  std::string diff_a = ReplicaDiff(a, rows), diff_b = ReplicaDiff(b, rows);
  EXPECT(diff_a.empty(), "device 1 replica differs from the table:" + diff_a);
  EXPECT(diff_b.empty(), "device 2 replica differs from the table:" + diff_b);
  EXPECT(a.checksum_failures.empty() && b.checksum_failures.empty(),
         Describe(a) + " / " + Describe(b));
  EXPECT(a.errors.empty() && b.errors.empty(), Describe(a) + " / " + Describe(b));

  // A fresh connection of device 1 learns its write checkpoint and gets the same state.
  Client fresh(&ctx, host, port);
  fresh.client_id = id_a;
  EXPECT(fresh.ConnectAndSync(Token(kUser)), Describe(fresh));
  EXPECT(fresh.write_checkpoint >= wc_a,
         std::to_string(fresh.write_checkpoint) + " < " + std::to_string(wc_a));
  std::string diff_f = ReplicaDiff(fresh, rows);
  EXPECT(fresh.position >= wc_a && diff_f.empty(), "fresh replica:" + diff_f);
}
