// End-to-end tests: a real gateway (started by run.sh), a real Postgres with
// the syncline extension, and libwebsockets clients that keep replicas and
// verify checksums. Prints one line per test and "N passed, M failed".
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "tests/e2e/expect.hpp"
#include "tests/e2e/ws_client.hpp"

namespace {

using syncline::testing::Client;
using syncline::testing::ClientContext;
using syncline::testing::Failure;
using syncline::testing::MakeHs256Token;
using syncline::testing::MakeNoneToken;
using syncline::testing::MakeRs256Token;
using syncline::testing::NowSeconds;
namespace pb = syncline::v1;

std::string Env(const char *name, const char *fallback = "") {
  const char *v = getenv(name);
  return v ? v : fallback;
}

struct Settings {
  std::string host = Env("SYNCLINE_GW_HOST", "127.0.0.1");
  int port = std::atoi(Env("SYNCLINE_GW_PORT", "8080").c_str());
  std::string secret = Env("SYNCLINE_JWT_SECRET", "e2e-secret");
  std::string cluster = Env("SYNCLINE_TEST_CLUSTER");
  pid_t gateway_pid = std::atoi(Env("SYNCLINE_GW_PID", "0").c_str());
  size_t send_queue_bytes = std::strtoull(Env("SYNCLINE_GW_SEND_QUEUE", "1048576").c_str(), 0, 10);
  int max_connections = std::atoi(Env("SYNCLINE_GW_MAX_CONNECTIONS", "40").c_str());
  int max_per_user = std::atoi(Env("SYNCLINE_GW_MAX_PER_USER", "8").c_str());
  // The second gateway: wss:// with a self-signed certificate, HS256 and a JWKS.
  int tls_port = std::atoi(Env("SYNCLINE_GW_TLS_PORT", "0").c_str());
  std::string jwks_kid = Env("SYNCLINE_JWKS_KID");
  std::string jwks_private_key = Env("SYNCLINE_JWKS_PRIVATE_KEY");    // PEM path, key in the JWKS
  std::string other_private_key = Env("SYNCLINE_OTHER_PRIVATE_KEY");  // PEM path, not in it
} g_settings;

std::string Token(const std::string &sub, int64_t exp_in = 3600) {
  int64_t now = time(nullptr);
  nlohmann::json claims = {{"sub", sub}, {"iat", now}, {"exp", now + exp_in}};
  return MakeHs256Token(g_settings.secret, claims.dump());
}

// ---------------------------------------------------------------- database

class Db {
 public:
  Db() { Reconnect(); }
  ~Db() { PQfinish(conn_); }
  void Reconnect() {
    if (conn_) PQfinish(conn_);
    conn_ = PQconnectdb("dbname=syncline");
  }
  // Runs SQL; returns the first column of the first row ("" if none).
  std::string Exec(const std::string &sql) {
    for (int attempt = 0; attempt < 2; attempt++) {
      PGresult *r = PQexec(conn_, sql.c_str());
      ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        std::string v = PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
        PQclear(r);
        return v;
      }
      std::string err = PQresultErrorMessage(r);
      PQclear(r);
      if (PQstatus(conn_) == CONNECTION_BAD && attempt == 0) {
        Reconnect();
        continue;
      }
      throw Failure("SQL failed: " + sql.substr(0, 200) + ": " + err);
    }
    return "";
  }
  // Makes committed ops visible now instead of waiting for the worker.
  void Flush() { Exec("SELECT syncline.flush()"); }

 private:
  PGconn *conn_ = nullptr;
};

// ---------------------------------------------------------------- http

// GET path from the gateway; returns the status code (0 on failure) and body.
int HttpGet(const std::string &path, std::string *body) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(g_settings.port);
  inet_pton(AF_INET, g_settings.host.c_str(), &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
    close(fd);
    return 0;
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) < 0) {
    close(fd);
    return 0;
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    resp.append(buf, n);
    size_t hdr_end = resp.find("\r\n\r\n");
    size_t cl = resp.find("content-length: ");
    if (cl == std::string::npos) cl = resp.find("Content-Length: ");
    if (hdr_end != std::string::npos && cl != std::string::npos && cl < hdr_end) {
      size_t len = std::strtoull(resp.c_str() + cl + 16, nullptr, 10);
      if (resp.size() >= hdr_end + 4 + len) break;
    }
  }
  close(fd);
  if (resp.size() < 12) return 0;
  size_t hdr_end = resp.find("\r\n\r\n");
  if (body) *body = hdr_end == std::string::npos ? "" : resp.substr(hdr_end + 4);
  return std::atoi(resp.c_str() + 9);
}

// Value of one metric line ("name value"), -1 if absent.
double Metric(const std::string &name) {
  std::string body;
  if (HttpGet("/metrics", &body) != 200) return -1;
  size_t pos = 0;
  while ((pos = body.find(name + " ", pos)) != std::string::npos) {
    if (pos == 0 || body[pos - 1] == '\n') return std::atof(body.c_str() + pos + name.size() + 1);
    pos += name.size();
  }
  return -1;
}

// ---------------------------------------------------------------- helpers

std::string UserBucket(const std::string &user) { return "e2e_user[\"" + user + "\"]"; }
const std::string kGlobal = "e2e_global[]";

size_t Objects(Client &c, const std::string &bucket) {
  auto it = c.buckets.find(bucket);
  return it == c.buckets.end() ? 0 : it->second.objects.size();
}

std::string Join(const std::vector<std::string> &v) {
  std::string out;
  for (const auto &s : v) out += (out.empty() ? "" : "; ") + s;
  return out;
}

std::string ErrorsOf(const Client &c) {
  std::string out = "close=" + std::to_string(c.close_code) + " reason=\"" + c.close_reason + "\"";
  for (const auto &e : c.errors) out += " error[" + std::to_string(e.code()) + "]=" + e.message();
  return out;
}

// Expects the client to be closed by the server with `code` and an Error first.
void ExpectClosedWith(ClientContext &ctx, Client &c, int code, pb::Error::Code error_code,
                      const std::string &reason_part = "") {
  (void)ctx;
  EXPECT(c.WaitClosed(10), "connection not closed; " + ErrorsOf(c));
  EXPECT(c.close_code == code, ErrorsOf(c));
  EXPECT(!c.errors.empty() && c.errors.back().code() == error_code, ErrorsOf(c));
  if (!reason_part.empty())
    EXPECT(c.errors.back().message().find(reason_part) != std::string::npos, ErrorsOf(c));
}

// Expects the client's buckets and their checksums to equal the extension's
// checkpoint for user `sub`.
void ExpectReplicaMatchesExtension(Client &c, Db &db, const std::string &sub) {
  auto cp = nlohmann::json::parse(
      db.Exec("SELECT syncline.checkpoint(jsonb_build_object('sub', '" + sub + "'))"));
  size_t compared = 0;
  for (const auto &b : cp["buckets"]) {
    std::string name = b["bucket"];
    EXPECT(c.buckets.count(name), "client lacks " + name);
    EXPECT(c.buckets[name].checksum == b["checksum"].get<uint64_t>(),
           name + " client " + std::to_string(c.buckets[name].checksum) + " extension " +
               b["checksum"].dump());
    compared++;
  }
  EXPECT(compared == c.buckets.size(), "bucket sets differ");
}

// ---------------------------------------------------------------- tests

void TestHealthAndMetrics(ClientContext &, Db &) {
  std::string body;
  EXPECT(HttpGet("/healthz", &body) == 200, body);
  EXPECT(body.find("ok") == 0, body);
  EXPECT(HttpGet("/metrics", &body) == 200, body);
  EXPECT(body.find("# TYPE syncline_connections gauge") != std::string::npos, body);
  EXPECT(body.find("syncline_checkpoint_seconds_bucket") != std::string::npos, body);
  EXPECT(HttpGet("/nope", &body) == 404, body);
}

void TestInitialSync(ClientContext &ctx, Db &db) {
  db.Exec(
      "INSERT INTO e2e_items SELECT 'init-' || g, 'u_init', 'item ' || g FROM "
      "generate_series(1, 2500) g");
  db.Flush();
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_init")), ErrorsOf(c));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  EXPECT(Objects(c, UserBucket("u_init")) == 2500,
         std::to_string(Objects(c, UserBucket("u_init"))));
  EXPECT(c.buckets.count(kGlobal) == 1, "no global bucket");
  size_t shared = std::stoul(db.Exec("SELECT count(*) FROM e2e_shared"));
  EXPECT(Objects(c, kGlobal) == shared, std::to_string(Objects(c, kGlobal)));
  ExpectReplicaMatchesExtension(c, db, "u_init");
  // Data is the row JSON as stored by the extension.
  auto data = nlohmann::json::parse(c.buckets[UserBucket("u_init")].objects.begin()->second);
  EXPECT(data.contains("title"), data.dump());
}

