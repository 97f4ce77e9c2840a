// Benchmark client for Syncline's read side and op log (figures only, no
// pass/fail). Connects with the libpq environment (PGHOST, PGPORT, PGUSER,
// PGDATABASE) or --conninfo.
//
//   syncline_bench oplog --table T --rows N [--worker | --plain]
//       INSERT N rows into synced table T in one statement, then wait until
//       their ops are visible (the background worker flushes them when
//       --worker, otherwise this program calls syncline.flush()).
//   syncline_bench checkpoint --claims JSON [--calls N]
//       latency of syncline.checkpoint(claims): median, p99, mean.
//   syncline_bench paging --bucket B [--page N]
//       read every op of bucket B with bucket_data pages of N ops.
// Each prints one line "key=value ..." for bench/run.sh to collect.
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

[[noreturn]] void Die(const std::string &what) {
  fprintf(stderr, "syncline_bench: %s\n", what.c_str());
  exit(1);
}

PGconn *Connect(const std::string &conninfo) {
  PGconn *c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) Die(std::string("connect: ") + PQerrorMessage(c));
  return c;
}

// Runs one statement with text parameters; dies on error.
PGresult *Exec(PGconn *c, const std::string &sql, const std::vector<std::string> &params = {}) {
  std::vector<const char *> p;
  for (const auto &s : params) p.push_back(s.c_str());
  PGresult *r = PQexecParams(c, sql.c_str(), int(p.size()), nullptr, p.empty() ? nullptr : p.data(),
                             nullptr, nullptr, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    Die(sql.substr(0, 100) + ": " + PQresultErrorMessage(r));
  return r;
}

long long Scalar(PGconn *c, const std::string &sql) {
  PGresult *r = Exec(c, sql);
  long long v = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  return v;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = size_t(p * double(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int OpLog(PGconn *c, const std::map<std::string, std::string> &a) {
  std::string table = a.count("table") ? a.at("table") : "";
  long long rows = a.count("rows") ? atoll(a.at("rows").c_str()) : 200000;
  bool worker = a.count("worker") > 0;
  bool plain = a.count("plain") > 0;  // a table no rule syncs: time the INSERT alone
  if (table.empty()) Die("oplog needs --table");
  const std::string counter =
      "SELECT coalesce((SELECT last_op_id FROM syncline_internal.state), 0)";
  long long before = plain ? 0 : Scalar(c, counter);
  auto t0 = Clock::now();
  PGresult *r = Exec(c, "INSERT INTO " + table +
                            " (owner, val, payload) SELECT 'u' || (g % 1000), g, "
                            "'payload ' || md5(g::text) FROM generate_series(1, " +
                            std::to_string(rows) + ") g");
  PQclear(r);
  double insert_s = Since(t0);
  if (plain) {
    printf("rows=%lld insert_s=%.3f rows_per_s=%.0f\n", rows, insert_s, double(rows) / insert_s);
    return 0;
  }
  long long visible = before;
  while (visible - before < rows) {
    if (!worker)
      Scalar(c, "SELECT syncline.flush()");
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    visible = Scalar(c, counter);
    if (Since(t0) > 600)
      Die("ops not visible after 600 s (" + std::to_string(visible - before) + " of " +
          std::to_string(rows) + ")");
  }
  double total_s = Since(t0);
  printf("rows=%lld ops=%lld insert_s=%.3f visible_s=%.3f ops_per_s=%.0f\n", rows, visible - before,
         insert_s, total_s, double(visible - before) / total_s);
  return 0;
}

int Checkpoint(PGconn *c, const std::map<std::string, std::string> &a) {
  std::string claims = a.count("claims") ? a.at("claims") : "{}";
  int calls = a.count("calls") ? atoi(a.at("calls").c_str()) : 200;
  // Prepared, as the gateway would use it.
  PGresult *p = PQprepare(c, "cp", "SELECT syncline.checkpoint($1::jsonb)::text", 1, nullptr);
  if (PQresultStatus(p) != PGRES_COMMAND_OK) Die(PQresultErrorMessage(p));
  PQclear(p);
  std::vector<double> ms;
  size_t bytes = 0, buckets = 0;
  for (int i = 0; i < calls + 5; i++) {
    const char *v[] = {claims.c_str()};
    auto t = Clock::now();
    PGresult *r = PQexecPrepared(c, "cp", 1, v, nullptr, nullptr, 0);
    double e = Since(t) * 1000;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) Die(PQresultErrorMessage(r));
    if (i >= 5) ms.push_back(e);  // the first calls warm caches
    std::string doc = PQgetvalue(r, 0, 0);
    bytes = doc.size();
    buckets = 0;
    for (size_t pos = 0; (pos = doc.find("\"bucket\"", pos)) != std::string::npos; pos++) buckets++;
    PQclear(r);
  }
  double sum = 0;
  for (double x : ms) sum += x;
  printf("calls=%d buckets=%zu doc_bytes=%zu median_ms=%.2f p99_ms=%.2f mean_ms=%.2f\n", calls,
         buckets, bytes, Percentile(ms, 0.5), Percentile(ms, 0.99), sum / double(ms.size()));
  return 0;
}

int Paging(PGconn *c, const std::map<std::string, std::string> &a) {
  std::string bucket = a.count("bucket") ? a.at("bucket") : "";
  int page = a.count("page") ? atoi(a.at("page").c_str()) : 10000;
  if (bucket.empty()) Die("paging needs --bucket");
  PGresult *p = PQprepare(c, "page",
                          "SELECT op_id, op, object_type, object_id, data, checksum "
                          "FROM syncline.bucket_data($1, $2, NULL, $3)",
                          3, nullptr);
  if (PQresultStatus(p) != PGRES_COMMAND_OK) Die(PQresultErrorMessage(p));
  PQclear(p);
  std::string after = "0", page_s = std::to_string(page);
  long long ops = 0, pages = 0;
  size_t bytes = 0;
  auto t0 = Clock::now();
  while (true) {
    const char *v[] = {bucket.c_str(), after.c_str(), page_s.c_str()};
    PGresult *r = PQexecPrepared(c, "page", 3, v, nullptr, nullptr, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) Die(PQresultErrorMessage(r));
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) bytes += size_t(PQgetlength(r, i, 4));
    ops += n;
    pages++;
    if (n > 0) after = PQgetvalue(r, n - 1, 0);
    PQclear(r);
    if (n < page) break;
  }
  double s = Since(t0);
  printf("ops=%lld pages=%lld data_mb=%.1f seconds=%.3f ops_per_s=%.0f\n", ops, pages,
         double(bytes) / 1e6, s, double(ops) / s);
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) Die("usage: syncline_bench oplog|checkpoint|paging [--key value ...]");
  std::string mode = argv[1];
  std::map<std::string, std::string> a;
  for (int i = 2; i < argc; i++) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) Die("unexpected argument " + k);
    k = k.substr(2);
    if (k == "worker" || k == "plain")
      a[k] = "1";
    else if (i + 1 < argc)
      a[k] = argv[++i];
    else
      Die("missing value for --" + k);
  }
  PGconn *c = Connect(a.count("conninfo") ? a.at("conninfo") : "");
  int rc;
  if (mode == "oplog")
    rc = OpLog(c, a);
  else if (mode == "checkpoint")
    rc = Checkpoint(c, a);
  else if (mode == "paging")
    rc = Paging(c, a);
  else
    Die("unknown mode " + mode);
  PQfinish(c);
  return rc;
}
