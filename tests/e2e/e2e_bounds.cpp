// End-to-end: the gateway's resources stay bounded whatever a client or the data does.
//
//   large_bucket_bounded_memory: a user bucket of 100 rows of 1 MiB (100 MiB of op data) syncs
//     through a release gateway started with --page-bytes 1M --send-queue-bytes 2M; the
//     gateway's peak resident memory (VmHWM) grows by far less than the bucket.
//   statement_timeout_ends_slow_queries: a parameter query that sleeps longer than that
//     gateway's --db-statement-timeout fails the sync (57014) instead of holding a pool
//     connection; other users still sync.
//   live_round_over_budget_catches_up: a live change of 8 MiB in one bucket, against
//     --live-round-bytes 4M, is left out of the shared round and reaches the client through
//     its own paged catch-up, complete and with matching checksums.
//   write_queue_bounded_in_bytes: batches past --write-queue-bytes are answered RETRY "BUSY"
//     at once, and every batch gets an ack.
//   write_groups_isolate_failures: batches of many clients applied in one statement; a
//     rejected one rejects only itself, one whose error escapes makes the gateway re-run the
//     group batch by batch, and every other batch is applied exactly once.
//   writes_pipelined_before_acks: a client's queued batches are applied one after another
//     without waiting for each other's write checkpoints (every flush held back), and their
//     acks then come in seq order (a rejected one's too), each applied one with its write
//     checkpoint.
//
// Registered in e2e_test.cpp's test list; run.sh starts the second gateway and passes its
// port and pid (SYNCLINE_GW_BOUNDED_PORT, SYNCLINE_GW_BOUNDED_PID).
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

// A "Vm...:" line of /proc/<pid>/status, in KiB (-1 when unreadable).
long StatusKib(int pid, const std::string &field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
  return -1;
}

int BoundedPort() { return std::atoi(Env("SYNCLINE_GW_BOUNDED_PORT", "0").c_str()); }
int BoundedPid() { return std::atoi(Env("SYNCLINE_GW_BOUNDED_PID", "0").c_str()); }

constexpr int kLargeRows = 100;
constexpr int kLargeRowBytes = 1 << 20;

}  // namespace

void TestLargeBucketBoundedMemory(ClientContext &ctx) {
  EXPECT(BoundedPort() > 0 && BoundedPid() > 0, "SYNCLINE_GW_BOUNDED_PORT/PID not set");
  Sql db;
  // 100 rows of 1 MiB each (compressible, so Postgres stores them small; the gateway still
  // receives every byte).
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_huge'");
  db.Exec("INSERT INTO e2e_items SELECT 'huge-' || g, 'u_huge', repeat(chr(97 + g % 26), " +
          std::to_string(kLargeRowBytes) + ") FROM generate_series(1, " +
          std::to_string(kLargeRows) + ") g");
  db.Exec("SELECT syncline.flush()");
  long before = StatusKib(BoundedPid(), "VmHWM");
  EXPECT(before > 0, "cannot read VmHWM of pid " + std::to_string(BoundedPid()));
  Client c(&ctx, "127.0.0.1", BoundedPort());
  c.keep_objects = false;  // checksums only: the test's own memory is not what is measured
  EXPECT(c.ConnectAndSync(Token("u_huge"), 120), Describe(c));
  EXPECT(c.ops_received >= static_cast<uint64_t>(kLargeRows),
         "ops received: " + std::to_string(c.ops_received));
  EXPECT(c.checksum_failures.empty(), Describe(c));
  uint64_t bytes = c.bytes_received;
  long after = StatusKib(BoundedPid(), "VmHWM");
  fprintf(stderr, "    synced %llu bytes; gateway VmHWM %ld KiB -> %ld KiB\n",
          static_cast<unsigned long long>(bytes), before, after);
  EXPECT(bytes >= static_cast<uint64_t>(kLargeRows) * kLargeRowBytes,
         "received only " + std::to_string(bytes) + " bytes");
  // Bounded by the page (1 MiB + one op), the send queue (2 MiB) and their copies on the way
  // (result, ops, messages): a small multiple of them, far below the 100 MiB bucket.
  EXPECT(after - before < 40 * 1024, "VmHWM grew by " + std::to_string((after - before) / 1024) +
                                         " MiB while syncing a 100 MiB bucket");
  c.Close();
  c.WaitClosed(5);
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_huge'");
}