void TestResumeWithoutRedownload(ClientContext &ctx, Db &db) {
  db.Exec(
      "INSERT INTO e2e_items SELECT 'res-' || g, 'u_res', 'r' || g FROM generate_series(1, 100) g");
  db.Flush();
  Client a(&ctx, g_settings.host, g_settings.port);
  EXPECT(a.ConnectAndSync(Token("u_res")), ErrorsOf(a));
  EXPECT(Objects(a, UserBucket("u_res")) == 100, "");
  a.Close();
  EXPECT(a.WaitClosed(), "");
  // Unchanged: a resumed client downloads nothing.
  Client b(&ctx, g_settings.host, g_settings.port);
  b.buckets = a.buckets;
  b.position = a.position;
  EXPECT(b.ConnectAndSync(Token("u_res")), ErrorsOf(b));
  EXPECT(b.ops_received == 0, std::to_string(b.ops_received) + " ops re-downloaded");
  EXPECT(b.checksum_failures.empty(), Join(b.checksum_failures));
  b.Close();
  EXPECT(b.WaitClosed(), "");
  // Three new rows while offline: exactly three ops.
  db.Exec("INSERT INTO e2e_items VALUES ('res-new1','u_res','n1'),('res-new2','u_res','n2')");
  db.Exec("UPDATE e2e_items SET title = 'changed' WHERE id = 'res-1'");
  db.Flush();
  Client c(&ctx, g_settings.host, g_settings.port);
  c.buckets = a.buckets;
  c.position = a.position;
  EXPECT(c.ConnectAndSync(Token("u_res")), ErrorsOf(c));
  EXPECT(c.ops_received == 3, std::to_string(c.ops_received) + " ops, expected 3");
  EXPECT(Objects(c, UserBucket("u_res")) == 102, std::to_string(Objects(c, UserBucket("u_res"))));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  auto &objects = c.buckets[UserBucket("u_res")].objects;
  EXPECT(objects.count("e2e_items/res-1") &&
             objects["e2e_items/res-1"].find("changed") != std::string::npos,
         "update not applied; keys look like " + objects.begin()->first);
}

// A client that claims a position the database never reached (the database
// was restored from an older backup) is made to drop those buckets and gets
// them again from op 0, instead of staying stale for good.
void TestPositionBeyondCheckpointIsReset(ClientContext &ctx, Db &db) {
  db.Exec(
      "INSERT INTO e2e_items SELECT 'stale-' || g, 'u_stale', 's' || g FROM "
      "generate_series(1, 50) g");
  db.Flush();
  Client a(&ctx, g_settings.host, g_settings.port);
  EXPECT(a.ConnectAndSync(Token("u_stale")), ErrorsOf(a));
  a.Close();
  EXPECT(a.WaitClosed(), "");
  // What it holds after syncing against the newer database: an object the
  // restored one never had, and a position past the restored op log.
  Client b(&ctx, g_settings.host, g_settings.port);
  b.buckets = a.buckets;
  auto &held = b.buckets[UserBucket("u_stale")];
  held.objects["e2e_items/lost-in-restore"] = R"({"id": "lost-in-restore"})";
  held.checksum += 12345;
  b.position = a.position + 1000000;
  size_t resets = 0;
  b.on_op = [&](const pb::OplogEntry &op) {
    resets += op.op() == pb::OplogEntry::CLEAR && op.op_id() == 0;
  };
  EXPECT(b.ConnectAndSync(Token("u_stale")), ErrorsOf(b));
  EXPECT(b.checksum_failures.empty(), Join(b.checksum_failures));
  EXPECT(resets == a.buckets.size(),
         std::to_string(resets) + " resets for " + std::to_string(a.buckets.size()) + " buckets");
  EXPECT(Objects(b, UserBucket("u_stale")) == 50,
         std::to_string(Objects(b, UserBucket("u_stale"))));
  EXPECT(b.buckets[UserBucket("u_stale")].objects.count("e2e_items/lost-in-restore") == 0,
         "object the database does not have was kept");
  EXPECT(b.position <= a.position, std::to_string(b.position) + " > " + std::to_string(a.position));
  ExpectReplicaMatchesExtension(b, db, "u_stale");
  // From its corrected position it resumes normally: nothing is sent again.
  uint64_t ops_before = b.ops_received, completes_before = b.completes;
  b.SendSync(true);
  EXPECT(b.WaitComplete(completes_before), ErrorsOf(b));
  EXPECT(b.ops_received == ops_before,
         std::to_string(b.ops_received - ops_before) + " ops sent again");
}

void TestLiveUpdates(ClientContext &ctx, Db &db) {
  Client live(&ctx, g_settings.host, g_settings.port);
  Client other(&ctx, g_settings.host, g_settings.port);
  EXPECT(live.ConnectAndSync(Token("u_live")), ErrorsOf(live));
  EXPECT(other.ConnectAndSync(Token("u_other")), ErrorsOf(other));
  uint64_t before_other = other.ops_received;
  db.Exec("INSERT INTO e2e_items VALUES ('live-1', 'u_live', 'hello')");
  EXPECT(ctx.WaitFor([&] { return Objects(live, UserBucket("u_live")) == 1; }, 5),
         "live insert not received; " + ErrorsOf(live));
  db.Exec("UPDATE e2e_items SET title = 'updated' WHERE id = 'live-1'");
  EXPECT(ctx.WaitFor(
             [&] {
               auto &o = live.buckets[UserBucket("u_live")].objects;
               return o.size() == 1 && o.begin()->second.find("updated") != std::string::npos;
             },
             5),
         "live update not received");
  db.Exec("DELETE FROM e2e_items WHERE id = 'live-1'");
  EXPECT(ctx.WaitFor([&] { return Objects(live, UserBucket("u_live")) == 0; }, 5),
         "live delete not received");
  // Shared bucket: both get it.
  size_t shared_before = Objects(other, kGlobal);
  db.Exec("INSERT INTO e2e_shared VALUES ('news-live', 'for everyone')");
  EXPECT(ctx.WaitFor(
             [&] {
               return Objects(other, kGlobal) == shared_before + 1 &&
                      Objects(live, kGlobal) == shared_before + 1;
             },
             5),
         "shared insert not received by both");
  ctx.Pump(0.3);
  EXPECT(other.ops_received == before_other + 1,
         "other client got " + std::to_string(other.ops_received - before_other) +
             " ops, expected only the shared one");
  EXPECT(Objects(other, UserBucket("u_other")) == 0, "other user sees u_live's rows");
  EXPECT(live.checksum_failures.empty() && other.checksum_failures.empty(),
         Join(live.checksum_failures) + Join(other.checksum_failures));
  EXPECT(live.diffs >= 3, std::to_string(live.diffs));
}

// A live round visits the connections holding a changed bucket, not every connection: a write
// to one user's rows among many connected users is one visit. Those left alone still move with
// the rounds: the next shared change reaches every one of them from where they are, once.
void TestLiveRoundVisitsOnlyHolders(ClientContext &ctx, Db &db) {
  const int kClients = 30;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; i++) {
    clients.push_back(std::make_unique<Client>(&ctx, g_settings.host, g_settings.port));
    EXPECT(clients.back()->ConnectAndSync(Token("u_visit" + std::to_string(i))),
           ErrorsOf(*clients.back()));
  }
  Client &writer = *clients[7];
  double rounds0 = Metric("syncline_live_rounds_total");
  double visits0 = Metric("syncline_live_round_sessions_total");
  EXPECT(rounds0 >= 0 && visits0 >= 0, "live round metrics missing");
  for (int i = 0; i < 5; i++) {
    db.Exec("INSERT INTO e2e_items VALUES ('visit-" + std::to_string(i) + "', 'u_visit7', 'x')");
    EXPECT(ctx.WaitFor([&] { return Objects(writer, UserBucket("u_visit7")) == size_t(i) + 1; }, 5),
           "own-bucket change not received; " + ErrorsOf(writer));
  }
  ctx.Pump(0.2);
  double rounds = Metric("syncline_live_rounds_total") - rounds0;
  double visits = Metric("syncline_live_round_sessions_total") - visits0;
  fprintf(stderr, "    %d connections: %.0f live rounds looked at %.0f of them\n", kClients, rounds,
          visits);
  EXPECT(rounds >= 1 && visits <= rounds,
         std::to_string(visits) + " visits in " + std::to_string(rounds) + " rounds");
  // The others were not visited, yet they are at the last round's position: a shared change
  // reaches each of them with exactly its one op, and their checksums hold.
  std::vector<uint64_t> ops_before;
  size_t shared_before = Objects(*clients[0], kGlobal);
  for (auto &c : clients) ops_before.push_back(c->ops_received);
  db.Exec("INSERT INTO e2e_shared VALUES ('visit-news', 'for everyone')");
  EXPECT(ctx.WaitFor(
             [&] {
               for (auto &c : clients)
                 if (Objects(*c, kGlobal) != shared_before + 1) return false;
               return true;
             },
             5),
         "shared change not received by all");
  ctx.Pump(0.2);
  for (int i = 0; i < kClients; i++) {
    Client &c = *clients[i];
    EXPECT(c.ops_received == ops_before[i] + 1, "client " + std::to_string(i) + " got " +
                                                    std::to_string(c.ops_received - ops_before[i]) +
                                                    " ops");
    EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  }
  // And a resync from where each client is sends nothing again.
  Client &c = *clients[3];
  uint64_t ops = c.ops_received, completes = c.completes;
  c.SendSync(true);
  EXPECT(c.WaitComplete(completes), ErrorsOf(c));
  EXPECT(c.ops_received == ops, std::to_string(c.ops_received - ops) + " ops sent again");
  db.Exec("DELETE FROM e2e_items WHERE id LIKE 'visit-%'");
  db.Exec("DELETE FROM e2e_shared WHERE id = 'visit-news'");
}

