// Load client for bench/gateway_bench.sh: measures what a gateway user would
// compare. Modes:
//   initial  one client syncs the bucket of user "big" (ops/s)
//   live     N clients (own bucket each + one shared bucket); a writer commits
//            rows and each client's receipt is timed against the commit (p50/p99)
//   idle     N synced, idle connections; gateway RSS delta per connection
// Figures are printed, never asserted.
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tests/e2e/ws_client.hpp"

namespace {

using syncline::testing::Client;
using syncline::testing::ClientContext;
using syncline::testing::MakeHs256Token;
using syncline::testing::NowSeconds;

std::string Env(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v ? v : fallback;
}

const std::string g_host = Env("SYNCLINE_GW_HOST", "127.0.0.1");
const int g_port = std::atoi(Env("SYNCLINE_GW_PORT", "8080").c_str());
const std::string g_secret = Env("SYNCLINE_JWT_SECRET", "");

std::string Token(const std::string &sub) {
  int64_t now = time(nullptr);
  return MakeHs256Token(g_secret,
                        nlohmann::json{{"sub", sub}, {"iat", now}, {"exp", now + 36000}}.dump());
}

long RssKb(pid_t pid) {
  FILE *f = fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

int Initial() {
  ClientContext ctx;
  Client c(&ctx, g_host, g_port);
  c.keep_objects = false;
  c.Connect();
  if (!c.WaitEstablished()) return fprintf(stderr, "connect failed\n"), 1;
  std::string t = Token("big");
  c.SendHello(&t);
  double start = NowSeconds();
  c.SendSync(false);
  if (!c.WaitComplete(0, 600)) return fprintf(stderr, "sync did not complete\n"), 1;
  double secs = NowSeconds() - start;
  printf("initial sync: %llu ops, %.1f MB in %.2f s = %.0f ops/s%s\n",
         static_cast<unsigned long long>(c.ops_received), c.bytes_received / 1e6, secs,
         c.ops_received / secs, c.checksum_failures.empty() ? " (checksums ok)" : " CHECKSUM FAIL");
  return c.checksum_failures.empty() ? 0 : 1;
}

// Connects n clients named prefix<i>, Hello + Sync each; returns when all completed.
bool ConnectMany(ClientContext &ctx, std::vector<std::unique_ptr<Client>> *clients, int n,
                 const std::string &prefix, int first_index = 0) {
  const int batch = 250;
  for (int start = 0; start < n; start += batch) {
    int end = std::min(n, start + batch);
    for (int i = start; i < end; i++) {
      auto c = std::make_unique<Client>(&ctx, g_host, g_port);
      c->keep_objects = false;
      c->Connect();
      clients->push_back(std::move(c));
    }
    if (!ctx.WaitFor(
            [&] {
              for (int i = start; i < end; i++)
                if (!(*clients)[i]->established && !(*clients)[i]->closed) return false;
              return true;
            },
            30))
      return false;
    for (int i = start; i < end; i++) {
      std::string t = Token(prefix + std::to_string(first_index + i));
      (*clients)[i]->SendHello(&t);
      (*clients)[i]->SendSync(false);
    }
  }
  bool ok = ctx.WaitFor(
      [&] {
        for (auto &c : *clients)
          if (c->completes == 0 && !c->closed) return false;
        return true;
      },
      120);
  int failed = 0;
  for (auto &c : *clients) failed += c->completes == 0;
  if (failed) fprintf(stderr, "%d of %d clients did not sync\n", failed, n);
  return ok && failed == 0;
}

struct Receipt {
  std::string id;
  uint64_t op_id;
  double at;
};

// The clients are spread over `threads` receiving threads, each with its own
// event loop. One thread spends ~20 us per receipt, so the last client of a
// 1,000-client round reads its change well after the gateway wrote it (its
// round takes ~3 ms); more threads drain faster but, on the gateway's own
// cores, take CPU from its send threads (see bench/gateway_bench.sh).
int Live(int n, int writes, int shared_every, int threads) {
  threads = std::max(1, std::min(threads, n));
  std::atomic<int> ready{0}, failed{0}, checksum_bad{0};
  std::atomic<bool> done{false};
  std::vector<std::vector<Receipt>> received(threads);
  std::vector<std::thread> receivers;
  for (int t = 0; t < threads; t++)
    receivers.emplace_back([&, t] {
      ClientContext ctx;
      std::vector<std::unique_ptr<Client>> clients;
      int first = n * t / threads, count = n * (t + 1) / threads - first;
      bool ok = ConnectMany(ctx, &clients, count, "lu", first);
      std::vector<Receipt> &mine = received[t];
      mine.reserve(static_cast<size_t>(writes) * count / 4 + 16);
      for (auto &c : clients)
        c->on_op = [&mine](const syncline::v1::OplogEntry &op) {
          mine.push_back({op.object_id(), op.op_id(), NowSeconds()});
        };
      (ok ? ready : failed)++;
      while (!done) ctx.Pump(0.05);
      for (auto &c : clients) checksum_bad += !c->checksum_failures.empty();
    });
  while (ready + failed < threads) usleep(10000);
  if (failed > 0) {
    done = true;
    for (auto &r : receivers) r.join();
    return 1;
  }
  std::mutex mu;
  std::unordered_map<std::string, double> committed;  // object id -> commit time
  // A LISTEN connection of our own, to split the latency into database
  // (commit -> NOTIFY) and gateway + client (NOTIFY -> receipt).
  std::atomic<bool> listening{true};
  std::vector<std::pair<uint64_t, double>> notifications;  // last_op_id, arrival
  std::thread listener([&] {
    PGconn *db = PQconnectdb("dbname=syncline");
    PQclear(PQexec(db, "LISTEN syncline"));
    while (listening) {
      pollfd pfd{PQsocket(db), POLLIN, 0};
      poll(&pfd, 1, 20);
      PQconsumeInput(db);
      while (PGnotify *note = PQnotifies(db)) {
        double t = NowSeconds();
        auto j = nlohmann::json::parse(note->extra, nullptr, false);
        if (j.is_object() && j.contains("last_op_id")) {
          std::lock_guard<std::mutex> lock(mu);
          notifications.emplace_back(j["last_op_id"].get<uint64_t>(), t);
        }
        PQfreemem(note);
      }
    }
    PQfinish(db);
  });
  {
    PGconn *db = PQconnectdb("dbname=syncline");
    for (int k = 0; k < writes; k++) {
      bool shared = shared_every > 0 && k % shared_every == 0;
      std::string id = (shared ? "s" : "w") + std::to_string(k);
      std::string sql = shared ? "INSERT INTO bench_shared VALUES ('" + id + "', 'x')"
                               : "INSERT INTO bench_items VALUES ('" + id + "', 'lu" +
                                     std::to_string(k % n) + "', 'v')";
      PGresult *r = PQexec(db, sql.c_str());
      double t = NowSeconds();
      if (PQresultStatus(r) != PGRES_COMMAND_OK) fprintf(stderr, "%s", PQresultErrorMessage(r));
      PQclear(r);
      {
        std::lock_guard<std::mutex> lock(mu);
        committed[id] = t;
      }
      usleep(20000);
    }
    PQfinish(db);
  }
  usleep(2000000);
  done = true;
  for (auto &r : receivers) r.join();
  listening = false;
  listener.join();
  std::vector<double> own, fan, all;
  size_t missing = 0;
  std::map<std::string, int> got;
  std::vector<double> db_part, gw_part;
  std::sort(notifications.begin(), notifications.end());
  std::vector<Receipt> receipts;
  for (auto &mine : received) receipts.insert(receipts.end(), mine.begin(), mine.end());
  std::sort(receipts.begin(), receipts.end(),
            [](const Receipt &a, const Receipt &b) { return a.at < b.at; });
  for (const auto &r : receipts) {
    auto it = committed.find(r.id);
    if (it == committed.end()) continue;
    double ms = (r.at - it->second) * 1000;
    (r.id[0] == 's' ? fan : own).push_back(ms);
    all.push_back(ms);
    got[r.id]++;
    // The first NOTIFY that covers this op.
    auto note =
        std::lower_bound(notifications.begin(), notifications.end(), std::make_pair(r.op_id, 0.0));
    if (note != notifications.end() && got[r.id] == 1) {
      db_part.push_back((note->second - it->second) * 1000);
      gw_part.push_back((r.at - note->second) * 1000);
    }
  }
  for (const auto &[id, t] : committed) {
    int expect = id[0] == 's' ? n : 1;
    if (got[id] < expect) missing += expect - got[id];
  }
  printf(
      "live latency, %d clients on %d receiving thread%s, %d commits (every %d-th to the shared "
      "bucket):\n",
      n, threads, threads == 1 ? "" : "s", writes, shared_every);
  printf("  own bucket     : n=%zu p50 %.2f ms p99 %.2f ms max %.2f ms\n", own.size(),
         Percentile(own, 0.5), Percentile(own, 0.99), Percentile(own, 1));
  printf("  shared (fanout): n=%zu p50 %.2f ms p99 %.2f ms max %.2f ms\n", fan.size(),
         Percentile(fan, 0.5), Percentile(fan, 0.99), Percentile(fan, 1));
  printf("  all receipts   : n=%zu p50 %.2f ms p99 %.2f ms; missing receipts: %zu\n", all.size(),
         Percentile(all, 0.5), Percentile(all, 0.99), missing);
  printf(
      "  split (first receipt of each commit): commit->NOTIFY p50 %.2f p99 %.2f ms; "
      "NOTIFY->client p50 %.2f p99 %.2f ms\n",
      Percentile(db_part, 0.5), Percentile(db_part, 0.99), Percentile(gw_part, 0.5),
      Percentile(gw_part, 0.99));
  if (checksum_bad) printf("  CHECKSUM FAILURES on %d clients\n", checksum_bad.load());
  return missing == 0 && checksum_bad == 0 ? 0 : 1;
}

int Idle(int n, pid_t gateway_pid) {
  ClientContext ctx;
  ctx.Pump(0.2);
  long before = RssKb(gateway_pid);
  std::vector<std::unique_ptr<Client>> clients;
  double start = NowSeconds();
  if (!ConnectMany(ctx, &clients, n, "idle")) return 1;
  double secs = NowSeconds() - start;
  ctx.Pump(2);
  long after = RssKb(gateway_pid);
  printf(
      "idle connections: %d connected+synced in %.1f s; gateway RSS %ld -> %ld kB = %.1f KB per "
      "connection\n",
      n, secs, before, after, (after - before) * 1.0 / n);
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  int n = argc > 2 ? std::atoi(argv[2]) : 1000;
  if (mode == "initial") return Initial();
  if (mode == "live")
    return Live(n, argc > 3 ? std::atoi(argv[3]) : 400, 10, argc > 4 ? std::atoi(argv[4]) : 1);
  if (mode == "idle") return Idle(n, argc > 3 ? std::atoi(argv[3]) : 0);
  fprintf(
      stderr,
      "usage: gateway_load initial | live CLIENTS [WRITES [THREADS]] | idle CLIENTS GATEWAY_PID\n");
  return 2;
}