// A metric of the gateway on `port` (-1 when absent).
double MetricAt(int port, const std::string &name) {
  std::string cmd = "curl -s http://127.0.0.1:" + std::to_string(port) + "/metrics 2>/dev/null";
  FILE *p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string body;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) body.append(buf, n);
  pclose(p);
  size_t pos = body.find("\n" + name + " ");
  return pos == std::string::npos ? -1 : std::atof(body.c_str() + pos + name.size() + 2);
}

// A metric of the bounded gateway (-1 when absent).
double BoundedMetric(const std::string &name) { return MetricAt(BoundedPort(), name); }

void TestLiveRoundOverBudgetCatchesUp(ClientContext &ctx) {
  EXPECT(BoundedPort() > 0, "SYNCLINE_GW_BOUNDED_PORT not set");
  Sql db;
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_livebig'");
  Client c(&ctx, "127.0.0.1", BoundedPort());
  EXPECT(c.ConnectAndSync(Token("u_livebig")), Describe(c));
  double before = BoundedMetric("syncline_live_buckets_over_budget_total");
  EXPECT(before >= 0, "metric syncline_live_buckets_over_budget_total missing");
  db.Exec("INSERT INTO e2e_items SELECT 'livebig-' || g, 'u_livebig', repeat(chr(97 + g), " +
          std::to_string(kLargeRowBytes) + ") FROM generate_series(1, 8) g");
  const std::string bucket = "e2e_user[\"u_livebig\"]";
  EXPECT(ctx.WaitFor(
             [&] {
               auto it = c.buckets.find(bucket);
               return it != c.buckets.end() && it->second.objects.size() == 8;
             },
             30),
         "live change not delivered; " + Describe(c));
  EXPECT(c.checksum_failures.empty(), Describe(c));
  double after = BoundedMetric("syncline_live_buckets_over_budget_total");
  EXPECT(after >= before + 1, "the bucket was not left out of the shared round (" +
                                  std::to_string(before) + " -> " + std::to_string(after) + ")");
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_livebig'");
}

void TestStatementTimeoutEndsSlowQueries(ClientContext &ctx) {
  EXPECT(BoundedPort() > 0, "SYNCLINE_GW_BOUNDED_PORT not set");
  Sql db;
  // Only u_sleepy's parameter query sleeps (5 s, the gateway allows 1.5 s).
  db.Exec(
      "DO $$ BEGIN PERFORM syncline.drop_bucket('e2e_sleepy'); EXCEPTION WHEN others THEN NULL; "
      "END $$");
  db.Exec(
      "SELECT syncline.create_bucket('e2e_sleepy', $q$SELECT u AS user_id FROM (SELECT "
      "syncline.user_id() AS u) x WHERE CASE WHEN u = 'u_sleepy' THEN pg_sleep(5) IS NOT NULL "
      "ELSE false END$q$, ARRAY['SELECT * FROM e2e_items WHERE owner = bucket.user_id'])");
  std::string failure;
  try {
    Client slow(&ctx, "127.0.0.1", BoundedPort());
    slow.Connect();
    EXPECT(slow.WaitEstablished(), Describe(slow));
    std::string t = Token("u_sleepy");
    slow.SendHello(&t);
    double start = syncline::testing::NowSeconds();
    slow.SendSync(false);
    EXPECT(ctx.WaitFor([&] { return !slow.errors.empty() || slow.completes > 0; }, 10),
           "no answer; " + Describe(slow));
    double took = syncline::testing::NowSeconds() - start;
    EXPECT(slow.completes == 0 && slow.errors[0].code() == pb::Error::SYNC_FAILED, Describe(slow));
    EXPECT(slow.errors[0].message().find("statement timeout") != std::string::npos, Describe(slow));
    EXPECT(took < 4.5, "the slow query ran " + std::to_string(took) + " s");
    Client other(&ctx, "127.0.0.1", BoundedPort());
    EXPECT(other.ConnectAndSync(Token("u_awake")), Describe(other));
  } catch (const Failure &e) {
    failure = e.what();
  }
  db.Exec("SELECT syncline.drop_bucket('e2e_sleepy')");
  if (!failure.empty()) throw Failure(failure);
}