// Live rounds, catch-ups and rechecks interleaved: parameter changes make every connection
// re-run its checkpoint while shared and own-bucket changes keep coming, so connections finish
// their jobs behind the live position and rejoin the rounds; each round changes two buckets of
// one connection (its visit must carry both). Every replica ends equal to what the extension
// says, with no checksum failure.
void TestLiveRoundsConvergeUnderRechecks(ClientContext &ctx, Db &db) {
  const int kClients = 12, kSteps = 40;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; i++) {
    db.Exec("INSERT INTO e2e_members VALUES ('u_cv" + std::to_string(i) + "', 'CV0')");
    clients.push_back(std::make_unique<Client>(&ctx, g_settings.host, g_settings.port));
    EXPECT(clients.back()->ConnectAndSync(Token("u_cv" + std::to_string(i))),
           ErrorsOf(*clients.back()));
  }
  for (int k = 0; k < kSteps; k++) {
    std::string n = std::to_string(k);
    // One transaction, so one round changes two buckets of the same connection.
    db.Exec("BEGIN; INSERT INTO e2e_todos VALUES ('cv-" + n +
            "', 'CV0', 't'); INSERT INTO e2e_items VALUES ('cv-" + n + "', 'u_cv" +
            std::to_string(k % kClients) + "', 'x'); COMMIT");
    if (k % 5 == 0) {
      // A parameter change: every connection is rechecked.
      std::string user = "u_cv" + std::to_string(k % kClients);
      db.Exec("DELETE FROM e2e_members WHERE user_id = '" + user + "' AND list_id = 'CV1'");
      if (k % 10 == 0) db.Exec("INSERT INTO e2e_members VALUES ('" + user + "', 'CV1')");
      db.Exec("INSERT INTO e2e_todos VALUES ('cv1-" + n + "', 'CV1', 't')");
    }
    ctx.Pump(0.02);
  }
  auto matches = [&](Client &c, const std::string &sub) {
    auto cp = nlohmann::json::parse(
        db.Exec("SELECT syncline.checkpoint(jsonb_build_object('sub', '" + sub + "'))"));
    if (cp["buckets"].size() != c.buckets.size()) return false;
    for (const auto &b : cp["buckets"]) {
      auto it = c.buckets.find(b["bucket"].get<std::string>());
      if (it == c.buckets.end() || it->second.checksum != b["checksum"].get<uint64_t>())
        return false;
    }
    return true;
  };
  for (int i = 0; i < kClients; i++) {
    Client &c = *clients[i];
    std::string sub = "u_cv" + std::to_string(i);
    ctx.WaitFor([&] { return matches(c, sub); }, 20);
    // Enough to tell a client never told of a change from one told wrongly, with the kept
    // gateway log (tests/e2e/run.sh) of conn's sync and live-round decisions.
    EXPECT(c.checksum_failures.empty(), sub + " position " + std::to_string(c.position) +
                                            " failed checksums: " + Join(c.checksum_failures));
    ExpectReplicaMatchesExtension(c, db, sub);
    EXPECT(Objects(c, "e2e_list[\"CV0\"]") == size_t(kSteps),
           sub + " holds " + std::to_string(Objects(c, "e2e_list[\"CV0\"]")) + " todos");
    EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  }
  db.Exec("DELETE FROM e2e_members WHERE user_id LIKE 'u_cv%'");
  db.Exec("DELETE FROM e2e_todos WHERE id LIKE 'cv%'");
  db.Exec("DELETE FROM e2e_items WHERE id LIKE 'cv-%'");
}

void TestBucketGainedAndLost(ClientContext &ctx, Db &db) {
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_lists")), ErrorsOf(c));
  const std::string list_bucket = "e2e_list[\"L1\"]";
  EXPECT(c.buckets.count(list_bucket) == 0, "already has the list");
  db.Exec("INSERT INTO e2e_todos VALUES ('t1','L1','a'),('t2','L1','b'),('t3','L1','c')");
  db.Exec("INSERT INTO e2e_members VALUES ('u_lists', 'L1')");
  EXPECT(
      ctx.WaitFor([&] { return Objects(c, list_bucket) == 3; }, 8),
      "bucket not gained; buckets held: " + std::to_string(c.buckets.size()) + " " + ErrorsOf(c));
  db.Exec("INSERT INTO e2e_todos VALUES ('t4','L1','d')");
  EXPECT(ctx.WaitFor([&] { return Objects(c, list_bucket) == 4; }, 5), "gained bucket not live");
  db.Exec("DELETE FROM e2e_members WHERE user_id = 'u_lists'");
  EXPECT(ctx.WaitFor([&] { return c.buckets.count(list_bucket) == 0; }, 8), "bucket not lost");
  bool told = false;
  for (const auto &r : c.removed_seen) told |= r == list_bucket;
  EXPECT(told, "removal not announced in a diff");
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
}

// Sends one WriteBatch and waits for its WriteAck.
pb::WriteAck Write(ClientContext &ctx, Client &c, uint64_t seq,
                   std::vector<std::tuple<pb::WriteOp::Kind, std::string, std::string>> ops,
                   const std::string &type = "e2e_items") {
  pb::ClientMessage m;
  m.set_request_id(1000 + seq);
  auto *b = m.mutable_write_batch();
  b->set_seq(seq);
  for (auto &[kind, id, data] : ops) {
    auto *op = b->add_ops();
    op->set_op(kind);
    op->set_type(type);
    op->set_id(id);
    op->set_data(data);
  }
  size_t before = c.acks.size();
  c.Send(m);
  if (!ctx.WaitFor([&] { return c.acks.size() > before || c.closed; }, 10))
    throw Failure("no WriteAck for seq " + std::to_string(seq) + "; " + ErrorsOf(c));
  if (c.acks.size() <= before) throw Failure("closed before WriteAck: " + ErrorsOf(c));
  return c.acks.back();
}

std::string AckText(const pb::WriteAck &a) {
  return pb::WriteAck::Status_Name(a.status()) + " code=" + a.error_code() +
         " message=" + a.error_message() + " wc=" + std::to_string(a.write_checkpoint());
}

// Numbers in a batch's data arrive as the client wrote them: not read through a double on
// the way (gateway and apply_writes), which stored 12345678901234567.891 as
// 1.2345678901234568e+16 in this text column and 1.10 as 1.1.
void TestWritesKeepExactNumbers(ClientContext &ctx, Db &db) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.client_id = "e2e-exact";
  c.keep_objects = false;
  EXPECT(c.ConnectAndSync(Token("u_exact")), ErrorsOf(c));
  auto a =
      Write(ctx, c, 1,
            {{pb::WriteOp::PUT, "ex-1", R"({"owner": "u_exact", "title": 12345678901234567.891})"},
             {pb::WriteOp::PUT, "ex-2", R"({"owner": "u_exact", "title": 1.10})"},
             {pb::WriteOp::PUT, "ex-3",
              R"({"owner": "u_exact", "title": 123456789012345678901234567890})"}});
  EXPECT(a.status() == pb::WriteAck::APPLIED, AckText(a));
  std::string titles =
      db.Exec("SELECT string_agg(title, ' ' ORDER BY id) FROM e2e_items WHERE owner = 'u_exact'");
  EXPECT(titles == "12345678901234567.891 1.10 123456789012345678901234567890", titles);
  // A number past a double's range is refused by the gateway's JSON parser: the batch is
  // rejected under its seq (recorded, the next seq goes on), never retried forever.
  auto big =
      Write(ctx, c, 2, {{pb::WriteOp::PUT, "ex-4", R"({"owner": "u_exact", "title": 1e400})"}});
  EXPECT(big.status() == pb::WriteAck::REJECTED && big.error_code() == "22023", AckText(big));
  auto next =
      Write(ctx, c, 3, {{pb::WriteOp::PUT, "ex-5", R"({"owner": "u_exact", "title": 2.50})"}});
  EXPECT(next.status() == pb::WriteAck::APPLIED, AckText(next));
  c.Close();
  db.Exec("DELETE FROM e2e_items WHERE owner = 'u_exact'");
}

