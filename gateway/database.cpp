#include "gateway/database.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace syncline::gateway {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kMaxBackoff{5000};
// A connect attempt that has not finished by then is abandoned (and retried with backoff).
constexpr std::chrono::milliseconds kConnectTimeout{3000};

std::string Trim(const char *text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Database::Database(std::string conninfo, int pool_size, Handlers handlers, SessionSettings settings)
    : conninfo_(std::move(conninfo)),
      pool_size_(pool_size),
      settings_(settings),
      handlers_(std::move(handlers)) {
  pool_.resize(pool_size_);
}

Database::~Database() { Stop(); }

void Database::Start() {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { ThreadMain(); });
}

void Database::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) perror("syncline-gateway: eventfd write");
  thread_.join();
  for (auto &c : pool_) {
    if (c.pg) PQfinish(c.pg);
    c.pg = nullptr;
  }
  if (listener_.pg) PQfinish(listener_.pg);
  listener_.pg = nullptr;
  close(wake_fd_);
  wake_fd_ = -1;
}

void Database::Query(std::string sql, std::vector<std::string> params,
                     std::function<void(QueryReply &)> done, bool urgent,
                     const std::string &owner) {
  auto task = std::make_unique<Task>();
  task->sql = std::move(sql);
  task->params = std::move(params);
  task->done = std::move(done);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (urgent) {
      tasks_.PushUrgent(std::move(task));
    } else {
      tasks_.Push(owner, std::move(task));
    }
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) perror("syncline-gateway: eventfd write");
}

void Database::RunCompletions() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    batch.swap(outbox_);
  }
  for (auto &fn : batch) fn();
}

Database::Stats Database::stats() const {
  Stats s;
  s.pool_size = pool_size_;
  s.pool_connected = pool_connected_;
  s.pool_busy = pool_busy_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.queued = tasks_.size();
  }
  s.listener_connected = listener_connected_;
  s.queries = queries_;
  s.query_errors = query_errors_;
  s.reconnects = reconnects_;
  return s;
}

void Database::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    outbox_.push_back(std::move(fn));
  }
  handlers_.wake();
}

// Startup options for every gateway session: the configured timeouts after whatever options
// the conninfo (or PGOPTIONS) already carries.
static std::string SessionOptions(const std::string &conninfo, int statement_timeout_ms,
                                  int lock_timeout_ms) {
  std::string options;
  if (!conninfo.empty()) {
    if (PQconninfoOption *parsed = PQconninfoParse(conninfo.c_str(), nullptr)) {
      for (PQconninfoOption *o = parsed; o->keyword; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val) options = o->val;
      PQconninfoFree(parsed);
    }
  }
  if (options.empty()) {
    const char *env = getenv("PGOPTIONS");
    if (env) options = env;
  }
  if (statement_timeout_ms > 0)
    options += " -c statement_timeout=" + std::to_string(statement_timeout_ms);
  if (lock_timeout_ms > 0) options += " -c lock_timeout=" + std::to_string(lock_timeout_ms);
  return options;
}

// Begins a non-blocking connect; ContinueConnect drives it as the socket becomes ready, so
// the database thread never waits on a server that is slow or unreachable.
void Database::StartConnect(Conn *c, bool listener) {
  std::string info = conninfo_;
  std::string options =
      SessionOptions(conninfo_, settings_.statement_timeout_ms, settings_.lock_timeout_ms);
  const char *keys[] = {"dbname", "application_name", "options", nullptr};
  const char *values[] = {info.empty() ? nullptr : info.c_str(),
                          listener ? "syncline-gateway-listen" : "syncline-gateway",
                          options.empty() ? nullptr : options.c_str(), nullptr};
  c->pg = PQconnectStartParams(keys, values, /*expand_dbname=*/1);
  if (c->pg == nullptr) {
    ConnectFailed(c, listener, "out of memory");
    return;
  }
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    ConnectFailed(c, listener, Trim(PQerrorMessage(c->pg)));
    return;
  }
  c->state = ConnState::kConnecting;
  c->poll = PGRES_POLLING_WRITING;  // libpq: behave as if PQconnectPoll had asked to write
  c->connect_deadline = Clock::now() + kConnectTimeout;
  c->error.clear();
}

