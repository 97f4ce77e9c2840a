// The database side of the gateway: a pool of non-blocking libpq connections
// and one LISTEN connection, driven by their own thread so that the
// websocket loop never waits on Postgres. Results come back to the loop
// thread as callbacks, run by RunCompletions() after wake() was called.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gateway/fair_queue.hpp"

namespace syncline::gateway {

struct PgResultDeleter {
  void operator()(PGresult *r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// Outcome of one query: either a result with PGRES_TUPLES_OK / COMMAND_OK or
// an error text (and whether it came from a lost or missing connection).
struct QueryReply {
  PgResult result;
  std::string error;
  std::string sqlstate;
  bool unavailable = false;  // no connection / connection lost: worth retrying later
  double seconds = 0;        // time from send to result
  bool ok() const { return error.empty(); }
};

class Database {
 public:
  struct Handlers {
    std::function<void()> wake;                              // any thread: wake the loop
    std::function<void(const std::string &payload)> notify;  // loop thread
    std::function<void(bool connected)> listener_state;      // loop thread
  };
  struct Stats {
    int pool_size = 0;
    int pool_connected = 0;
    int pool_busy = 0;
    size_t queued = 0;
    bool listener_connected = false;
    uint64_t queries = 0;
    uint64_t query_errors = 0;
    uint64_t reconnects = 0;
  };

  // Settings every gateway session gets (0 = the server's default).
  struct SessionSettings {
    int statement_timeout_ms = 0;
    int lock_timeout_ms = 0;
  };

  Database(std::string conninfo, int pool_size, Handlers handlers, SessionSettings settings);
  ~Database();
  Database(const Database &) = delete;
  Database &operator=(const Database &) = delete;

  void Start();
  void Stop();

  // Queues a query with text parameters; `done` runs on the loop thread.
  // urgent queries jump the queue (live fan-out ahead of per-client catch-ups). The others
  // take turns by `owner` (the token subject; "" for the gateway's own), so one user's many
  // requests cannot starve another user's.
  void Query(std::string sql, std::vector<std::string> params,
             std::function<void(QueryReply &)> done, bool urgent = false,
             const std::string &owner = "");

  // Loop thread: runs the callbacks of finished queries and notifications.
  void RunCompletions();

  Stats stats() const;
  bool healthy() const { return pool_connected_ > 0 && listener_connected_; }

 private:
  struct Task {
    std::string sql;
    std::vector<std::string> params;
    std::function<void(QueryReply &)> done;
    int attempts = 0;
  };
  enum class ConnState {
    kDown,        // no connection; next_attempt says when to try again
    kConnecting,  // PQconnectStartParams/PQconnectPoll in progress
    kListening,   // listener: LISTEN syncline sent, waiting for its result
    kReady,
  };
  struct Conn {
    PGconn *pg = nullptr;
    ConnState state = ConnState::kDown;
    PostgresPollingStatusType poll = PGRES_POLLING_WRITING;  // what PQconnectPoll waits for
    std::chrono::steady_clock::time_point connect_deadline{};
    std::unique_ptr<Task> task;  // in flight
    bool flushing = false;
    PgResult first_result;
    std::string error, sqlstate;
    std::chrono::steady_clock::time_point sent_at;
    std::chrono::steady_clock::time_point next_attempt{};
    std::chrono::milliseconds backoff{100};
    std::unordered_set<std::string> prepared;  // statement names prepared on this connection
    bool preparing = false;                    // the in-flight command is the task's Prepare
  };

  void ThreadMain();
  void StartConnect(Conn *c, bool listener);
  void ContinueConnect(Conn *c, bool listener);
  void ConnectFailed(Conn *c, bool listener, const std::string &why);
  void Connected(Conn *c, bool listener);
  void OnListenerSetup(Conn *c);
  void Disconnect(Conn *c, const char *why, bool listener);
  void Dispatch(Conn *c);
  void SendExecute(Conn *c, const std::string &name);
  void OnReadable(Conn *c);
  void Finish(Conn *c);
  void FailTask(std::unique_ptr<Task> task, const std::string &error, bool unavailable);
  void Post(std::function<void()> fn);

  const std::string conninfo_;
  const int pool_size_;
  const SessionSettings settings_;
  Handlers handlers_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;  // eventfd: new tasks or stop

  mutable std::mutex mutex_;
  FairQueue<std::unique_ptr<Task>> tasks_;     // guarded by mutex_
  std::vector<std::function<void()>> outbox_;  // guarded by mutex_

  // Owned by the database thread.
  // Every query is a fixed SQL text with parameters: each is prepared once per
  // connection under a name of its own, so Postgres parses and plans it once.
  std::unordered_map<std::string, std::string> statement_names_;
  std::vector<Conn> pool_;
  Conn listener_;
  bool ever_tried_ = false;

  std::atomic<int> pool_connected_{0};
  std::atomic<int> pool_busy_{0};
  std::atomic<bool> listener_connected_{false};
  std::atomic<uint64_t> queries_{0}, query_errors_{0}, reconnects_{0};
};

}  // namespace syncline::gateway