void TestWrites(ClientContext &ctx, Db &db) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.client_id = "e2e-writer";
  EXPECT(c.ConnectAndSync(Token("u_writer")), ErrorsOf(c));
  // Applied, with the first checkpoint that includes it; the row comes back by sync.
  auto a = Write(ctx, c, 1,
                 {{pb::WriteOp::PUT, "wr-1", R"({"owner": "u_writer", "title": "from client"})"},
                  {pb::WriteOp::PUT, "wr-2", R"({"owner": "u_writer", "title": "second"})"}});
  EXPECT(a.status() == pb::WriteAck::APPLIED && a.write_checkpoint() > 0, AckText(a));
  EXPECT(ctx.WaitFor([&] { return Objects(c, UserBucket("u_writer")) == 2; }, 5),
         "written rows did not sync back");
  EXPECT(ctx.WaitFor([&] { return c.position >= a.write_checkpoint(); }, 5),
         "checkpoint never reached the write checkpoint");
  // A retried seq is answered and not applied twice.
  auto again = Write(ctx, c, 1, {{pb::WriteOp::PUT, "wr-3", R"({"owner": "u_writer"})"}});
  EXPECT(again.status() == pb::WriteAck::APPLIED, AckText(again));
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE owner = 'u_writer'") == "2",
         "retried batch applied twice");
  // PATCH and DELETE.
  auto p = Write(
      ctx, c, 2,
      {{pb::WriteOp::PATCH, "wr-1", R"({"title": "patched"})"}, {pb::WriteOp::DELETE, "wr-2", ""}});
  EXPECT(p.status() == pb::WriteAck::APPLIED, AckText(p));
  EXPECT(ctx.WaitFor(
             [&] {
               auto &o = c.buckets[UserBucket("u_writer")].objects;
               return o.size() == 1 && o.begin()->second.find("patched") != std::string::npos;
             },
             5),
         "patch/delete did not sync back");
  // Permanent rejection (NOT NULL), with the SQLSTATE; nothing of the batch applied.
  auto r = Write(ctx, c, 3,
                 {{pb::WriteOp::PUT, "wr-4", R"({"owner": "u_writer"})"},
                  {pb::WriteOp::PUT, "wr-5", R"({"title": "no owner"})"}});
  EXPECT(r.status() == pb::WriteAck::REJECTED && r.error_code() == "23502", AckText(r));
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE id = 'wr-4'") == "0", "half applied");
  // Data that is not JSON is refused by the database under its seq.
  auto j = Write(ctx, c, 4, {{pb::WriteOp::PUT, "wr-6", "{not json"}});
  EXPECT(j.status() == pb::WriteAck::REJECTED, AckText(j));
  // What PostgreSQL text cannot hold (NUL, escaped in the JSON or raw, in data, key or type),
  // and data nested 100,000 levels deep (a 200 KB message that would crash a recursive copy),
  // is refused under its seq as well, not retried forever: the client's next batch goes on.
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  struct Refused {
    std::string type, id, data, code, says;
  };
  std::vector<Refused> refused_cases = {
      {"e2e_items", "wr-n1", R"({"owner": "u_writer", "title": "a\u0000b"})", "22P05", "NUL"},
      {"e2e_items", "wr-n2", std::string("{\"owner\": \"u_writer\", \"title\": \"a\0b\"}", 37),
       "22P05", "NUL"},
      {"e2e_items", std::string("wr-\0n3", 6), R"({"owner": "u_writer"})", "22P05", "NUL"},
      {std::string("e2e_items\0", 10), "wr-n4", R"({"owner": "u_writer"})", "22P05", "NUL"},
      {"e2e_items", "wr-n5", R"({"owner": "u_writer", "a\u0000": 1})", "22P05", "NUL"},
      {"e2e_items", "wr-n6", R"({"owner": "u_writer", "title": )" + deep + "}", "54001",
       "levels deep"},
      {"e2e_items", "[" + deep + "]", R"({"owner": "u_writer"})", "54001", "levels deep"},
  };
  uint64_t seq = 5;
  for (const auto &rc : refused_cases) {
    auto n = Write(ctx, c, seq, {{pb::WriteOp::PUT, rc.id, rc.data}}, rc.type);
    EXPECT(n.seq() == seq && n.status() == pb::WriteAck::REJECTED && n.error_code() == rc.code &&
               n.error_message().find(rc.says) != std::string::npos,
           "seq " + std::to_string(seq) + ": " + AckText(n));
    seq++;
  }
  // A seq past 2^62 (apply_writes' int64 would fail on it): refused at once, nothing recorded.
  auto huge =
      Write(ctx, c, uint64_t{1} << 63, {{pb::WriteOp::PUT, "wr-n8", R"({"owner": "u_writer"})"}});
  EXPECT(huge.status() == pb::WriteAck::REJECTED && huge.error_code() == "22003", AckText(huge));
  auto after_nul = Write(ctx, c, seq, {{pb::WriteOp::PUT, "wr-n9", R"({"owner": "u_writer"})"}});
  EXPECT(after_nul.status() == pb::WriteAck::APPLIED, AckText(after_nul));
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE id LIKE 'wr-n%'") == "1",
         "a batch with NUL was applied");
  // A gap in seqs: retry later (the client must upload the next seq first).
  auto o = Write(ctx, c, seq + 2, {{pb::WriteOp::PUT, "wr-7", R"({"owner": "u_writer"})"}});
  EXPECT(o.status() == pb::WriteAck::RETRY && o.error_code() == "out_of_order", AckText(o));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  // A new connection of the same installation learns its write checkpoint.
  Client later(&ctx, g_settings.host, g_settings.port);
  later.Connect();
  EXPECT(later.WaitEstablished(), "");
  std::string t = Token("u_writer");
  later.SendHello(&t, 1, "e2e-writer");
  later.SendSync(false);
  EXPECT(later.WaitComplete(0), ErrorsOf(later));
  EXPECT(later.write_checkpoint >= p.write_checkpoint() && p.write_checkpoint() > 0,
         std::to_string(later.write_checkpoint) + " < " + std::to_string(p.write_checkpoint()));
}

// The same batch (client_id, seq) sent on two connections at once (a client that reconnected
// and uploaded again before the first ack): both connections get an APPLIED ack with the same
// write checkpoint, and the batch is applied once.
void TestSameBatchOnTwoConnections(ClientContext &ctx, Db &db) {
  Client a(&ctx, g_settings.host, g_settings.port);
  Client b(&ctx, g_settings.host, g_settings.port);
  a.client_id = b.client_id = "e2e-twice";
  EXPECT(a.ConnectAndSync(Token("u_twice")), ErrorsOf(a));
  EXPECT(b.ConnectAndSync(Token("u_twice")), ErrorsOf(b));
  for (uint64_t seq = 1; seq <= 3; seq++) {
    pb::ClientMessage m;
    m.set_request_id(500 + seq);
    auto *batch = m.mutable_write_batch();
    batch->set_seq(seq);
    auto *op = batch->add_ops();
    op->set_op(pb::WriteOp::PUT);
    op->set_type("e2e_items");
    op->set_id("twice-" + std::to_string(seq));
    op->set_data(R"({"owner": "u_twice", "title": "sent twice"})");
    size_t before_a = a.acks.size(), before_b = b.acks.size();
    // The flusher publishes the batch (NOTIFY with its write checkpoint) only after both
    // apply_writes replies are in, so both connections are waiting for the same key.
    db.Exec("BEGIN");
    db.Exec("LOCK TABLE syncline_internal.flushes IN SHARE ROW EXCLUSIVE MODE");
    a.Send(m);
    b.Send(m);
    ctx.Pump(0.3);
    db.Exec("COMMIT");
    EXPECT(ctx.WaitFor([&] { return a.acks.size() > before_a && b.acks.size() > before_b; }, 10),
           "seq " + std::to_string(seq) + ": acks a=" + std::to_string(a.acks.size() - before_a) +
               " b=" + std::to_string(b.acks.size() - before_b));
    const pb::WriteAck &x = a.acks.back(), &y = b.acks.back();
    EXPECT(x.status() == pb::WriteAck::APPLIED && y.status() == pb::WriteAck::APPLIED,
           AckText(x) + " / " + AckText(y));
    EXPECT(x.write_checkpoint() > 0 && x.write_checkpoint() == y.write_checkpoint(),
           AckText(x) + " / " + AckText(y));
  }
  EXPECT(db.Exec("SELECT count(*) FROM e2e_items WHERE owner = 'u_twice'") == "3",
         "batches applied more than once");
}

// A burst of writes to a parameter table (e2e_members, read by e2e_list's parameter query):
// every connected client re-runs its checkpoint, but through one queue that runs a few at a
// time and merges the requests of a client already waiting, counted at /metrics.
void TestParameterChangeRechecksAreCoalesced(ClientContext &ctx, Db &db) {
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 1; i <= 3; i++) {
    clients.push_back(std::make_unique<Client>(&ctx, g_settings.host, g_settings.port));
    EXPECT(clients.back()->ConnectAndSync(Token("u_rc" + std::to_string(i))),
           ErrorsOf(*clients.back()));
  }
  double notes0 = Metric("syncline_recheck_notifications_total");
  double rechecks0 = Metric("syncline_rechecks_total");
  EXPECT(notes0 >= 0 && rechecks0 >= 0 && Metric("syncline_rechecks_coalesced_total") >= 0,
         "recheck metrics missing");
  const int kWrites = 20;
  for (int i = 1; i <= kWrites; i++)
    db.Exec("INSERT INTO e2e_members VALUES ('u_rc1', 'RC" + std::to_string(i) + "')");
  Client &first = *clients[0];
  std::string last = "e2e_list[\"RC" + std::to_string(kWrites) + "\"]";
  EXPECT(ctx.WaitFor([&] { return first.buckets.count(last) == 1; }, 10),
         "bucket not gained; " + ErrorsOf(first));
  EXPECT(ctx.WaitFor([&] { return Metric("syncline_recheck_queue") == 0; }, 10),
         "recheck queue did not drain");
  ctx.Pump(0.5);
  double notes = Metric("syncline_recheck_notifications_total") - notes0;
  double rechecks = Metric("syncline_rechecks_total") - rechecks0;
  double connections = Metric("syncline_connections");
  fprintf(stderr, "    %d parameter writes: %.0f notifications, %.0f rechecks, %.0f connections\n",
          kWrites, notes, rechecks, connections);
  EXPECT(notes >= 1, "no recheck notification counted");
  EXPECT(rechecks >= 3, "the clients were not rechecked: " + std::to_string(rechecks));
  // A connection is rechecked at once and then at most once a second, whatever the number of
  // notifications: a burst of well under a second costs about two rechecks per connection.
  EXPECT(rechecks <= 3 * connections, std::to_string(rechecks) + " rechecks for " +
                                          std::to_string(notes) + " notifications and " +
                                          std::to_string(connections) + " connections");
  for (auto &c : clients) EXPECT(c->checksum_failures.empty(), Join(c->checksum_failures));
  db.Exec("DELETE FROM e2e_members WHERE user_id = 'u_rc1'");
}