void Database::ContinueConnect(Conn *c, bool listener) {
  c->poll = PQconnectPoll(c->pg);
  if (c->poll == PGRES_POLLING_FAILED) {
    ConnectFailed(c, listener, Trim(PQerrorMessage(c->pg)));
  } else if (c->poll == PGRES_POLLING_OK) {
    Connected(c, listener);
  }
}

void Database::ConnectFailed(Conn *c, bool listener, const std::string &why) {
  if (c->backoff == std::chrono::milliseconds(100) || c->backoff >= kMaxBackoff)
    fprintf(stderr, "syncline-gateway: database connect failed (%s): %s; retrying in %lld ms\n",
            listener ? "listener" : "pool", why.c_str(),
            static_cast<long long>(c->backoff.count()));
  if (c->pg) PQfinish(c->pg);
  c->pg = nullptr;
  c->state = ConnState::kDown;
  c->flushing = false;
  c->next_attempt = Clock::now() + c->backoff;
  c->backoff = std::min(c->backoff * 2, kMaxBackoff);
}

void Database::Connected(Conn *c, bool listener) {
  PQsetnonblocking(c->pg, 1);
  if (listener) {
    c->error.clear();
    if (!PQsendQuery(c->pg, "LISTEN syncline")) {
      ConnectFailed(c, listener, "LISTEN syncline: " + Trim(PQerrorMessage(c->pg)));
      return;
    }
    c->state = ConnState::kListening;
    c->flushing = PQflush(c->pg) == 1;
    return;
  }
  c->state = ConnState::kReady;
  c->backoff = std::chrono::milliseconds(100);
  reconnects_++;
  pool_connected_++;
}

// The listener's LISTEN syncline result: up once it succeeded.
void Database::OnListenerSetup(Conn *c) {
  if (!PQconsumeInput(c->pg)) {
    ConnectFailed(c, true, Trim(PQerrorMessage(c->pg)));
    return;
  }
  while (!PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    if (r == nullptr) {
      if (!c->error.empty()) {
        ConnectFailed(c, true, "LISTEN syncline failed: " + c->error);
        return;
      }
      c->state = ConnState::kReady;
      c->backoff = std::chrono::milliseconds(100);
      reconnects_++;
      listener_connected_ = true;
      Post([this] { handlers_.listener_state(true); });
      return;
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK && c->error.empty())
      c->error = Trim(PQresultErrorMessage(r));
    PQclear(r);
  }
}

void Database::Disconnect(Conn *c, const char *why, bool listener) {
  fprintf(stderr, "syncline-gateway: database %s connection lost: %s\n",
          listener ? "listener" : "pool", why);
  bool was_ready = c->state == ConnState::kReady;
  PQfinish(c->pg);
  c->pg = nullptr;
  c->state = ConnState::kDown;
  c->first_result.reset();
  c->flushing = false;
  c->preparing = false;
  c->prepared.clear();
  c->next_attempt = Clock::now() + c->backoff;
  if (listener) {
    if (was_ready) {
      listener_connected_ = false;
      Post([this] { handlers_.listener_state(false); });
    }
    return;
  }
  if (was_ready) pool_connected_--;
  if (c->task) {
    pool_busy_--;
    // Retried once on another connection. Reads are safe to repeat, and so are writes:
    // apply_writes records each (client_id, seq) and answers a batch it already applied,
    // whose commit may have been lost with the connection, as a duplicate.
    std::unique_ptr<Task> task = std::move(c->task);
    if (++task->attempts < 2) {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.PushUrgent(std::move(task));
    } else {
      FailTask(std::move(task), std::string("database connection lost: ") + why, true);
    }
  }
}

