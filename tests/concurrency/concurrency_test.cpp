// Concurrency test for Syncline's commit-ordered op log.
//
// Property under test: op ids increase in the order ops become visible. A
// reader that holds everything up to checkpoint N never later finds a new op
// with id <= N, and a transaction left idle in transaction does not hold back
// other transactions' ops.
//
// In a fresh database (syncline_conc_<seed>, dropped at the end unless
// --keep) this program runs, for --seconds T:
//   * W writer threads doing random inserts / updates / owner moves / key
//     changes / deletes in transactions that sleep between the write and the
//     COMMIT (so commits happen out of order), ~10% ROLLBACKs, savepoints
//     rolled back, and rare TRUNCATEs of the global bucket's table;
//   * one connection that writes, then stays idle in transaction for most of
//     the run, and commits near the end;
//   * a flusher calling syncline.flush() every few ms (the test database has
//     no background worker) and a compactor calling syncline.compact();
//   * a reader that keeps a replica of every bucket in the checkpoint from
//     checkpoint + bucket_data paging, verifies checksums at every complete
//     checkpoint, and checks it never receives an op <= a checkpoint it has
//     already completed (and, every 10th round, that no such op was stored
//     behind its back); about once a second it also syncs a new client from
//     scratch, which reads what compaction left (MOVE, CLEAR);
//   * a client writing through syncline.apply_writes: once the reader has
//     completed a batch's write checkpoint, the replica must show the batch.
// At the end everything is committed and flushed, the reader pulls a final
// checkpoint and its replica must equal the tables.
//
// Connection: libpq environment (PGHOST, PGPORT, PGUSER, ...) or --conninfo.
// Closing line: "N passed, M failed" (one per named check); exit 1 on failure.
#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Minimal JSON reader: enough for checkpoint documents and row data.

struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  std::string text;  // number literal, string value, or "true"/"false"
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;

  const Json *Get(const std::string &key) const {
    for (const auto &f : fields)
      if (f.first == key) return &f.second;
    return nullptr;
  }
  // Canonical text: keys in the order given, no whitespace, strings re-escaped
  // minimally. Two documents with equal Canon() hold the same values.
  std::string Canon() const {
    switch (kind) {
      case kNull:
        return "null";
      case kBool:
        return text;
      case kNumber:
        return text;
      case kString:
        return Quote(text);
      case kArray: {
        std::string s = "[";
        for (size_t i = 0; i < items.size(); i++) s += (i ? "," : "") + items[i].Canon();
        return s + "]";
      }
      case kObject: {
        std::string s = "{";
        for (size_t i = 0; i < fields.size(); i++)
          s += (i ? "," : "") + Quote(fields[i].first) + ":" + fields[i].second.Canon();
        return s + "}";
      }
    }
    return "";
  }
  static std::string Quote(const std::string &v) {
    std::string s = "\"";
    for (unsigned char c : v) {
      if (c == '"' || c == '\\') {
        s += '\\';
        s += char(c);
      } else if (c < 0x20) {
        char buf[8];
        snprintf(buf, sizeof buf, "\\u%04x", c);
        s += buf;
      } else {
        s += char(c);
      }
    }
    return s + "\"";
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string &s) : s_(s) {}
  Json Parse() {
    Json v = Value();
    Ws();
    if (i_ != s_.size()) Fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void Fail(const char *what) {
    throw std::runtime_error(std::string("bad JSON (") + what + ") at " + std::to_string(i_) +
                             ": " + s_.substr(0, 200));
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r'))
      i_++;
  }
  bool Eat(char c) {
    Ws();
    if (i_ < s_.size() && s_[i_] == c) {
      i_++;
      return true;
    }
    return false;
  }
  static void AppendUtf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  uint32_t Hex4() {
    if (i_ + 4 > s_.size()) Fail("short \\u escape");
    uint32_t v = uint32_t(std::stoul(s_.substr(i_, 4), nullptr, 16));
    i_ += 4;
    return v;
  }
  std::string String() {
    if (!Eat('"')) Fail("expected string");
    std::string out;
    while (true) {
      if (i_ >= s_.size()) Fail("unterminated string");
      char c = s_[i_++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) Fail("bad escape");
      char e = s_[i_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp = Hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i_ + 1 < s_.size() && s_[i_] == '\\' &&
              s_[i_ + 1] == 'u') {
            i_ += 2;
            uint32_t lo = Hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          AppendUtf8(out, cp);
          break;
        }
        default:
          Fail("bad escape");
      }
    }
    return out;
  }
  Json Value() {
    Ws();
    if (i_ >= s_.size()) Fail("unexpected end");
    Json v;
    char c = s_[i_];
    if (c == '{') {
      i_++;
      v.kind = Json::kObject;
      if (Eat('}')) return v;
      do {
        std::string k = String();
        if (!Eat(':')) Fail("expected :");
        v.fields.emplace_back(k, Value());
      } while (Eat(','));
      if (!Eat('}')) Fail("expected }");
    } else if (c == '[') {
      i_++;
      v.kind = Json::kArray;
      if (Eat(']')) return v;
      do v.items.push_back(Value());
      while (Eat(','));
      if (!Eat(']')) Fail("expected ]");
    } else if (c == '"') {
      v.kind = Json::kString;
      v.text = String();
    } else if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
    } else if (s_.compare(i_, 4, "true") == 0) {
      v.kind = Json::kBool;
      v.text = "true";
      i_ += 4;
    } else if (s_.compare(i_, 5, "false") == 0) {
      v.kind = Json::kBool;
      v.text = "false";
      i_ += 5;
    } else {
      v.kind = Json::kNumber;
      size_t start = i_;
      while (i_ < s_.size() && strchr("+-0123456789.eE", s_[i_])) i_++;
      if (start == i_) Fail("unexpected character");
      v.text = s_.substr(start, i_ - start);
    }
    return v;
  }
  const std::string &s_;
  size_t i_ = 0;
};