void TestWriteQueueBoundedInBytes(ClientContext &ctx, const std::string &host, int port) {
  Client c(&ctx, host, port);
  c.client_id = "e2e-write-queue";
  c.keep_objects = false;
  EXPECT(c.ConnectAndSync(Token("u_write_queue")), Describe(c));
  // 8 batches of ~900 KB sent at once: the suite's gateway keeps at most 2 MiB of them.
  const int kBatches = 8;
  std::string title(900 * 1024, 'w');
  for (int seq = 1; seq <= kBatches; seq++) {
    pb::ClientMessage m;
    m.set_request_id(700 + seq);
    auto *batch = m.mutable_write_batch();
    batch->set_seq(seq);
    auto *op = batch->add_ops();
    op->set_op(pb::WriteOp::PUT);
    op->set_type("e2e_items");
    op->set_id("wq-" + std::to_string(seq));
    op->set_data(nlohmann::json{{"owner", "u_write_queue"}, {"title", title}}.dump());
    c.Send(m);
  }
  EXPECT(ctx.WaitFor([&] { return c.acks.size() >= kBatches || c.closed; }, 60),
         std::to_string(c.acks.size()) + " acks; " + Describe(c));
  int busy = 0, applied = 0;
  for (const auto &a : c.acks) {
    if (a.status() == pb::WriteAck::RETRY && a.error_code() == "BUSY") busy++;
    if (a.status() == pb::WriteAck::APPLIED) applied++;
    EXPECT(a.status() == pb::WriteAck::APPLIED || !a.error_code().empty(),
           "seq " + std::to_string(a.seq()) + " without error_code");
  }
  EXPECT(busy > 0, "no batch was refused BUSY; applied " + std::to_string(applied));
  EXPECT(applied > 0, "nothing applied");
  EXPECT(!c.closed, Describe(c));
}

namespace {

pb::ClientMessage OneOpBatch(uint64_t request_id, uint64_t seq, const std::string &id,
                             const std::string &data) {
  pb::ClientMessage m;
  m.set_request_id(request_id);
  auto *batch = m.mutable_write_batch();
  batch->set_seq(seq);
  auto *op = batch->add_ops();
  op->set_op(pb::WriteOp::PUT);
  op->set_type("e2e_items");
  op->set_id(id);
  op->set_data(data);
  return m;
}

std::string AckSummary(const pb::WriteAck &a) {
  return "seq " + std::to_string(a.seq()) + " " + pb::WriteAck::Status_Name(a.status()) +
         " code=" + a.error_code() + " message=" + a.error_message() +
         " wc=" + std::to_string(a.write_checkpoint());
}

}  // namespace