void TestMalformedAndUnknownKeepConnection(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_bad")), ErrorsOf(c));
  c.SendRaw(std::string("\x52\x7f\x01", 3));          // truncated Hello
  c.SendRaw(std::string("\x08\x05\x98\x06\x01", 5));  // unknown kind (field 99)
  c.SendRaw("");                                      // empty message
  c.SendPing(77);
  EXPECT(ctx.WaitFor([&] { return c.keepalives == 1; }, 5), ErrorsOf(c));
  EXPECT(!c.closed, ErrorsOf(c));
  EXPECT(c.errors.size() == 3, ErrorsOf(c));
  EXPECT(c.errors[0].code() == pb::Error::BAD_MESSAGE &&
             c.errors[0].message().find("not a valid") != std::string::npos,
         ErrorsOf(c));
  EXPECT(c.errors[1].message().find("not known") != std::string::npos, ErrorsOf(c));
}

void TestMessageBeforeHello(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.Connect();
  EXPECT(c.WaitEstablished(), "");
  c.SendSync(false);
  ExpectClosedWith(ctx, c, 4000, pb::Error::HELLO_REQUIRED, "Hello");
  Client d(&ctx, g_settings.host, g_settings.port);
  d.Connect();
  EXPECT(d.WaitEstablished(), "");
  d.SendRaw("\xff\xff\xff garbage");
  ExpectClosedWith(ctx, d, 4000, pb::Error::HELLO_REQUIRED);
}

void TestOversizedFrame(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_big_frame")), ErrorsOf(c));
  c.SendRaw(std::string(2 << 20, 'x'));
  ExpectClosedWith(ctx, c, 1009, pb::Error::MESSAGE_TOO_BIG, "exceeds");
}

void TestTextFrame(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.Connect();
  EXPECT(c.WaitEstablished(), "");
  c.SendRaw("{\"hello\": 1}", /*text=*/true);
  ExpectClosedWith(ctx, c, 1003, pb::Error::BAD_MESSAGE, "text frames");
}

void TestBadTokens(ClientContext &ctx, Db &) {
  int64_t now = time(nullptr);
  struct Case {
    const char *name;
    std::string token;
    bool send;
  };
  std::vector<Case> cases = {
      {"missing", "", false},
      {"forged",
       MakeHs256Token("wrong-secret", R"({"sub":"u1","exp":)" + std::to_string(now + 600) + "}"),
       true},
      {"expired", Token("u1", -3600), true},
      {"alg none", MakeNoneToken(R"({"sub":"u1","exp":)" + std::to_string(now + 600) + "}"), true},
      {"garbage", "not.a.jwt", true},
  };
  for (const auto &tc : cases) {
    Client c(&ctx, g_settings.host, g_settings.port);
    c.Connect();
    EXPECT(c.WaitEstablished(), tc.name);
    c.SendHello(tc.send ? &tc.token : nullptr);
    c.SendSync(false);
    EXPECT(c.WaitClosed(5), std::string(tc.name) + ": not closed");
    EXPECT(c.close_code == 4001, std::string(tc.name) + ": " + ErrorsOf(c));
    EXPECT(!c.errors.empty() && c.errors[0].code() == pb::Error::UNAUTHENTICATED,
           std::string(tc.name) + ": " + ErrorsOf(c));
    EXPECT(c.completes == 0, std::string(tc.name) + ": got data");
    fprintf(stderr, "    %-9s -> %d \"%s\"\n", tc.name, c.close_code, c.close_reason.c_str());
  }
  // Same through the Authorization header: refused before any Hello.
  Client h(&ctx, g_settings.host, g_settings.port);
  h.Connect(
      MakeHs256Token("wrong-secret", R"({"sub":"u1","exp":)" + std::to_string(now + 600) + "}"));
  EXPECT(h.WaitClosed(5), "forged header token not refused");
  EXPECT(h.close_code == 4001, ErrorsOf(h));
}

void TestHeaderToken(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.Connect(Token("u_header"));
  EXPECT(c.WaitEstablished(), ErrorsOf(c));
  c.SendHello(nullptr);
  c.SendSync(false);
  EXPECT(c.WaitComplete(0), ErrorsOf(c));
}

// Syncs over wss:// from the TLS gateway; a plain ws:// upgrade on its port fails.
void TestTlsSync(ClientContext &ctx, Db &db) {
  EXPECT(g_settings.tls_port > 0, "SYNCLINE_GW_TLS_PORT not set");
  db.Exec(
      "INSERT INTO e2e_items SELECT 'tls-' || g, 'u_tls', 't' || g FROM generate_series(1, 20) g");
  db.Flush();
  Client c(&ctx, g_settings.host, g_settings.tls_port);
  c.tls = true;
  EXPECT(c.ConnectAndSync(Token("u_tls")), ErrorsOf(c));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  EXPECT(Objects(c, UserBucket("u_tls")) == 20, std::to_string(Objects(c, UserBucket("u_tls"))));
  ExpectReplicaMatchesExtension(c, db, "u_tls");
  db.Exec("INSERT INTO e2e_items VALUES ('tls-live', 'u_tls', 'over wss')");
  EXPECT(ctx.WaitFor([&] { return Objects(c, UserBucket("u_tls")) == 21; }, 5),
         "live insert not received over wss; " + ErrorsOf(c));
  // The server fails the TLS handshake on the plain upgrade request and closes.
  Client plain(&ctx, g_settings.host, g_settings.tls_port);
  double start = NowSeconds();
  plain.Connect();
  EXPECT(!plain.WaitEstablished(10), "plain ws:// upgrade accepted on the TLS port");
  fprintf(stderr, "    plain ws:// on the TLS port: %s after %.2f s\n",
          plain.closed ? "closed" : "still pending", NowSeconds() - start);
}