void Database::FailTask(std::unique_ptr<Task> task, const std::string &error, bool unavailable) {
  query_errors_++;
  auto shared = std::shared_ptr<Task>(std::move(task));
  Post([shared, error, unavailable] {
    QueryReply reply;
    reply.error = error;
    reply.unavailable = unavailable;
    shared->done(reply);
  });
}

void Database::Dispatch(Conn *c) {
  c->sent_at = Clock::now();
  c->error.clear();
  c->sqlstate.clear();
  pool_busy_++;
  queries_++;
  auto named = statement_names_.find(c->task->sql);
  if (named == statement_names_.end())
    named = statement_names_
                .emplace(c->task->sql, "syncline_gw_" + std::to_string(statement_names_.size()))
                .first;
  const std::string &name = named->second;
  if (c->prepared.count(name)) {
    SendExecute(c, name);
    return;
  }
  // Parameter types come from the SQL's casts; the rest are inferred.
  c->preparing = true;
  if (!PQsendPrepare(c->pg, name.c_str(), c->task->sql.c_str(), 0, nullptr)) {
    Disconnect(c, Trim(PQerrorMessage(c->pg)).c_str(), false);
    return;
  }
  c->flushing = PQflush(c->pg) == 1;
}

void Database::SendExecute(Conn *c, const std::string &name) {
  std::vector<const char *> values;
  values.reserve(c->task->params.size());
  for (const auto &p : c->task->params) values.push_back(p.c_str());
  c->preparing = false;
  if (!PQsendQueryPrepared(c->pg, name.c_str(), static_cast<int>(values.size()), values.data(),
                           nullptr, nullptr, 0)) {
    Disconnect(c, Trim(PQerrorMessage(c->pg)).c_str(), false);
    return;
  }
  c->flushing = PQflush(c->pg) == 1;
}

void Database::Finish(Conn *c) {
  auto task = std::shared_ptr<Task>(std::move(c->task));
  pool_busy_--;
  auto result = std::make_shared<PgResult>(std::move(c->first_result));
  std::string error = c->error, sqlstate = c->sqlstate;
  double seconds = std::chrono::duration<double>(Clock::now() - c->sent_at).count();
  if (!error.empty()) query_errors_++;
  Post([task, result, error, sqlstate, seconds] {
    QueryReply reply;
    reply.result = std::move(*result);
    reply.error = error;
    reply.sqlstate = sqlstate;
    reply.seconds = seconds;
    task->done(reply);
  });
}

void Database::OnReadable(Conn *c) {
  if (!PQconsumeInput(c->pg)) {
    Disconnect(c, Trim(PQerrorMessage(c->pg)).c_str(), false);
    return;
  }
  if (!c->task) {
    // Idle connection became readable: usually the server going away.
    if (PQstatus(c->pg) == CONNECTION_BAD) Disconnect(c, "server closed the connection", false);
    return;
  }
  while (!PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    if (r == nullptr) {
      const std::string &name = statement_names_[c->task->sql];
      if (c->preparing && c->error.empty()) {
        c->first_result.reset();  // the Prepare's own (empty) result
        c->prepared.insert(name);
        SendExecute(c, name);
        return;
      }
      if (!c->preparing && c->sqlstate == "26000" && c->prepared.erase(name) > 0) {
        // Prepared statements gone (DISCARD ALL by a connection pooler in
        // between): prepare again and rerun.
        pool_busy_--;
        queries_--;
        c->first_result.reset();
        Dispatch(c);
        return;
      }
      c->preparing = false;
      Finish(c);
      return;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
      if (c->error.empty()) {
        c->error = Trim(PQresultErrorMessage(r));
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        c->sqlstate = state ? state : "";
      }
      PQclear(r);
    } else if (!c->first_result) {
      c->first_result.reset(r);
    } else {
      PQclear(r);
    }
  }
  if (PQstatus(c->pg) == CONNECTION_BAD) Disconnect(c, "server closed the connection", false);
}