// Batches of many clients that wait at the same time are applied in one statement (the
// suite's ASan gateway, --db-lock-timeout at its default 5 s). A rejected batch in a group
// rejects only itself; a batch whose error escapes (here a lock timeout on its client's lock,
// which a group waits for at most 1 s) rolls the group back, and the gateway applies the
// group's batches one by one: only that batch is answered RETRY (after its own 5 s), every
// other one is applied exactly once, without waiting those 5 s. Writes keep to half the
// pool, so a client syncs while they wait.
void TestWriteGroupsIsolateFailures(ClientContext &ctx, const std::string &host, int port) {
  auto metric = [&](const std::string &name) { return MetricAt(port, name); };
  Sql db, gate, holder;
  db.Exec("DELETE FROM e2e_items WHERE owner LIKE 'u_group_%'");
  db.Exec("DELETE FROM syncline_internal.client_batches WHERE client_id LIKE 'e2e-group-%'");
  const int kClients = 12, kRejected = 5, kBlocked = 7;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; i++) {
    clients.push_back(std::make_unique<Client>(&ctx, host, port));
    clients.back()->client_id = "e2e-group-" + std::to_string(i);
    clients.back()->keep_objects = false;
    EXPECT(clients.back()->ConnectAndSync(Token("u_group_" + std::to_string(i))),
           Describe(*clients.back()));
  }
  auto send_all = [&](uint64_t seq, int last) {
    for (int i = 0; i < kClients; i++) {
      if (i == last) continue;
      std::string owner = "u_group_" + std::to_string(i);
      std::string data = i == kRejected && seq == 1
                             ? R"({"title": "no owner"})"
                             : nlohmann::json{{"owner", owner}, {"title", "grouped"}}.dump();
      clients[i]->Send(OneOpBatch(900 + seq, seq,
                                  "group-" + std::to_string(i) + "-" + std::to_string(seq), data));
    }
    // Sent after the others are in: it waits with them rather than going first, alone.
    ctx.Pump(0.2);
    if (last >= 0) {
      clients[last]->Send(OneOpBatch(
          900 + seq, seq, "group-" + std::to_string(last) + "-" + std::to_string(seq),
          nlohmann::json{{"owner", "u_group_" + std::to_string(last)}, {"title", "grouped"}}
              .dump()));
      ctx.Pump(0.1);
    }
  };
  auto wait_acks = [&](size_t n) {
    EXPECT(ctx.WaitFor(
               [&] {
                 for (auto &c : clients)
                   if (c->acks.size() < n) return false;
                 return true;
               },
               20),
           "not every client got its WriteAck");
  };

  // Ack `index` of every client: APPLIED with a write checkpoint, but for client `odd`.
  auto expect_acks = [&](size_t index, int odd, pb::WriteAck::Status status, const char *code) {
    for (int i = 0; i < kClients; i++) {
      const pb::WriteAck &a = clients[i]->acks[index];
      if (i == odd) {
        EXPECT(a.status() == status && a.error_code() == code, AckSummary(a));
      } else {
        EXPECT(a.status() == pb::WriteAck::APPLIED && a.write_checkpoint() > 0,
               "client " + std::to_string(i) + ": " + AckSummary(a));
      }
    }
  };

  // 1. While client_batches is locked, the first batches (one per write statement) wait in
  //    the database and the rest wait in the gateway; once it is released, they go as a group.
  double groups0 = metric("syncline_write_groups_total");
  double retries0 = metric("syncline_write_group_retries_total");
  EXPECT(groups0 >= 0 && retries0 >= 0, "write group metrics missing");
  gate.Exec("BEGIN");
  gate.Exec("LOCK TABLE syncline_internal.client_batches IN SHARE MODE");
  send_all(1, -1);
  // Writes hold at most half the pool: a new connection syncs while they wait.
  {
    Client reader(&ctx, host, port);
    reader.client_id = "e2e-group-reader";
    reader.keep_objects = false;
    bool synced = reader.ConnectAndSync(Token("u_group_reader"), 2);
    if (!synced) gate.Exec("COMMIT");
    EXPECT(synced, "a sync waited for the blocked writes: " + Describe(reader));
    reader.Close();
  }
  gate.Exec("COMMIT");
  wait_acks(1);
  expect_acks(0, kRejected, pb::WriteAck::REJECTED, "23502");
  EXPECT(metric("syncline_write_groups_total") > groups0, "no batches were applied together");

  // 2. The same, with one client's lock held elsewhere: its group times out on it, is rolled
  //    back and re-run one batch at a time.
  std::string blocked_id = "e2e-group-" + std::to_string(kBlocked);
  holder.Exec("SELECT pg_advisory_lock(1398361668, hashtext('" + blocked_id + "'))");
  gate.Exec("BEGIN");
  gate.Exec("LOCK TABLE syncline_internal.client_batches IN SHARE MODE");
  send_all(2, kBlocked);
  gate.Exec("COMMIT");
  double released = syncline::testing::NowSeconds();
  EXPECT(ctx.WaitFor(
             [&] {
               for (int i = 0; i < kClients; i++)
                 if (i != kBlocked && clients[i]->acks.size() < 2) return false;
               return true;
             },
             20),
         "not every unblocked client got its WriteAck");
  double others = syncline::testing::NowSeconds() - released;
  // The group gave up on the lock after 1 s, not the gateway's 5 s lock_timeout.
  EXPECT(others < 4, "the other clients waited " + std::to_string(others) + " s for their acks");
  wait_acks(2);
  expect_acks(1, kBlocked, pb::WriteAck::RETRY, "55P03");
  EXPECT(metric("syncline_write_group_retries_total") > retries0,
         "the failed group was not re-run batch by batch");
  holder.Exec("SELECT pg_advisory_unlock(1398361668, hashtext('" + blocked_id + "'))");
  // The client retries the same seq, now applied.
  size_t before = clients[kBlocked]->acks.size();
  clients[kBlocked]->Send(OneOpBatch(
      999, 2, "group-" + std::to_string(kBlocked) + "-2",
      nlohmann::json{{"owner", "u_group_" + std::to_string(kBlocked)}, {"title", "retried"}}
          .dump()));
  EXPECT(ctx.WaitFor([&] { return clients[kBlocked]->acks.size() > before; }, 10), "no ack");
  EXPECT(clients[kBlocked]->acks.back().status() == pb::WriteAck::APPLIED,
         AckSummary(clients[kBlocked]->acks.back()));
  // Every batch applied once: two rows per client, one for the client whose first was rejected.
  std::string rows = db.Exec(
      "SELECT string_agg(owner || '=' || n, ',' ORDER BY owner) FROM (SELECT owner, count(*) n "
      "FROM e2e_items WHERE owner LIKE 'u_group_%' GROUP BY owner) x");
  std::string want;
  std::vector<std::string> owners;
  for (int i = 0; i < kClients; i++) owners.push_back("u_group_" + std::to_string(i));
  std::sort(owners.begin(), owners.end());
  for (const std::string &o : owners)
    want += (want.empty() ? "" : ",") + o + "=" + (o == "u_group_5" ? "1" : "2");
  EXPECT(rows == want, "rows per owner: " + rows + " (want " + want + ")");

  // 3. A group whose database connection is lost while it runs (its backend terminated while
  //    the group waits for the lock of the client held elsewhere): the gateway sends it once
  //    more on another connection (apply_writes answers a batch it already recorded as a
  //    duplicate), and a batch answered RETRY is sent again by its client. Each is applied
  //    exactly once.
  std::vector<size_t> base;
  for (auto &c : clients) base.push_back(c->acks.size());
  holder.Exec("SELECT pg_advisory_lock(1398361668, hashtext('" + blocked_id + "'))");
  gate.Exec("BEGIN");
  gate.Exec("LOCK TABLE syncline_internal.client_batches IN SHARE MODE");
  send_all(3, kBlocked);
  gate.Exec("COMMIT");
  // The group waits at most 1 s for that lock: terminated well before.
  bool group_lost = ctx.WaitFor(
      [&] {
        return db.Exec(
                   "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                   "WHERE wait_event_type = 'Lock' AND query LIKE '%jsonb_array_elements%' "
                   "AND pid <> pg_backend_pid()") != "0";
      },
      5);
  holder.Exec("SELECT pg_advisory_unlock(1398361668, hashtext('" + blocked_id + "'))");
  EXPECT(group_lost, "no group statement was seen waiting");
  int retried = 0;
  for (int i = 0; i < kClients; i++) {
    Client &c = *clients[i];
    std::string id = "group-" + std::to_string(i) + "-3";
    std::string data =
        nlohmann::json{{"owner", "u_group_" + std::to_string(i)}, {"title", "grouped"}}.dump();
    EXPECT(ctx.WaitFor([&] { return c.acks.size() > base[i]; }, 20), "no ack for seq 3");
    for (int tries = 0; c.acks.back().status() == pb::WriteAck::RETRY && tries < 5; tries++) {
      retried++;
      size_t n = c.acks.size();
      c.Send(OneOpBatch(1000 + tries, 3, id, data));
      EXPECT(ctx.WaitFor([&] { return c.acks.size() > n; }, 20), "no ack for a resent seq 3");
    }
    EXPECT(c.acks.back().status() == pb::WriteAck::APPLIED,
           "client " + std::to_string(i) + ": " + AckSummary(c.acks.back()));
  }
  fprintf(stderr, "    lost group: %d batches sent again by their clients\n", retried);
  rows = db.Exec(
      "SELECT string_agg(owner || '=' || n, ',' ORDER BY owner) FROM (SELECT owner, count(*) n "
      "FROM e2e_items WHERE owner LIKE 'u_group_%' GROUP BY owner) x");
  want.clear();
  for (const std::string &o : owners)
    want += (want.empty() ? "" : ",") + o + "=" + (o == "u_group_5" ? "2" : "3");
  EXPECT(rows == want, "after the lost group, rows per owner: " + rows + " (want " + want + ")");
  for (auto &c : clients) c->Close();
  db.Exec("DELETE FROM e2e_items WHERE owner LIKE 'u_group_%'");
}