std::string ReadFile(const std::string &path) {
  FILE *f = fopen(path.c_str(), "rb");
  if (f == nullptr) throw Failure("cannot read " + path);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

// RS256 tokens checked against the TLS gateway's --jwks file: the key with the
// JWKS kid is accepted; an unknown kid and a key not in the JWKS are refused.
void TestRs256TokensFromJwks(ClientContext &ctx, Db &) {
  EXPECT(g_settings.tls_port > 0 && !g_settings.jwks_kid.empty() &&
             !g_settings.jwks_private_key.empty() && !g_settings.other_private_key.empty(),
         "SYNCLINE_GW_TLS_PORT / SYNCLINE_JWKS_KID / SYNCLINE_JWKS_PRIVATE_KEY / "
         "SYNCLINE_OTHER_PRIVATE_KEY not set");
  std::string key = ReadFile(g_settings.jwks_private_key);
  std::string other_key = ReadFile(g_settings.other_private_key);
  int64_t now = time(nullptr);
  std::string claims = nlohmann::json{{"sub", "u_rs256"}, {"iat", now}, {"exp", now + 600}}.dump();
  Client c(&ctx, g_settings.host, g_settings.tls_port);
  c.tls = true;
  EXPECT(c.ConnectAndSync(MakeRs256Token(key, claims, g_settings.jwks_kid)), ErrorsOf(c));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  EXPECT(c.buckets.count(UserBucket("u_rs256")) == 1, "no bucket for the token's sub");
  struct Case {
    const char *name;
    std::string token;
    const char *reason;
  };
  std::vector<Case> cases = {
      {"unknown kid", MakeRs256Token(key, claims, "not-in-the-jwks"), "unknown key id"},
      {"other key", MakeRs256Token(other_key, claims, g_settings.jwks_kid),
       "signature does not verify"},
  };
  for (const auto &tc : cases) {
    Client r(&ctx, g_settings.host, g_settings.tls_port);
    r.tls = true;
    r.Connect();
    EXPECT(r.WaitEstablished(), std::string(tc.name) + ": " + ErrorsOf(r));
    r.SendHello(&tc.token);
    r.SendSync(false);
    ExpectClosedWith(ctx, r, 4001, pb::Error::UNAUTHENTICATED, tc.reason);
    EXPECT(r.completes == 0, std::string(tc.name) + ": got data");
  }
}

void TestWrongVersionAndSubprotocol(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.Connect();
  EXPECT(c.WaitEstablished(), "");
  std::string t = Token("u1");
  c.SendHello(&t, 2);
  ExpectClosedWith(ctx, c, 4000, pb::Error::UNSUPPORTED_VERSION, "version");
  Client d(&ctx, g_settings.host, g_settings.port);
  d.Connect("", "other");  // a subprotocol the gateway does not speak
  EXPECT(d.WaitClosed(5), "unknown subprotocol accepted");
  EXPECT(!d.established || d.close_code != 0, ErrorsOf(d));
}

// Opens a TCP connection to host:port; returns 0 when it was accepted, else errno.
int TcpConnectError(const std::string &host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  int rc = connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

// --listen 127.0.0.1:PORT binds that address only: every 127/8 address is local on Linux, so
// a gateway bound to *:PORT would also answer on 127.0.0.2.
void TestListenBindsExactAddress(ClientContext &, Db &) {
  EXPECT(g_settings.host == "127.0.0.1", "the suite's gateway listens on " + g_settings.host);
  EXPECT(TcpConnectError("127.0.0.1", g_settings.port) == 0, "127.0.0.1 refused");
  int err = TcpConnectError("127.0.0.2", g_settings.port);
  EXPECT(err == ECONNREFUSED, std::string("127.0.0.2: ") + (err ? strerror(err) : "accepted"));
}

// Sends raw bytes over TCP and returns the first line of the answer ("" if none).
std::string RawHttpStatusLine(const std::string &request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(g_settings.port);
  inet_pton(AF_INET, g_settings.host.c_str(), &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string resp;
  if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 &&
      write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n;
    while (resp.find("\r\n") == std::string::npos && (n = read(fd, buf, sizeof buf)) > 0)
      resp.append(buf, n);
  }
  close(fd);
  return resp.substr(0, resp.find("\r\n"));
}

// A websocket upgrade that does not offer syncline.v1 is refused with HTTP 400 (no websocket,
// so no close code); one that offers it among others is accepted.
void TestUpgradeWithoutSubprotocolIs400(ClientContext &, Db &) {
  auto upgrade = [](const std::string &protocol_header) {
    return "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
           protocol_header + "\r\n";
  };
  // "HTTP/1.x NNN ...": the status code.
  auto status = [](const std::string &line) { return line.size() >= 12 ? line.substr(9, 3) : ""; };
  std::string none = RawHttpStatusLine(upgrade(""));
  EXPECT(status(none) == "400", "no subprotocol: " + none);
  std::string other = RawHttpStatusLine(upgrade("Sec-WebSocket-Protocol: chat\r\n"));
  EXPECT(status(other) == "400", "other subprotocol: " + other);
  std::string listed = RawHttpStatusLine(upgrade("Sec-WebSocket-Protocol: chat, syncline.v1\r\n"));
  EXPECT(status(listed) == "101", "syncline.v1 offered: " + listed);
}

// A later Hello must keep the connection's client_id: acks and write checkpoints are per
// client_id, so switching mid-connection is a protocol error (close 4000).
void TestHelloCannotChangeClientId(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  c.client_id = "cid-first";
  EXPECT(c.ConnectAndSync(Token("u_cid")), ErrorsOf(c));
  std::string t = Token("u_cid");
  c.SendHello(&t, 1, "cid-first");  // a refresh naming the same id is fine
  c.SendPing(5);
  EXPECT(ctx.WaitFor([&] { return c.keepalives == 1; }, 5), ErrorsOf(c));
  c.SendHello(&t, 1, "cid-second");
  ExpectClosedWith(ctx, c, 4000, pb::Error::BAD_MESSAGE, "client_id");
  // A client_id with U+0000 would reach the database cut at it (libpq's text parameters are
  // C strings), as another installation's id: refused before anything is written.
  Client n(&ctx, g_settings.host, g_settings.port);
  n.Connect();
  EXPECT(n.WaitEstablished(), ErrorsOf(n));
  n.SendHello(&t, 1, std::string("cid-first\0other", 15));
  ExpectClosedWith(ctx, n, 4000, pb::Error::BAD_MESSAGE, "U+0000");
  // Nor one longer than apply_writes takes: each of its writes would fail, not be recorded.
  Client l(&ctx, g_settings.host, g_settings.port);
  l.Connect();
  EXPECT(l.WaitEstablished(), ErrorsOf(l));
  l.SendHello(&t, 1, std::string(201, 'c'));
  ExpectClosedWith(ctx, l, 4000, pb::Error::BAD_MESSAGE, "at most 200 bytes");
  Client ok(&ctx, g_settings.host, g_settings.port);
  ok.client_id = std::string(200, 'c');
  EXPECT(ok.ConnectAndSync(Token("u_cid")), ErrorsOf(ok));
}

void TestTokenExpiryAndRefresh(ClientContext &ctx, Db &) {
  // Expires in 2 s (the gateway's leeway lets it in): TokenExpiring, then closed.
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_exp", 2)), ErrorsOf(c));
  EXPECT(ctx.WaitFor([&] { return c.token_expiring > 0; }, 3), "no TokenExpiring");
  ExpectClosedWith(ctx, c, 4002, pb::Error::UNAUTHENTICATED, "expired");
  // Refreshed in time: stays connected.
  Client r(&ctx, g_settings.host, g_settings.port);
  EXPECT(r.ConnectAndSync(Token("u_exp", 4)), ErrorsOf(r));
  EXPECT(ctx.WaitFor([&] { return r.token_expiring > 0; }, 5), "no TokenExpiring");
  std::string fresh = Token("u_exp", 3600);
  r.SendHello(&fresh);
  ctx.Pump(5);
  EXPECT(!r.closed, "closed despite refresh: " + ErrorsOf(r));
  // A refresh for another subject is refused.
  std::string other = Token("someone_else", 3600);
  r.SendHello(&other);
  EXPECT(r.WaitClosed(5) && r.close_code == 4001, ErrorsOf(r));
}

// --jwt-leeway is one rule: a token is valid until exp + leeway, when it is verified and while
// a session holds it. The suite's gateway runs with --jwt-leeway 5: a token that expired 2 s
// ago is accepted and the connection stays until exp + 5 s, then closes 4002.
void TestLeewayAppliesToLiveSessions(ClientContext &ctx, Db &) {
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_leeway", -2)), ErrorsOf(c));
  ctx.Pump(1.5);
  EXPECT(!c.closed, "closed right after being accepted: " + ErrorsOf(c));
  ExpectClosedWith(ctx, c, 4002, pb::Error::UNAUTHENTICATED, "expired");
}

void TestSlowReaderIsPausedThenResumes(ClientContext &ctx, Db &db) {
  db.Exec(
      "INSERT INTO e2e_items SELECT 'big-' || g, 'u_bigsync', repeat('x', 300) || g FROM "
      "generate_series(1, 30000) g");
  db.Flush();
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.StartSyncNotReading(Token("u_bigsync")), "");
  ctx.Pump(3);
  double queued = Metric("syncline_send_queue_bytes");
  double ops_sent = Metric("syncline_ops_sent_total");
  fprintf(stderr, "    paused: gateway queue %.0f bytes\n", queued);
  EXPECT(queued >= 0 && queued < g_settings.send_queue_bytes * 1.5,
         "queue grew to " + std::to_string(queued));
  EXPECT(c.completes == 0 && !c.closed, ErrorsOf(c));
  ctx.Pump(1);
  EXPECT(Metric("syncline_ops_sent_total") == ops_sent, "gateway kept reading for a paused client");
  c.SetReading(true);
  EXPECT(c.WaitComplete(0, 60), ErrorsOf(c));
  EXPECT(Objects(c, UserBucket("u_bigsync")) == 30000,
         std::to_string(Objects(c, UserBucket("u_bigsync"))));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
}

// A sync that ends behind the live position (a live round published a change of its bucket
// while it ran) catches up from where the sync ended, not from the live position: the client
// gets the op the round published, with checksums that match. The sync is held behind its
// checkpoint by a client that does not read.
void TestSyncEndingBehindARoundCatchesUp(ClientContext &ctx, Db &db) {
  db.Exec(
      "INSERT INTO e2e_items SELECT 'lag-' || g, 'u_lagjob', repeat('x', 300) || g FROM "
      "generate_series(1, 30000) g");
  db.Flush();
  Client other(&ctx, g_settings.host, g_settings.port);
  EXPECT(other.ConnectAndSync(Token("u_lagother")), ErrorsOf(other));
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.StartSyncNotReading(Token("u_lagjob")), "");
  ctx.Pump(1.5);  // its checkpoint is taken; its pages wait for it to read
  EXPECT(c.completes == 0, "the sync was not held: " + ErrorsOf(c));
  // One transaction, so the round that publishes it visits `other` and changes c's bucket.
  db.Exec(
      "BEGIN; INSERT INTO e2e_items VALUES ('lag-new', 'u_lagjob', 'after the checkpoint'); "
      "INSERT INTO e2e_items VALUES ('lag-other', 'u_lagother', 'x'); COMMIT");
  EXPECT(ctx.WaitFor([&] { return Objects(other, UserBucket("u_lagother")) == 1; }, 10),
         "the live round did not run: " + ErrorsOf(other));
  c.SetReading(true);
  EXPECT(c.WaitComplete(0, 60), ErrorsOf(c));
  EXPECT(ctx.WaitFor([&] { return Objects(c, UserBucket("u_lagjob")) == 30001; }, 10),
         std::to_string(Objects(c, UserBucket("u_lagjob"))) + " objects; " +
             Join(c.checksum_failures));
  EXPECT(c.checksum_failures.empty(), Join(c.checksum_failures));
  ExpectReplicaMatchesExtension(c, db, "u_lagjob");
  db.Exec("DELETE FROM e2e_items WHERE owner IN ('u_lagjob', 'u_lagother')");
}