Json ParseJson(const std::string &s) { return JsonParser(s).Parse(); }

// ---------------------------------------------------------------------------
// Checks and their outcome.

class Checks {
 public:
  void Declare(const std::string &name) {
    std::lock_guard<std::mutex> g(mu_);
    if (!failures_.count(name)) {
      order_.push_back(name);
      failures_[name] = 0;
    }
  }
  void Fail(const std::string &name, const std::string &message) {
    std::lock_guard<std::mutex> g(mu_);
    if (!failures_.count(name)) order_.push_back(name);
    long n = ++failures_[name];
    if (n <= 8) printf("FAIL [%s] %s\n", name.c_str(), message.c_str());
    if (n == 9) printf("FAIL [%s] (further failures of this check not shown)\n", name.c_str());
    fflush(stdout);
  }
  int Report() {
    std::lock_guard<std::mutex> g(mu_);
    int passed = 0, failed = 0;
    for (const auto &name : order_) {
      long n = failures_[name];
      printf("%-28s %s", name.c_str(), n == 0 ? "ok" : "FAILED");
      if (n) printf(" (%ld violations)", n);
      printf("\n");
      (n == 0 ? passed : failed)++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> order_;
  std::map<std::string, long> failures_;
};

Checks g_checks;

// Named checks.
const char *kSetup = "setup";
const char *kOrder = "op order within bucket";
const char *kNoLateOps = "no op below checkpoint";
const char *kLateScan = "late-op scan";
const char *kChecksums = "checksums at checkpoint";
const char *kFreshChecksums = "checksums from scratch";
const char *kCheckpointMonotonic = "checkpoint monotonic";
const char *kIdleNotBlocking = "idle txn does not block";
const char *kIdleRowSynced = "idle txn row synced";
const char *kUnexpectedErrors = "no unexpected SQL errors";
const char *kFinalEqual = "final replica == tables";
const char *kProgress = "writers made progress";
const char *kWriteCheckpoint = "write checkpoints";

// ---------------------------------------------------------------------------
// libpq helpers.

std::string g_conninfo;  // base connection string ("" = libpq environment)

struct PgResultDeleter {
  void operator()(PGresult *r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, PgResultDeleter>;

class SqlError : public std::runtime_error {
 public:
  SqlError(const std::string &msg, std::string state)
      : std::runtime_error(msg), sqlstate(std::move(state)) {}
  std::string sqlstate;
};

class Conn {
 public:
  explicit Conn(const std::string &dbname) {
    const char *keys[] = {"dbname", "dbname", "application_name", nullptr};
    const char *vals[] = {g_conninfo.c_str(), dbname.c_str(), "syncline_concurrency_test", nullptr};
    conn_ = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(conn_);
      PQfinish(conn_);
      conn_ = nullptr;
      throw std::runtime_error("connect to " + dbname + " failed: " + msg);
    }
    PQsetNoticeProcessor(
        conn_, [](void *, const char *) {}, nullptr);
    Exec("SET statement_timeout = '120s'");
  }
  ~Conn() {
    if (conn_) PQfinish(conn_);
  }
  Conn(const Conn &) = delete;
  Conn &operator=(const Conn &) = delete;

  Result Exec(const std::string &sql, const std::vector<std::string> &params = {}) {
    std::vector<const char *> p;
    for (const auto &s : params) p.push_back(s.c_str());
    Result r(PQexecParams(conn_, sql.c_str(), int(p.size()), nullptr,
                          p.empty() ? nullptr : p.data(), nullptr, nullptr, 0));
    ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      const char *state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
      std::string msg = PQresultErrorMessage(r.get());
      if (msg.empty()) msg = PQerrorMessage(conn_);
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      throw SqlError(msg + " [" + sql.substr(0, 120) + "]", state ? state : "");
    }
    return r;
  }
  std::string Value(const std::string &sql, const std::vector<std::string> &params = {}) {
    Result r = Exec(sql, params);
    if (PQntuples(r.get()) < 1 || PQgetisnull(r.get(), 0, 0)) return "";
    return PQgetvalue(r.get(), 0, 0);
  }
  // Best effort, for cleanup paths.
  void TryExec(const std::string &sql) {
    try {
      Exec(sql);
    } catch (const std::exception &) {
    }
  }

 private:
  PGconn *conn_ = nullptr;
};

// ---------------------------------------------------------------------------
// Test configuration and shared state.

struct Options {
  uint64_t seed = 1;
  int writers = 4;
  double seconds = 10;
  bool keep = false;
  int prepopulate = 40;
  bool naive_flush = false;
  int flushers = 2;      // threads calling syncline.flush(); 0: rely on the background worker
  std::string database;  // default syncline_conc_<seed>  // self-check: a deliberately wrong
                         // flusher the test must catch
};

Options g_opt;
std::string g_db;
const int kMaxItemId = 300;
const int kMaxTagId = 40;
const int kIdleItemId = 1000000;               // outside the writers' id range
const char *kOwners[] = {"a", "b", "c", "d"};  // "d" is not in the parameter query's result

std::atomic<bool> g_stop_writers{false};
std::atomic<bool> g_stop_background{false};
// Odd while a compact() call is running; bumped before and after each call.
std::atomic<long> g_compact_epoch{0};
std::atomic<long> g_compaction_resyncs{0};
std::atomic<long> g_commits{0}, g_rollbacks{0}, g_retries{0}, g_flushed{0}, g_compactions{0};

Clock::time_point g_start;
double Elapsed() { return std::chrono::duration<double>(Clock::now() - g_start).count(); }

void SleepMs(double ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::microseconds(int64_t(ms * 1000)));
}

// Errors a correct concurrent workload may hit; the transaction is rolled back.
bool IsExpectedConflict(const std::string &state) {
  return state == "40P01" /* deadlock */ || state == "40001" /* serialization */ ||
         state == "23505" /* unique violation on key change */ ||
         state == "55P03" /* lock not available */;
}

std::string RandomNote(std::mt19937_64 &rng) {
  static const char *pieces[] = {"plain",       "with \"quotes\"", "back\\slash", "tab\there",
                                 "new\nline",   "ünïcödé ✓",       "emoji 😀",     "",
                                 "{json:like}", "comma, separated"};
  std::string s = pieces[rng() % (sizeof pieces / sizeof *pieces)];
  s += " #" + std::to_string(rng() % 1000);
  return s;
}

// ---------------------------------------------------------------------------
// Writers.

void RunOneWrite(Conn &c, std::mt19937_64 &rng) {
  auto id = [&] { return std::to_string(1 + rng() % kMaxItemId); };
  auto owner = [&] { return std::string(kOwners[rng() % 4]); };
  auto val = [&] { return std::to_string(int(rng() % 2000) - 1000); };
  int kind = int(rng() % 100);
  if (kind < 25) {
    c.Exec(
        "INSERT INTO items (id, owner, val, note) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, val = EXCLUDED.val, "
        "note = EXCLUDED.note",
        {id(), owner(), val(), RandomNote(rng)});
  } else if (kind < 40) {
    c.Exec("UPDATE items SET val = val + 1 WHERE id = $1", {id()});
  } else if (kind < 52) {
    c.Exec("UPDATE items SET owner = $2 WHERE id = $1", {id(), owner()});  // moves between buckets
  } else if (kind < 62) {
    c.Exec("DELETE FROM items WHERE id = $1", {id()});
  } else if (kind < 66) {
    c.Exec("UPDATE items SET note = NULL, val = val WHERE id = $1", {id()});
  } else if (kind < 70) {
    std::string lo = id();
    c.Exec("UPDATE items SET val = val - 1 WHERE id BETWEEN $1::int AND $1::int + 4", {lo});
  } else if (kind < 73) {
    // Primary key change: the old object goes, a new one comes.
    c.Exec(
        "UPDATE items SET id = $2 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM items WHERE id = $2)",
        {id(), id()});
  } else if (kind < 78) {
    // Work undone by a rolled-back subtransaction must never be synced.
    c.Exec("SAVEPOINT s");
    c.Exec(
        "INSERT INTO items (id, owner, val, note) VALUES ($1, $2, $3, 'savepoint') "
        "ON CONFLICT (id) DO UPDATE SET val = EXCLUDED.val, note = 'savepoint'",
        {id(), owner(), val()});
    c.Exec("ROLLBACK TO SAVEPOINT s");
  } else if (kind < 90) {
    c.Exec(
        "INSERT INTO tags (id, label, weight) VALUES ($1, $2, $3) "
        "ON CONFLICT (id) DO UPDATE SET label = EXCLUDED.label, weight = EXCLUDED.weight",
        {std::to_string(1 + rng() % kMaxTagId), RandomNote(rng), std::to_string(rng() % 100)});
  } else if (kind < 99) {
    c.Exec("DELETE FROM tags WHERE id = $1", {std::to_string(1 + rng() % kMaxTagId)});
  } else if (rng() % 4 == 0) {
    c.Exec("SET LOCAL lock_timeout = '200ms'");
    c.Exec("TRUNCATE tags");
  }
}

void WriterThread(int index) {
  std::mt19937_64 rng(g_opt.seed * 1000003 + uint64_t(index) * 7919);
  std::unique_ptr<Conn> c;
  try {
    c = std::make_unique<Conn>(g_db);
  } catch (const std::exception &e) {
    g_checks.Fail(kUnexpectedErrors, std::string("writer: ") + e.what());
    return;
  }
  while (!g_stop_writers.load()) {
    try {
      c->Exec("BEGIN");
      int statements = 1 + int(rng() % 3);
      for (int i = 0; i < statements; i++) RunOneWrite(*c, rng);
      SleepMs(double(rng() % 25000) / 1000.0);  // commits land out of order
      if (rng() % 10 == 0) {
        c->Exec("ROLLBACK");
        g_rollbacks++;
      } else {
        c->Exec("COMMIT");
        g_commits++;
      }
    } catch (const SqlError &e) {
      c->TryExec("ROLLBACK");
      if (IsExpectedConflict(e.sqlstate))
        g_retries++;
      else
        g_checks.Fail(kUnexpectedErrors,
                      std::string("writer ") + std::to_string(index) + ": " + e.what());
    }
    SleepMs(double(rng() % 3000) / 1000.0);
  }
}

// ---------------------------------------------------------------------------
// The idle-in-transaction connection.

std::atomic<double> g_idle_begin{-1}, g_idle_end{-1};

void IdleThread() {
  try {
    Conn c(g_db);
    SleepMs(g_opt.seconds * 100);  // start at ~10% of the run
    c.Exec("BEGIN");
    c.Exec("INSERT INTO items (id, owner, val, note) VALUES ($1, 'a', 42, 'idle in transaction')",
           {std::to_string(kIdleItemId)});
    c.Exec("INSERT INTO tags (id, label, weight) VALUES ($1, 'idle', 1)",
           {std::to_string(kIdleItemId)});
    g_idle_begin = Elapsed();
    while (Elapsed() < g_opt.seconds * 0.8 && !g_stop_writers.load()) SleepMs(20);
    g_idle_end = Elapsed();
    c.Exec("COMMIT");
  } catch (const std::exception &e) {
    g_checks.Fail(kUnexpectedErrors, std::string("idle connection: ") + e.what());
  }
}

// ---------------------------------------------------------------------------
// Flusher and compactor.

// The textbook mistake (--naive-flush, to show this test catches it): op ids
// are the sequence values the triggers took, so a transaction that commits
// late publishes ops below checkpoints readers already completed.
long NaiveFlush(Conn &c) {
  c.Exec("BEGIN");
  c.Exec("SELECT 1 FROM syncline_internal.state FOR UPDATE");
  std::string n = c.Value(R"sql(
WITH moved AS (DELETE FROM syncline_internal.pending RETURNING *),
ops AS (SELECT * FROM moved WHERE op IN (1, 2)),
ins AS (INSERT INTO syncline_internal.ops (bucket, op_id, op, object_type, object_id, data, checksum)
        SELECT bucket, seq, op, object_type, object_id, data, checksum FROM ops),
st AS (INSERT INTO syncline_internal.bucket_state AS s (bucket, checksum, count, last_op_id)
       SELECT bucket, sum(checksum) % 4294967296, count(*), max(seq) FROM ops GROUP BY bucket
       ON CONFLICT (bucket) DO UPDATE
         SET checksum = (s.checksum + excluded.checksum) % 4294967296,
             count = s.count + excluded.count,
             last_op_id = greatest(s.last_op_id, excluded.last_op_id)),
up AS (UPDATE syncline_internal.state
          SET last_op_id = greatest(last_op_id, (SELECT max(seq) FROM ops))
        WHERE EXISTS (SELECT 1 FROM ops))
SELECT count(*) FROM ops)sql");
  c.Exec("COMMIT");
  return std::atol(n.c_str());
}

void FlusherThread() {
  try {
    Conn c(g_db);
    while (!g_stop_background.load()) {
      if (g_opt.naive_flush)
        g_flushed += NaiveFlush(c);
      else
        g_flushed += std::atoll(c.Value("SELECT syncline.flush()").c_str());
      SleepMs(2);
    }
  } catch (const std::exception &e) {
    g_checks.Fail(kUnexpectedErrors, std::string("flusher: ") + e.what());
  }
}

void CompactorThread() {
  std::mt19937_64 rng(g_opt.seed * 31 + 5);
  try {
    Conn c(g_db);
    while (!g_stop_background.load()) {
      SleepMs(150 + double(rng() % 400));
      if (g_stop_background.load()) break;
      g_compact_epoch++;
      try {
        c.Exec("SELECT syncline.compact()");
      } catch (...) {
        g_compact_epoch++;
        throw;
      }
      g_compact_epoch++;
      g_compactions++;
    }
  } catch (const std::exception &e) {
    g_checks.Fail(kUnexpectedErrors, std::string("compactor: ") + e.what());
  }
}

// ---------------------------------------------------------------------------
// A client writing through syncline.apply_writes: once the reader has completed
// the batch's write checkpoint, its replica must show the batch's effect. The
// ids it writes (5001..5020) are touched by no one else.

struct WriteExpectation {
  int64_t write_checkpoint = 0;
  std::string object_id;
  std::string owner;  // "" when the batch deleted the row
  std::string val;
  long seq = 0;
};

std::mutex g_expect_mu;
bool g_expect_pending = false;
WriteExpectation g_expect;
std::atomic<long> g_write_batches{0};

void ApiWriterThread() {
  std::mt19937_64 rng(g_opt.seed * 101 + 7);
  const std::string client = "conc-client-" + std::to_string(g_opt.seed);
  try {
    Conn c(g_db);
    for (long seq = 1; !g_stop_writers.load(); seq++) {
      WriteExpectation e;
      e.seq = seq;
      e.object_id = std::to_string(5001 + rng() % 20);
      std::string op;
      if (rng() % 5 == 0) {
        op = R"({"op": "DELETE", "type": "items", "id": )" + e.object_id + "}";
      } else {
        e.owner = kOwners[rng() % 4];
        e.val = std::to_string(rng() % 100000);
        op = R"({"op": "PUT", "type": "items", "id": )" + e.object_id + R"(, "data": {"owner": ")" +
             e.owner + R"(", "val": )" + e.val + R"(, "note": "written by a client"}})";
      }
      std::string batch = R"({"seq": )" + std::to_string(seq) + R"(, "ops": [)" + op + "]}";
      std::string outcome;
      try {
        outcome =
            c.Value("SELECT syncline.apply_writes('{\"sub\": \"conc\"}', $1, $2::jsonb)::text",
                    {client, batch});
      } catch (const SqlError &err) {
        if (IsExpectedConflict(err.sqlstate)) {  // transient: retry the same batch
          seq--;
          continue;
        }
        throw;
      }
      Json o = ParseJson(outcome);
      const Json *status = o.Get("status");
      bool deleting_missing = e.owner.empty() && status && status->text == "rejected";
      if (!status || (status->text != "applied" && !deleting_missing)) {
        g_checks.Fail(kWriteCheckpoint, "batch " + batch + " -> " + outcome);
        continue;
      }
      g_write_batches++;
      std::string w =
          c.Value("SELECT syncline.write_checkpoint($1, $2)", {client, std::to_string(seq)});
      if (w.empty()) {
        g_checks.Fail(kWriteCheckpoint,
                      "no write checkpoint for applied batch " + std::to_string(seq));
        continue;
      }
      e.write_checkpoint = std::atoll(w.c_str());
      {
        std::lock_guard<std::mutex> g(g_expect_mu);
        g_expect = e;
        g_expect_pending = true;
      }
      // Wait for the reader to reach the write checkpoint and check it.
      auto t0 = Clock::now();
      while (true) {
        {
          std::lock_guard<std::mutex> g(g_expect_mu);
          if (!g_expect_pending) break;
        }
        if (g_stop_background.load() ||
            std::chrono::duration<double>(Clock::now() - t0).count() > 15) {
          std::lock_guard<std::mutex> g(g_expect_mu);
          if (g_expect_pending && !g_stop_background.load())
            g_checks.Fail(kWriteCheckpoint,
                          "reader did not reach write checkpoint " + w + " within 15 s");
          g_expect_pending = false;
          break;
        }
        SleepMs(2);
      }
    }
  } catch (const std::exception &e) {
    g_checks.Fail(kUnexpectedErrors, std::string("client writer: ") + e.what());
  }
}