void Database::ThreadMain() {
  while (!stop_) {
    auto now = Clock::now();
    auto next_wake = now + std::chrono::milliseconds(1000);
    // (Re)connect what is down and due; give up on attempts past their deadline.
    bool any_connecting = false;
    auto tend = [&](Conn &c, bool listener) {
      if (c.state == ConnState::kDown && now >= c.next_attempt && !stop_)
        StartConnect(&c, listener);
      if ((c.state == ConnState::kConnecting || c.state == ConnState::kListening) &&
          now >= c.connect_deadline)
        ConnectFailed(&c, listener, "timed out");
      if (c.state == ConnState::kDown) next_wake = std::min(next_wake, c.next_attempt);
      if (c.state == ConnState::kConnecting || c.state == ConnState::kListening)
        next_wake = std::min(next_wake, c.connect_deadline);
      if (!listener && c.state == ConnState::kConnecting) any_connecting = true;
    };
    for (auto &c : pool_) tend(c, false);
    tend(listener_, true);
    ever_tried_ = true;

    // Hand queued tasks to idle connections; fail them when none is up or on its way.
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (pool_connected_ == 0 && !any_connecting) {
        while (!tasks_.empty()) {
          auto task = tasks_.Pop();
          lock.unlock();
          FailTask(std::move(task), "database unavailable (no pool connection is up)", true);
          lock.lock();
        }
      }
      for (auto &c : pool_) {
        if (tasks_.empty()) break;
        if (c.state != ConnState::kReady || c.task) continue;
        c.task = tasks_.Pop();
        lock.unlock();
        Dispatch(&c);
        lock.lock();
      }
    }

    // Wait for sockets, new tasks, or the next reconnect attempt.
    std::vector<pollfd> fds;
    std::vector<Conn *> owners;
    fds.push_back({wake_fd_, POLLIN, 0});
    owners.push_back(nullptr);
    auto watch = [&](Conn &c) {
      if (c.pg == nullptr || c.state == ConnState::kDown) return;
      short events = POLLIN;
      if (c.state == ConnState::kConnecting)
        events = c.poll == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      else if (c.flushing)
        events |= POLLOUT;
      fds.push_back({PQsocket(c.pg), events, 0});
      owners.push_back(&c);
    };
    for (auto &c : pool_) watch(c);
    size_t listener_index = 0;
    if (listener_.pg) {
      listener_index = fds.size();
      watch(listener_);
      if (fds.size() == listener_index) listener_index = 0;
    }
    int timeout_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(next_wake - Clock::now()).count());
    if (timeout_ms < 0) timeout_ms = 0;
    int n = poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("syncline-gateway: poll");
      continue;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      while (read(wake_fd_, &v, sizeof v) > 0) {
      }
    }
    for (size_t i = 1; i < fds.size(); i++) {
      if (fds[i].revents == 0) continue;
      Conn *c = owners[i];
      bool listener = listener_index != 0 && i == listener_index;
      if (c->state == ConnState::kConnecting) {
        ContinueConnect(c, listener);
        continue;
      }
      if (c->flushing && (fds[i].revents & POLLOUT)) {
        int f = PQflush(c->pg);
        if (f < 0) {
          if (listener && c->state == ConnState::kListening)
            ConnectFailed(c, true, Trim(PQerrorMessage(c->pg)));
          else
            Disconnect(c, Trim(PQerrorMessage(c->pg)).c_str(), listener);
          continue;
        }
        c->flushing = f == 1;
      }
      if (!(fds[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
      if (listener && c->state == ConnState::kListening) {
        OnListenerSetup(c);
        continue;
      }
      if (listener) {
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
          Disconnect(c, Trim(PQerrorMessage(c->pg)).c_str(), true);
          continue;
        }
        while (PGnotify *note = PQnotifies(c->pg)) {
          std::string payload = note->extra ? note->extra : "";
          PQfreemem(note);
          Post([this, payload] { handlers_.notify(payload); });
        }
        continue;
      }
      OnReadable(c);
    }
  }
}

}  // namespace syncline::gateway