// Live changes go out on the fan-out path (written straight to the socket
// during the round). A client that stops reading fills its socket: the next
// change is taken only in part, lws keeps the rest, later changes queue behind
// it. When the client reads again it gets every change, in order, with
// matching checksums, and the other clients were never held up.
void TestFanoutShortWriteKeepsOrder(ClientContext &ctx, Db &db) {
  Client paused(&ctx, g_settings.host, g_settings.port);
  Client fine(&ctx, g_settings.host, g_settings.port);
  EXPECT(paused.ConnectAndSync(Token("u_fanpause")), ErrorsOf(paused));
  EXPECT(fine.ConnectAndSync(Token("u_fanfine")), ErrorsOf(fine));
  double short_before = Metric("syncline_fanout_short_writes_total");
  double sends_before = Metric("syncline_fanout_sends_total");
  paused.SetReading(false);
  int changes = 0, extra = -1;
  // ~20 KB per change: many fit in the socket buffers, then one does not.
  // Two more after the short one, to queue behind what lws kept.
  while (changes < 400 && extra != 0) {
    db.Exec("INSERT INTO e2e_items SELECT 'fp-" + std::to_string(changes) +
            "-' || g, 'u_fanpause', repeat('z', 1000) FROM generate_series(1, 20) g");
    db.Flush();
    changes++;
    ctx.Pump(0.02);
    if (extra > 0) extra--;
    if (extra < 0 && Metric("syncline_fanout_short_writes_total") > short_before) extra = 2;
  }
  EXPECT(Metric("syncline_fanout_short_writes_total") > short_before,
         "no short write after " + std::to_string(changes) + " changes to a paused client");
  EXPECT(Metric("syncline_fanout_sends_total") > sends_before, "the fan-out path was not used");
  db.Exec("INSERT INTO e2e_items VALUES ('fanfine-1', 'u_fanfine', 'ok')");
  EXPECT(ctx.WaitFor([&] { return Objects(fine, UserBucket("u_fanfine")) == 1; }, 10),
         "the other client was held up");
  EXPECT(!paused.closed, "paused client dropped: " + ErrorsOf(paused));
  paused.SetReading(true);
  size_t want = static_cast<size_t>(changes) * 20;
  EXPECT(ctx.WaitFor([&] { return Objects(paused, UserBucket("u_fanpause")) == want; }, 30),
         std::to_string(Objects(paused, UserBucket("u_fanpause"))) + " of " + std::to_string(want) +
             " objects; " + ErrorsOf(paused));
  EXPECT(paused.checksum_failures.empty(), Join(paused.checksum_failures));
  EXPECT(paused.errors.empty() && !paused.closed, ErrorsOf(paused));
}

void TestSlowConsumerIsDisconnected(ClientContext &ctx, Db &db) {
  Client slow(&ctx, g_settings.host, g_settings.port);
  Client fine(&ctx, g_settings.host, g_settings.port);
  EXPECT(slow.ConnectAndSync(Token("u_slow")), ErrorsOf(slow));
  EXPECT(fine.ConnectAndSync(Token("u_fine")), ErrorsOf(fine));
  double before = Metric("syncline_slow_consumer_disconnects_total");
  slow.SetReading(false);
  // ~4 MB of live changes for the slow client: more than its send queue.
  db.Exec(
      "INSERT INTO e2e_items SELECT 'slow-' || g, 'u_slow', repeat('y', 1000) FROM "
      "generate_series(1, 4000) g");
  db.Exec("INSERT INTO e2e_items VALUES ('fine-1', 'u_fine', 'ok')");
  EXPECT(ctx.WaitFor([&] { return Objects(fine, UserBucket("u_fine")) == 1; }, 10),
         "the other client starved");
  EXPECT(
      ctx.WaitFor([&] { return Metric("syncline_slow_consumer_disconnects_total") > before; }, 10),
      "slow consumer not dropped");
  slow.SetReading(true);
  EXPECT(slow.WaitClosed(10), "slow client still connected");
  bool told = false;
  for (const auto &e : slow.errors) told |= e.code() == pb::Error::SLOW_CONSUMER && e.retryable();
  EXPECT(told || slow.close_code == 4008 || slow.close_code == 0, ErrorsOf(slow));
  std::string body;
  EXPECT(HttpGet("/healthz", &body) == 200, body);
}

void TestManyConnections(ClientContext &ctx, Db &) {
  int extra = 20;
  int total = g_settings.max_connections + extra;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < total; i++) {
    clients.push_back(std::make_unique<Client>(&ctx, g_settings.host, g_settings.port));
    clients.back()->Connect();
  }
  ctx.WaitFor(
      [&] {
        for (auto &c : clients)
          if (!c->established && !c->closed) return false;
        return true;
      },
      10);
  ctx.Pump(1);
  int refused = 0, open = 0;
  Client *survivor = nullptr;
  std::map<std::string, int> outcomes;
  for (auto &c : clients)
    outcomes[c->connect_error ? "connect-error"
                              : (c->closed ? "closed-" + std::to_string(c->close_code) : "open")]++;
  for (const auto &[k, v] : outcomes) fprintf(stderr, "    %s: %d\n", k.c_str(), v);
  for (auto &c : clients) {
    if (c->closed && c->close_code == 4029) {
      refused++;
      EXPECT(!c->errors.empty() && c->errors[0].code() == pb::Error::TOO_MANY_CONNECTIONS &&
                 c->errors[0].retryable(),
             ErrorsOf(*c));
    } else if (!c->closed) {
      open++;
      survivor = c.get();
    }
  }
  fprintf(stderr, "    %d opened, %d refused, %d open\n", total, refused, open);
  EXPECT(refused >= extra, std::to_string(refused) + " refused");
  EXPECT(open <= g_settings.max_connections, std::to_string(open) + " open");
  EXPECT(survivor != nullptr, "none accepted");
  std::string t = Token("u_many");
  survivor->SendHello(&t);
  survivor->SendSync(false);
  EXPECT(survivor->WaitComplete(0), ErrorsOf(*survivor));
  clients.clear();
  ctx.Pump(0.5);
  Client after(&ctx, g_settings.host, g_settings.port);
  EXPECT(after.ConnectAndSync(Token("u_many")), "capacity not released: " + ErrorsOf(after));
}

void TestManyConnectionsOfOneUser(ClientContext &ctx, Db &) {
  int limit = g_settings.max_per_user, total = limit + 4;
  std::vector<std::unique_ptr<Client>> clients;
  std::string t = Token("u_greedy");
  for (int i = 0; i < total; i++) {
    clients.push_back(std::make_unique<Client>(&ctx, g_settings.host, g_settings.port));
    clients.back()->Connect();
    EXPECT(clients.back()->WaitEstablished(), ErrorsOf(*clients.back()));
    clients.back()->SendHello(&t);
    clients.back()->SendPing(1);
    EXPECT(ctx.WaitFor([&] { return clients.back()->keepalives > 0 || clients.back()->closed; }, 5),
           "no answer");
  }
  int refused = 0;
  for (auto &c : clients) refused += c->closed && c->close_code == 4029;
  EXPECT(refused == total - limit,
         std::to_string(refused) + " refused of " + std::to_string(total));
  EXPECT(clients.back()->errors.size() == 1 &&
             clients.back()->errors[0].code() == pb::Error::TOO_MANY_CONNECTIONS &&
             clients.back()->errors[0].retryable(),
         ErrorsOf(*clients.back()));
  // Another user is unaffected; and closing one frees a slot.
  Client other(&ctx, g_settings.host, g_settings.port);
  EXPECT(other.ConnectAndSync(Token("u_modest")), ErrorsOf(other));
  clients[0]->Close();
  EXPECT(clients[0]->WaitClosed(), "");
  ctx.Pump(0.2);
  Client again(&ctx, g_settings.host, g_settings.port);
  EXPECT(again.ConnectAndSync(t), "slot not freed: " + ErrorsOf(again));
}

void TestPostgresRestart(ClientContext &ctx, Db &db) {
  EXPECT(!g_settings.cluster.empty(), "SYNCLINE_TEST_CLUSTER not set");
  Client a(&ctx, g_settings.host, g_settings.port);
  Client b(&ctx, g_settings.host, g_settings.port);
  EXPECT(a.ConnectAndSync(Token("u_pg1")), ErrorsOf(a));
  EXPECT(b.ConnectAndSync(Token("u_pg2")), ErrorsOf(b));
  std::string cmd = "bash scripts/pgcluster.sh restart '" + g_settings.cluster + "'";
  double t0 = NowSeconds();
  // The restart blocks this thread; the clients' sockets just wait.
  EXPECT(system(cmd.c_str()) == 0, cmd);
  fprintf(stderr, "    restart took %.1f s\n", NowSeconds() - t0);
  db.Reconnect();
  // Written right away: likely before the gateway's listener is back, so the
  // NOTIFY is lost and only the resync-after-reconnect can deliver it.
  db.Exec("INSERT INTO e2e_items VALUES ('pg-1', 'u_pg1', 'after restart')");
  EXPECT(ctx.WaitFor([&] { return Objects(a, UserBucket("u_pg1")) == 1; }, 20),
         "change after restart not delivered; " + ErrorsOf(a));
  std::string body;
  EXPECT(ctx.WaitFor([&] { return HttpGet("/healthz", &body) == 200; }, 15), body);
  db.Exec("INSERT INTO e2e_items VALUES ('pg-2', 'u_pg2', 'live again')");
  EXPECT(ctx.WaitFor([&] { return Objects(b, UserBucket("u_pg2")) == 1; }, 10),
         "live updates not back; " + ErrorsOf(b));
  EXPECT(a.checksum_failures.empty() && b.checksum_failures.empty(),
         Join(a.checksum_failures) + Join(b.checksum_failures));
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_pg1")), ErrorsOf(c));
  EXPECT(Objects(c, UserBucket("u_pg1")) == 1, "");
}