// ---------------------------------------------------------------------------
// The reader: a client replica kept from checkpoints and bucket_data.

struct BucketReplica {
  std::map<std::string, std::string> objects;  // object_id -> data JSON text
  std::map<std::string, std::string> types;    // object_id -> object_type
  uint32_t checksum = 0;
  int64_t last_received = 0;       // highest op id received
  std::set<int64_t> received_ids;  // every op id ever received (for the late-op scan)
  bool in_completed = false;       // part of a checkpoint this reader completed
};

struct CheckpointBucket {
  std::string id;
  uint32_t checksum = 0;
};

struct Reader {
  std::map<std::string, BucketReplica> buckets;
  int64_t completed = 0;  // last_op_id of the last checkpoint fully applied
  std::vector<std::pair<double, int64_t>> history;  // (time, completed checkpoint)
  long rounds = 0, ops_received = 0;
  std::map<std::string, long> received_by_kind;  // PUT, REMOVE, MOVE, CLEAR
  const char *checksum_check = kChecksums;
  std::mt19937_64 rng{g_opt.seed * 77 + 1};

  // One round: checkpoint, page every bucket up to it, verify checksums.
  void Round(Conn &c, bool scan) {
    long epoch_before = g_compact_epoch.load();
    Json cp = ParseJson(c.Value("SELECT syncline.checkpoint('{}'::jsonb)::text"));
    const Json *last = cp.Get("last_op_id");
    const Json *list = cp.Get("buckets");
    if (!last || !list || list->kind != Json::kArray)
      throw std::runtime_error("checkpoint without last_op_id/buckets: " + cp.Canon());
    int64_t n = std::atoll(last->text.c_str());
    if (n < completed)
      g_checks.Fail(kCheckpointMonotonic, "checkpoint last_op_id went back from " +
                                              std::to_string(completed) + " to " +
                                              std::to_string(n));
    std::vector<CheckpointBucket> cbs;
    for (const Json &b : list->items) {
      CheckpointBucket cb;
      const Json *id = b.Get("bucket");
      const Json *sum = b.Get("checksum");
      if (!id || !sum) throw std::runtime_error("checkpoint bucket without bucket/checksum");
      cb.id = id->text;
      cb.checksum = uint32_t(std::strtoull(sum->text.c_str(), nullptr, 10));
      const Json *blast = b.Get("last_op_id");
      if (blast && std::atoll(blast->text.c_str()) > n)
        g_checks.Fail(kCheckpointMonotonic, "bucket " + cb.id + " last_op_id " + blast->text +
                                                " > checkpoint last_op_id " + std::to_string(n));
      cbs.push_back(cb);
    }
    std::vector<std::string> mismatched;
    for (const auto &cb : cbs) {
      BucketReplica &r = buckets[cb.id];
      Pull(c, cb.id, r, n);
      if (r.checksum != cb.checksum) mismatched.push_back(cb.id);
    }
    long epoch_after = g_compact_epoch.load();
    bool compaction_overlapped = epoch_before != epoch_after || (epoch_before & 1);
    for (const auto &id : mismatched) {
      const BucketReplica &r = buckets[id];
      uint32_t want = 0;
      for (const auto &cb : cbs)
        if (cb.id == id) want = cb.checksum;
      if (compaction_overlapped) {
        // compact() ran between the checkpoint and the pull and may have folded
        // ops at or below the checkpoint into a CLEAR above it. A client re-fetches
        // the bucket from scratch; so does this reader.
        g_compaction_resyncs++;
        buckets[id] = BucketReplica();
        continue;
      }
      g_checks.Fail(checksum_check, "bucket " + id + " at checkpoint " + std::to_string(n) +
                                        ": replica checksum " + std::to_string(r.checksum) +
                                        " != checkpoint checksum " + std::to_string(want));
    }
    if (scan && !compaction_overlapped) LateScan(c, cbs);
    for (const auto &cb : cbs)
      if (std::find(mismatched.begin(), mismatched.end(), cb.id) == mismatched.end() ||
          !compaction_overlapped)
        buckets[cb.id].in_completed = true;
    completed = std::max(completed, n);
    history.emplace_back(Elapsed(), completed);
    rounds++;
  }