// A client uploading its queue of offline writes: each batch waits for the one before it to
// commit, not for that one's write checkpoint. With every flush held back (the flush lock
// taken here), all of the queued batches are applied and none is acknowledged, not even the
// rejected third one, whose answer is ready at once: acks go out in batch order. Once flushes
// run again, the acks come in seq order, each applied one with the write checkpoint that
// publishes it.
void TestWritesPipelinedBeforeAcks(ClientContext &ctx, const std::string &host, int port) {
  Sql db, holder;
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_pipeline'");
  Client c(&ctx, host, port);
  c.client_id = "e2e-pipeline";
  c.keep_objects = false;
  EXPECT(c.ConnectAndSync(Token("u_pipeline")), Describe(c));
  const std::string recorded =
      "SELECT count(*) FROM syncline_internal.client_batches WHERE client_id = 'e2e-pipeline'";
  std::string before = db.Exec(recorded);
  holder.Exec("BEGIN");
  holder.Exec("SELECT pg_advisory_xact_lock(1398361667, 1)");  // the flush lock
  const int kBatches = 5;
  const int kRejected = 3;  // no owner: NOT NULL
  for (int seq = 1; seq <= kBatches; seq++) {
    std::string data = seq == kRejected ? R"({"title": "no owner"})"
                                        : nlohmann::json{{"owner", "u_pipeline"},
                                                         {"title", "queued " + std::to_string(seq)}}
                                              .dump();
    c.Send(OneOpBatch(800 + seq, seq, "pipeline-" + std::to_string(seq), data));
  }
  std::string applied;
  bool all_applied = ctx.WaitFor(
      [&] {
        applied = db.Exec(recorded);
        return std::stoi(applied) - std::stoi(before) == kBatches;
      },
      5);
  size_t acks_while_held = c.acks.size();
  holder.Exec("COMMIT");
  EXPECT(all_applied, "with flushes held back, " + applied + " of " + std::to_string(kBatches) +
                          " queued batches were applied (each waited for the previous ack)");
  EXPECT(acks_while_held == 0,
         std::to_string(acks_while_held) + " acks came before any flush could publish a batch");
  EXPECT(ctx.WaitFor([&] { return c.acks.size() >= kBatches || c.closed; }, 20),
         std::to_string(c.acks.size()) + " acks; " + Describe(c));
  uint64_t previous = 0;
  for (int i = 0; i < kBatches; i++) {
    const pb::WriteAck &a = c.acks[i];
    bool rejected = i + 1 == kRejected;
    EXPECT(a.seq() == static_cast<uint64_t>(i + 1) &&
               a.status() == (rejected ? pb::WriteAck::REJECTED : pb::WriteAck::APPLIED),
           "ack " + std::to_string(i) + ": " + AckSummary(a));
    if (rejected) {
      EXPECT(a.error_code() == "23502", AckSummary(a));
      continue;
    }
    EXPECT(a.write_checkpoint() > 0 && a.write_checkpoint() >= previous,
           "ack " + std::to_string(i) + ": " + AckSummary(a));
    previous = a.write_checkpoint();
  }
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE owner = 'u_pipeline'") ==
             std::to_string(kBatches - 1),
         "rows written");
  c.Close();
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_pipeline'");
}