// Runs pg_ctl on the test cluster as its owner (stop or start).
bool PgCtl(const std::string &action) {
  std::string bin = Env("PGBIN", "/usr/lib/postgresql/15/bin");
  std::string dir = g_settings.cluster;
  std::string cmd = bin + "/pg_ctl -D '" + dir + "/data' -l '" + dir +
                    "/server.log' -m fast -w -t 60 " + action + " >/dev/null 2>&1";
  if (geteuid() == 0) cmd = "runuser -u postgres -- " + cmd;
  return system(cmd.c_str()) == 0;
}

void TestPostgresDownThenUp(ClientContext &ctx, Db &db) {
  EXPECT(!g_settings.cluster.empty(), "SYNCLINE_TEST_CLUSTER not set");
  Client live(&ctx, g_settings.host, g_settings.port);
  EXPECT(live.ConnectAndSync(Token("u_down")), ErrorsOf(live));
  EXPECT(PgCtl("stop"), "pg_ctl stop failed");
  std::string body;
  bool unhealthy = ctx.WaitFor([&] { return HttpGet("/healthz", &body) == 503; }, 10);
  // A sync while the database is down: a retryable error, the connection stays.
  Client c(&ctx, g_settings.host, g_settings.port);
  c.Connect();
  bool established = c.WaitEstablished();
  std::string t = Token("u_down");
  c.SendHello(&t);
  c.SendSync(false);
  bool told = ctx.WaitFor([&] { return !c.errors.empty() || c.closed; }, 10);
  // A write while no pool connection is up: RETRY, and error_code says why.
  pb::ClientMessage w;
  w.set_request_id(4242);
  w.mutable_write_batch()->set_seq(1);
  auto *op = w.mutable_write_batch()->add_ops();
  op->set_op(pb::WriteOp::PUT);
  op->set_type("e2e_items");
  op->set_id("down-w");
  op->set_data(R"({"owner": "u_down"})");
  c.Send(w);
  bool acked = ctx.WaitFor([&] { return !c.acks.empty() || c.closed; }, 10);
  // Restart before asserting anything, so that a failure leaves the cluster up.
  bool started = PgCtl("start");
  EXPECT(started, "pg_ctl start failed");
  EXPECT(unhealthy, "healthz did not turn 503: " + body);
  EXPECT(established, "");
  EXPECT(told && !c.closed, ErrorsOf(c));
  EXPECT(c.errors[0].code() == pb::Error::DATABASE_UNAVAILABLE && c.errors[0].retryable(),
         ErrorsOf(c));
  EXPECT(acked && !c.acks.empty(), "no WriteAck while the database was down; " + ErrorsOf(c));
  EXPECT(
      c.acks[0].status() == pb::WriteAck::RETRY && c.acks[0].error_code() == "DATABASE_UNAVAILABLE",
      AckText(c.acks[0]));
  EXPECT(ctx.WaitFor([&] { return HttpGet("/healthz", &body) == 200; }, 20), body);
  // The same connection syncs once the database is back, and live clients resume.
  uint64_t before = c.completes;
  c.SendSync(false);
  EXPECT(c.WaitComplete(before, 10), ErrorsOf(c));
  db.Reconnect();
  db.Exec("INSERT INTO e2e_items VALUES ('down-1', 'u_down', 'back')");
  EXPECT(ctx.WaitFor([&] { return Objects(live, UserBucket("u_down")) == 1; }, 20),
         "live client not resynced after the outage; " + ErrorsOf(live));
  EXPECT(!live.closed, ErrorsOf(live));
}

void TestGracefulShutdown(ClientContext &ctx, Db &) {
  EXPECT(g_settings.gateway_pid > 0, "SYNCLINE_GW_PID not set");
  Client c(&ctx, g_settings.host, g_settings.port);
  EXPECT(c.ConnectAndSync(Token("u_term")), ErrorsOf(c));
  kill(g_settings.gateway_pid, SIGTERM);
  EXPECT(c.WaitClosed(10), "not closed on SIGTERM");
  EXPECT(c.close_code == 1001, ErrorsOf(c));
  EXPECT(!c.errors.empty() && c.errors.back().code() == pb::Error::SHUTTING_DOWN &&
             c.errors.back().retryable() && c.errors.back().retry_after_ms() > 0,
         ErrorsOf(c));
}

}  // namespace

void TestOfflineWritesRejectedThenApplied(ClientContext &ctx);  // e2e_offline_writes.cpp
// e2e_bounds.cpp
void TestLargeBucketBoundedMemory(ClientContext &ctx);
void TestStatementTimeoutEndsSlowQueries(ClientContext &ctx);
void TestLiveRoundOverBudgetCatchesUp(ClientContext &ctx);
void TestWriteQueueBoundedInBytes(ClientContext &ctx, const std::string &host, int port);
void TestWriteGroupsIsolateFailures(ClientContext &ctx, const std::string &host, int port);
void TestWritesPipelinedBeforeAcks(ClientContext &ctx, const std::string &host, int port);

int main(int argc, char **argv) {
  std::string only = argc > 1 ? argv[1] : "";
  signal(SIGPIPE, SIG_IGN);
  struct Test {
    const char *name;
    std::function<void(ClientContext &, Db &)> fn;
  };
  std::vector<Test> tests = {
      {"health_and_metrics", TestHealthAndMetrics},
      {"listen_binds_exact_address", TestListenBindsExactAddress},
      {"upgrade_without_subprotocol_400", TestUpgradeWithoutSubprotocolIs400},
      {"initial_sync", TestInitialSync},
      {"resume_without_redownload", TestResumeWithoutRedownload},
      {"position_beyond_checkpoint_is_reset", TestPositionBeyondCheckpointIsReset},
      {"live_updates", TestLiveUpdates},
      {"live_round_visits_only_holders", TestLiveRoundVisitsOnlyHolders},
      {"live_rounds_converge_under_rechecks", TestLiveRoundsConvergeUnderRechecks},
      {"bucket_gained_and_lost", TestBucketGainedAndLost},
      {"writes", TestWrites},
      {"writes_keep_exact_numbers", TestWritesKeepExactNumbers},
      {"offline_writes_rejected_then_applied",
       [](ClientContext &c, Db &) { TestOfflineWritesRejectedThenApplied(c); }},
      {"same_batch_on_two_connections", TestSameBatchOnTwoConnections},
      {"parameter_change_rechecks_coalesced", TestParameterChangeRechecksAreCoalesced},
      {"write_queue_bounded_in_bytes",
       [](ClientContext &c, Db &) {
         TestWriteQueueBoundedInBytes(c, g_settings.host, g_settings.port);
       }},
      {"write_groups_isolate_failures",
       [](ClientContext &c, Db &) {
         TestWriteGroupsIsolateFailures(c, g_settings.host, g_settings.port);
       }},
      {"writes_pipelined_before_acks",
       [](ClientContext &c, Db &) {
         TestWritesPipelinedBeforeAcks(c, g_settings.host, g_settings.port);
       }},
      {"large_bucket_bounded_memory",
       [](ClientContext &c, Db &) { TestLargeBucketBoundedMemory(c); }},
      {"live_round_over_budget_catches_up",
       [](ClientContext &c, Db &) { TestLiveRoundOverBudgetCatchesUp(c); }},
      {"statement_timeout_ends_slow_queries",
       [](ClientContext &c, Db &) { TestStatementTimeoutEndsSlowQueries(c); }},
      {"malformed_and_unknown_keep_connection", TestMalformedAndUnknownKeepConnection},
      {"message_before_hello", TestMessageBeforeHello},
      {"oversized_frame_1009", TestOversizedFrame},
      {"text_frame_1003", TestTextFrame},
      {"bad_tokens_4001", TestBadTokens},
      {"header_token", TestHeaderToken},
      {"tls_sync", TestTlsSync},
      {"rs256_tokens_from_jwks", TestRs256TokensFromJwks},
      {"wrong_version_and_subprotocol", TestWrongVersionAndSubprotocol},
      {"hello_cannot_change_client_id", TestHelloCannotChangeClientId},
      {"token_expiry_and_refresh", TestTokenExpiryAndRefresh},
      {"leeway_applies_to_live_sessions", TestLeewayAppliesToLiveSessions},
      {"slow_reader_paused_then_resumes", TestSlowReaderIsPausedThenResumes},
      {"sync_ending_behind_a_round_catches_up", TestSyncEndingBehindARoundCatchesUp},
      {"fanout_short_write_keeps_order", TestFanoutShortWriteKeepsOrder},
      {"slow_consumer_disconnected", TestSlowConsumerIsDisconnected},
      {"many_connections", TestManyConnections},
      {"many_connections_of_one_user", TestManyConnectionsOfOneUser},
      {"postgres_restart", TestPostgresRestart},
      {"postgres_down_then_up", TestPostgresDownThenUp},
      {"graceful_shutdown", TestGracefulShutdown},
  };
  int passed = 0, failed = 0;
  ClientContext ctx;
  Db db;
  for (const auto &t : tests) {
    if (!only.empty() && std::string(t.name).find(only) == std::string::npos) continue;
    double start = NowSeconds();
    try {
      t.fn(ctx, db);
      passed++;
      printf("ok    %-40s %6.2fs\n", t.name, NowSeconds() - start);
    } catch (const std::exception &e) {
      failed++;
      printf("FAIL  %-40s %6.2fs  %s\n", t.name, NowSeconds() - start, e.what());
    }
    fflush(stdout);
    ctx.Pump(0.2);  // let closes finish between tests
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