  void Pull(Conn &c, const std::string &bucket, BucketReplica &r, int64_t upto) {
    const int page = 500;
    while (true) {
      Result res = c.Exec(
          "SELECT op_id, op, object_type, object_id, data::text, checksum "
          "FROM syncline.bucket_data($1, $2, $3, $4)",
          {bucket, std::to_string(r.last_received), std::to_string(upto), std::to_string(page)});
      int rows = PQntuples(res.get());
      for (int i = 0; i < rows; i++) {
        int64_t op_id = std::atoll(PQgetvalue(res.get(), i, 0));
        std::string op = PQgetvalue(res.get(), i, 1);
        std::string type = PQgetvalue(res.get(), i, 2);
        std::string oid = PQgetvalue(res.get(), i, 3);
        bool has_data = !PQgetisnull(res.get(), i, 4);
        std::string data = PQgetvalue(res.get(), i, 4);
        uint32_t sum = uint32_t(std::strtoull(PQgetvalue(res.get(), i, 5), nullptr, 10));
        if (op_id <= r.last_received || op_id > upto)
          g_checks.Fail(kOrder, "bucket " + bucket + ": op " + std::to_string(op_id) +
                                    " outside (" + std::to_string(r.last_received) + ", " +
                                    std::to_string(upto) + "]");
        if (op_id <= completed && r.in_completed)
          g_checks.Fail(kNoLateOps, "bucket " + bucket + ": received new op " +
                                        std::to_string(op_id) + " (" + op + " " + oid +
                                        ") after checkpoint " + std::to_string(completed) +
                                        " was complete");
        r.last_received = std::max(r.last_received, op_id);
        r.received_ids.insert(op_id);
        ops_received++;
        received_by_kind[op]++;
        if (op == "PUT") {
          if (!has_data) g_checks.Fail(kOrder, "PUT without data in " + bucket);
          r.objects[oid] = data;
          r.types[oid] = type;
          r.checksum += sum;
        } else if (op == "REMOVE") {
          r.objects.erase(oid);
          r.types.erase(oid);
          r.checksum += sum;
        } else if (op == "MOVE") {
          r.checksum += sum;
        } else if (op == "CLEAR") {
          r.objects.clear();
          r.types.clear();
          r.checksum = sum;
        } else {
          g_checks.Fail(kOrder, "unknown op '" + op + "' in " + bucket);
        }
      }
      if (rows < page) break;
    }
  }

