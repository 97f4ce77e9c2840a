// Write-path load client for bench/write_bench.sh: N websocket clients, each its
// own token subject and client id, upload single-op WriteBatches seq 1, 2, ...;
// each keeps DEPTH batches sent and not yet acknowledged (1: waits for the
// WriteAck of a batch before sending the next; more: a client uploading a
// queue of offline writes). Runs for a fixed duration after a warm-up and
// prints one line of key=value figures:
//   batches per_s p50_ms p99_ms not_applied errors
// Latency is from a batch's send to its WriteAck. Figures are printed, never asserted.
//   write_bench CLIENTS SECONDS [WARMUP_SECONDS] [RUN_TAG] [DEPTH]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/e2e/ws_client.hpp"

namespace {

using syncline::testing::Client;
using syncline::testing::ClientContext;
using syncline::testing::MakeHs256Token;
using syncline::testing::NowSeconds;
namespace pb = syncline::v1;

std::string Env(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v ? v : fallback;
}

std::string Token(const std::string &secret, const std::string &sub) {
  int64_t now = time(nullptr);
  return MakeHs256Token(secret,
                        nlohmann::json{{"sub", sub}, {"iat", now}, {"exp", now + 36000}}.dump());
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

struct Writer {
  std::unique_ptr<Client> client;
  std::string sub;
  uint64_t seq = 0;            // last seq sent
  uint64_t acked_seq = 0;      // last seq acknowledged
  size_t acked = 0;            // acks consumed
  std::deque<double> sent_at;  // when each unacknowledged seq was sent, oldest first
};

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CLIENTS SECONDS [WARMUP_SECONDS] [RUN_TAG] [DEPTH]\n", argv[0]);
    return 2;
  }
  const int n = std::atoi(argv[1]);
  const double seconds = std::atof(argv[2]);
  const double warmup = argc > 3 ? std::atof(argv[3]) : 2;
  const std::string tag = argc > 4 ? argv[4] : std::to_string(getpid());
  const int depth = std::max(1, argc > 5 ? std::atoi(argv[5]) : 1);
  const std::string host = Env("SYNCLINE_GW_HOST", "127.0.0.1");
  const int port = std::atoi(Env("SYNCLINE_GW_PORT", "8080").c_str());
  const std::string secret = Env("SYNCLINE_JWT_SECRET", "");
  const std::string payload = R"(, "v": "payload text of a typical row"})";

  ClientContext ctx;
  std::vector<Writer> writers(n);
  for (int i = 0; i < n; i++) {
    Writer &w = writers[i];
    w.sub = "wb" + std::to_string(i);
    w.client = std::make_unique<Client>(&ctx, host, port);
    w.client->keep_objects = false;
    w.client->Connect();
  }
  if (!ctx.WaitFor(
          [&] {
            for (auto &w : writers)
              if (!w.client->established && !w.client->closed) return false;
            return true;
          },
          30)) {
    fprintf(stderr, "connections not established\n");
    return 1;
  }
  for (auto &w : writers) {
    if (!w.client->established) {
      fprintf(stderr, "connection of %s failed\n", w.sub.c_str());
      return 1;
    }
    std::string t = Token(secret, w.sub);
    w.client->SendHello(&t, 1, "wb-" + tag + "-" + w.sub);
  }

  auto send_next = [&](Writer &w, double now) {
    w.seq++;
    pb::ClientMessage m;
    m.set_request_id(w.seq);
    auto *b = m.mutable_write_batch();
    b->set_seq(w.seq);
    auto *op = b->add_ops();
    op->set_op(pb::WriteOp::PUT);
    op->set_type("wb_items");
    std::string id = "g-" + tag + "-" + w.sub + "-" + std::to_string(w.seq);
    op->set_id(id);
    op->set_data(R"({"owner": ")" + w.sub + "\"" + payload);
    w.sent_at.push_back(now);
    w.client->Send(m);
  };

  double start = NowSeconds();
  for (auto &w : writers)
    for (int d = 0; d < depth; d++) send_next(w, start);
  const double measure_from = start + warmup, end = measure_from + seconds;
  uint64_t batches = 0, not_applied = 0;
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(seconds * 20000));
  std::string first_problem;
  bool failed = false;
  ctx.WaitFor(
      [&] {
        double now = NowSeconds();
        if (now >= end) return true;
        for (auto &w : writers) {
          Client &c = *w.client;
          if (c.closed || !c.errors.empty()) {
            if (first_problem.empty())
              first_problem = w.sub + ": closed=" + std::to_string(c.closed) +
                              " code=" + std::to_string(c.close_code) +
                              (c.errors.empty() ? "" : " error=" + c.errors.back().message());
            failed = true;
            return true;
          }
          while (w.acked < c.acks.size()) {
            const pb::WriteAck &a = c.acks[w.acked++];
            uint64_t expected = ++w.acked_seq;
            double sent_at = w.sent_at.front();
            w.sent_at.pop_front();
            if (now >= measure_from) {
              batches++;
              latencies.push_back((now - sent_at) * 1000);
              if (a.status() != pb::WriteAck::APPLIED || a.seq() != expected) {
                not_applied++;
                if (first_problem.empty())
                  first_problem = w.sub + " seq " + std::to_string(a.seq()) + " (expected " +
                                  std::to_string(expected) +
                                  "): " + pb::WriteAck::Status_Name(a.status()) + " " +
                                  a.error_code() + " " + a.error_message();
              }
            }
            send_next(w, now);
          }
          c.acks.clear();  // keep memory flat
          w.acked = 0;
        }
        return false;
      },
      warmup + seconds + 60);
  double elapsed = std::min(NowSeconds(), end) - measure_from;
  if (!first_problem.empty()) fprintf(stderr, "first problem: %s\n", first_problem.c_str());
  printf(
      "clients=%d depth=%d seconds=%.1f batches=%llu per_s=%.0f p50_ms=%.2f p99_ms=%.2f "
      "not_applied=%llu\n",
      n, depth, elapsed, static_cast<unsigned long long>(batches),
      elapsed > 0 ? batches / elapsed : 0, Percentile(latencies, 0.5), Percentile(latencies, 0.99),
      static_cast<unsigned long long>(not_applied));
  return failed ? 1 : 0;
}