  // Every op id now stored at or below the completed checkpoint must be one
  // this reader has already received (compaction keeps op ids: MOVE keeps its
  // own, CLEAR takes the id of the last op it replaces).
  void LateScan(Conn &c, const std::vector<CheckpointBucket> &cbs) {
    if (completed == 0) return;
    for (const auto &cb : cbs) {
      BucketReplica &r = buckets[cb.id];
      Result res =
          c.Exec("SELECT op_id, op, object_id FROM syncline.bucket_data($1, 0, $2, 100000000)",
                 {cb.id, std::to_string(completed)});
      for (int i = 0; i < PQntuples(res.get()); i++) {
        int64_t op_id = std::atoll(PQgetvalue(res.get(), i, 0));
        if (r.in_completed && !r.received_ids.count(op_id))
          g_checks.Fail(kLateScan, "bucket " + cb.id + ": op " + std::to_string(op_id) + " (" +
                                       PQgetvalue(res.get(), i, 1) + " " +
                                       PQgetvalue(res.get(), i, 2) +
                                       ") appeared at or below checkpoint " +
                                       std::to_string(completed) + " after it was complete");
      }
    }
  }
};

Reader g_reader;

// Called by the reader thread after each round.
void CheckWriteExpectation() {
  std::lock_guard<std::mutex> g(g_expect_mu);
  if (!g_expect_pending || g_reader.completed < g_expect.write_checkpoint) return;
  const WriteExpectation &e = g_expect;
  for (int i = 0; i < 3; i++) {
    std::string bucket = std::string("by_owner[\"") + kOwners[i] + "\"]";
    const auto &objects = g_reader.buckets[bucket].objects;
    auto it = objects.find(e.object_id);
    bool should_hold = e.owner == kOwners[i];
    std::string where = "batch " + std::to_string(e.seq) + " (write checkpoint " +
                        std::to_string(e.write_checkpoint) + ", reader at " +
                        std::to_string(g_reader.completed) + "): ";
    if (should_hold && it == objects.end()) {
      g_checks.Fail(kWriteCheckpoint, where + "item " + e.object_id + " missing from " + bucket);
    } else if (!should_hold && it != objects.end()) {
      g_checks.Fail(kWriteCheckpoint,
                    where + "item " + e.object_id + " still in " + bucket + ": " + it->second);
    } else if (should_hold) {
      try {
        const Json *v = ParseJson(it->second).Get("val");
        if (!v || v->text != e.val)
          g_checks.Fail(kWriteCheckpoint, where + "item " + e.object_id + " is " + it->second +
                                              ", expected val " + e.val);
      } catch (const std::exception &ex) {
        g_checks.Fail(kWriteCheckpoint, where + ex.what());
      }
    }
  }
  g_expect_pending = false;
}
std::map<std::string, long> g_fresh_kinds;  // ops a from-scratch client received, by kind
long g_fresh_clients = 0;

void ReaderThread() {
  try {
    Conn c(g_db);
    auto last_fresh = Clock::now();
    while (!g_stop_background.load()) {
      g_reader.Round(c, g_reader.rounds % 10 == 9);
      CheckWriteExpectation();
      // Now and then a client that starts from scratch: it reads what compaction
      // left (MOVE, CLEAR) and must still match the checkpoint's checksums.
      if (std::chrono::duration<double>(Clock::now() - last_fresh).count() > 1.0) {
        Reader fresh;
        fresh.checksum_check = kFreshChecksums;
        fresh.Round(c, false);
        for (const auto &[kind, n] : fresh.received_by_kind) g_fresh_kinds[kind] += n;
        g_fresh_clients++;
        last_fresh = Clock::now();
      }
      SleepMs(double(g_reader.rng() % 20));
    }
  } catch (const std::exception &e) {
    g_checks.Fail(kUnexpectedErrors, std::string("reader: ") + e.what());
  }
}

// ---------------------------------------------------------------------------
// Final comparison.

// bucket id -> (object_id -> canonical row JSON) as the tables say it should be.
std::map<std::string, std::map<std::string, std::string>> ExpectedBuckets(Conn &c) {
  std::map<std::string, std::map<std::string, std::string>> out;
  for (int i = 0; i < 3; i++) {
    std::string bucket = std::string("by_owner[\"") + kOwners[i] + "\"]";
    auto &m = out[bucket];
    Result r =
        c.Exec("SELECT id::text, row_to_json(i)::text FROM items i WHERE owner = $1", {kOwners[i]});
    for (int k = 0; k < PQntuples(r.get()); k++)
      m[PQgetvalue(r.get(), k, 0)] = ParseJson(PQgetvalue(r.get(), k, 1)).Canon();
  }
  auto &m = out["all_tags[]"];
  Result r = c.Exec("SELECT id::text, row_to_json(t)::text FROM tags t");
  for (int k = 0; k < PQntuples(r.get()); k++)
    m[PQgetvalue(r.get(), k, 0)] = ParseJson(PQgetvalue(r.get(), k, 1)).Canon();
  return out;
}

void CompareFinal(Conn &c) {
  auto expected = ExpectedBuckets(c);
  for (const auto &[bucket, rows] : expected) {
    auto it = g_reader.buckets.find(bucket);
    if (it == g_reader.buckets.end()) {
      g_checks.Fail(kFinalEqual, "bucket " + bucket + " never appeared in a checkpoint");
      continue;
    }
    const BucketReplica &r = it->second;
    for (const auto &[oid, json] : rows) {
      auto o = r.objects.find(oid);
      if (o == r.objects.end()) {
        g_checks.Fail(kFinalEqual, "bucket " + bucket + ": object " + oid +
                                       " missing from replica (table has " + json + ")");
        continue;
      }
      std::string got;
      try {
        got = ParseJson(o->second).Canon();
      } catch (const std::exception &e) {
        g_checks.Fail(kFinalEqual, "bucket " + bucket + ": object " + oid + ": " + e.what());
        continue;
      }
      if (got != json)
        g_checks.Fail(kFinalEqual, "bucket " + bucket + ": object " + oid + ": replica " +
                                       o->second + " != table " + json);
    }
    for (const auto &[oid, data] : r.objects)
      if (!rows.count(oid))
        g_checks.Fail(kFinalEqual, "bucket " + bucket + ": replica has object " + oid + " (" +
                                       data + ") the table does not");
  }
  for (const auto &[bucket, r] : g_reader.buckets)
    if (!expected.count(bucket))
      g_checks.Fail(kFinalEqual, "replica holds unexpected bucket " + bucket + " (" +
                                     std::to_string(r.objects.size()) + " objects)");

  // The idle transaction's item must have arrived (writers never touch its id;
  // its tag may be gone again through a later TRUNCATE).
  const std::string idle = std::to_string(kIdleItemId);
  if (!g_reader.buckets["by_owner[\"a\"]"].objects.count(idle))
    g_checks.Fail(kIdleRowSynced,
                  "the item written by the idle-in-transaction connection is not in the replica");
}

// During the idle-in-transaction period, completed checkpoints must advance.
void CheckIdlePeriod() {
  double b = g_idle_begin.load(), e = g_idle_end.load();
  if (b < 0 || e < 0) {
    g_checks.Fail(kIdleNotBlocking, "idle-in-transaction period never happened");
    return;
  }
  int64_t first = -1, lastv = -1;
  long n = 0;
  for (const auto &[t, v] : g_reader.history) {
    if (t < b + 0.2 || t > e) continue;  // let writers that started before settle
    if (first < 0) first = v;
    lastv = v;
    n++;
  }
  char msg[256];
  snprintf(msg, sizeof msg,
           "idle in transaction from %.2fs to %.2fs: %ld checkpoints, last_op_id %" PRId64
           " -> %" PRId64,
           b, e, n, first, lastv);
  printf("%s\n", msg);
  if (n < 2 || lastv <= first) g_checks.Fail(kIdleNotBlocking, msg);
}

void Setup(Conn &c) {
  c.Exec("CREATE EXTENSION syncline");
  c.Exec(
      "CREATE TABLE items (id int PRIMARY KEY, owner text NOT NULL, val int NOT NULL, note text)");
  c.Exec("CREATE TABLE tags (id int PRIMARY KEY, label text, weight int)");
  c.Exec("GRANT SELECT, INSERT, UPDATE, DELETE ON items TO syncline_writer");
  // Rows that exist before the rules: the initial snapshot must carry them.
  std::mt19937_64 rng(g_opt.seed * 13 + 3);
  for (int i = 0; i < g_opt.prepopulate; i++) {
    c.Exec("INSERT INTO items VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
           {std::to_string(1 + rng() % kMaxItemId), kOwners[rng() % 4], std::to_string(rng() % 100),
            RandomNote(rng)});
    if (i % 4 == 0)
      c.Exec("INSERT INTO tags VALUES ($1, 'pre', 0) ON CONFLICT DO NOTHING",
             {std::to_string(1 + rng() % kMaxTagId)});
  }
  c.Exec(
      "SELECT syncline.create_bucket('by_owner', "
      "'SELECT o AS owner FROM (VALUES (''a''), (''b''), (''c'')) v(o)', "
      "ARRAY['SELECT * FROM items WHERE owner = bucket.owner'])");
  c.Exec("SELECT syncline.create_bucket('all_tags', NULL, ARRAY['SELECT * FROM tags'])");
}

// Flushes until nothing is left staged (snapshot jobs may take several calls).
void FlushAll(Conn &c) {
  if (g_opt.naive_flush) {
    NaiveFlush(c);
    return;
  }
  for (int i = 0; i < 1000; i++) {
    long n = std::atol(c.Value("SELECT syncline.flush()").c_str());
    if (n == 0) {
      // One more after a short pause, in case a snapshot job is between steps.
      SleepMs(20);
      if (std::atol(c.Value("SELECT syncline.flush()").c_str()) == 0) return;
    }
  }
}

void Usage() {
  fprintf(stderr,
          "usage: concurrency [--seed S] [--writers W] [--seconds T] [--prepopulate N]\n"
          "                   [--conninfo STR] [--keep] [--naive-flush] [--flushers N]\n"
          "                   [--database NAME]\n"
          "--database: created (dropped first) and dropped at the end; name the database\n"
          "the background worker serves (syncline.database) to test it too.\n"
          "--flushers N: threads calling syncline.flush() (default 2; 0 = worker only).\n"
          "--naive-flush replaces syncline.flush() with the classic wrong design (op id =\n"
          "trigger-time sequence value); the test must then fail.\n"
          "Connects with the libpq environment (PGHOST, PGPORT, PGUSER) unless --conninfo.\n");
}

}  // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage();
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--seed")
      g_opt.seed = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--writers")
      g_opt.writers = std::atoi(next().c_str());
    else if (a == "--seconds")
      g_opt.seconds = std::atof(next().c_str());
    else if (a == "--prepopulate")
      g_opt.prepopulate = std::atoi(next().c_str());
    else if (a == "--conninfo")
      g_conninfo = next();
    else if (a == "--keep")
      g_opt.keep = true;
    else if (a == "--naive-flush")
      g_opt.naive_flush = true;
    else if (a == "--flushers")
      g_opt.flushers = std::atoi(next().c_str());
    else if (a == "--database")
      g_opt.database = next();
    else {
      Usage();
      return 2;
    }
  }
  if (g_opt.naive_flush) g_opt.prepopulate = 0;  // the initial copy is syncline.flush()'s job
  if (g_opt.writers < 1 || g_opt.seconds <= 0) {
    Usage();
    return 2;
  }
  g_db = g_opt.database.empty() ? "syncline_conc_" + std::to_string(g_opt.seed) : g_opt.database;
  printf("concurrency test: seed %" PRIu64 ", %d writers, %.1f s, database %s\n", g_opt.seed,
         g_opt.writers, g_opt.seconds, g_db.c_str());
  fflush(stdout);
  for (const char *name : {kSetup, kOrder, kNoLateOps, kLateScan, kChecksums, kFreshChecksums,
                           kCheckpointMonotonic, kIdleNotBlocking, kIdleRowSynced, kWriteCheckpoint,
                           kUnexpectedErrors, kFinalEqual, kProgress})
    g_checks.Declare(name);

  std::unique_ptr<Conn> admin;
  try {
    admin = std::make_unique<Conn>(getenv("PGDATABASE") ? getenv("PGDATABASE") : "postgres");
    admin->Exec("DROP DATABASE IF EXISTS " + g_db + " WITH (FORCE)");
    admin->Exec("CREATE DATABASE " + g_db);
    Conn c(g_db);
    Setup(c);
  } catch (const std::exception &e) {
    g_checks.Fail(kSetup, e.what());
    if (admin && !g_opt.keep) admin->TryExec("DROP DATABASE IF EXISTS " + g_db + " WITH (FORCE)");
    g_checks.Report();
    return 1;
  }

  g_start = Clock::now();
  std::vector<std::thread> writers, background;
  // Two flushers by default: concurrent flush() calls must serialize safely.
  for (int i = 0; i < g_opt.flushers; i++) background.emplace_back(FlusherThread);
  background.emplace_back(CompactorThread);
  background.emplace_back(ReaderThread);
  std::thread idle(IdleThread);
  std::thread api_writer(ApiWriterThread);
  for (int i = 0; i < g_opt.writers; i++) writers.emplace_back(WriterThread, i);

  while (Elapsed() < g_opt.seconds) SleepMs(50);
  g_stop_writers = true;
  for (auto &t : writers) t.join();
  idle.join();
  g_stop_background = true;
  api_writer.join();
  for (auto &t : background) t.join();

  try {
    Conn c(g_db);
    FlushAll(c);
    g_reader.Round(c, true);
    // A second round must find nothing new and still agree.
    FlushAll(c);
    g_reader.Round(c, true);
    CheckIdlePeriod();
    CompareFinal(c);
  } catch (const std::exception &e) {
    g_checks.Fail(kFinalEqual, e.what());
  }
  if (g_commits.load() < 10)
    g_checks.Fail(kProgress,
                  "only " + std::to_string(g_commits.load()) + " transactions committed");
  if (!g_opt.naive_flush && g_write_batches.load() < 3)
    g_checks.Fail(kWriteCheckpoint,
                  "only " + std::to_string(g_write_batches.load()) + " client batches applied");

  printf(
      "commits %ld, rollbacks %ld, conflicts %ld, ops flushed %ld, compactions %ld, "
      "client batches %ld, reader rounds %ld, ops received %ld, last checkpoint %" PRId64
      ", re-fetches after concurrent compaction %ld\n",
      g_commits.load(), g_rollbacks.load(), g_retries.load(), g_flushed.load(),
      g_compactions.load(), g_write_batches.load(), g_reader.rounds, g_reader.ops_received,
      g_reader.completed, g_compaction_resyncs.load());
  printf(
      "ops received by kind: PUT %ld, REMOVE %ld, MOVE %ld, CLEAR %ld; "
      "%ld from-scratch clients: PUT %ld, REMOVE %ld, MOVE %ld, CLEAR %ld\n",
      g_reader.received_by_kind["PUT"], g_reader.received_by_kind["REMOVE"],
      g_reader.received_by_kind["MOVE"], g_reader.received_by_kind["CLEAR"], g_fresh_clients,
      g_fresh_kinds["PUT"], g_fresh_kinds["REMOVE"], g_fresh_kinds["MOVE"], g_fresh_kinds["CLEAR"]);
  if (!g_opt.keep) admin->TryExec("DROP DATABASE IF EXISTS " + g_db + " WITH (FORCE)");
  return g_checks.Report() == 0 ? 0 : 1;
}
