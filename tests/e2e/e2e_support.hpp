// Helpers the end-to-end test programs share: environment, a libpq session on
// the test database, tokens signed with the test secret, a client's close story.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/e2e/expect.hpp"
#include "tests/e2e/ws_client.hpp"

namespace syncline::testing {

inline std::string Env(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v ? v : fallback;
}

// One connection to database "syncline" (PGHOST/PGPORT/PGUSER from the runner).
class Sql {
 public:
  Sql() : conn_(PQconnectdb("dbname=syncline")) {
    if (PQstatus(conn_) != CONNECTION_OK)
      throw Failure(std::string("connect: ") + PQerrorMessage(conn_));
  }
  ~Sql() { PQfinish(conn_); }
  Sql(const Sql &) = delete;
  Sql &operator=(const Sql &) = delete;
  // Runs `sql`; the first column of the first row, or "" (a failure throws).
  std::string Exec(const std::string &sql) {
    PGresult *r = PQexec(conn_, sql.c_str());
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      std::string err = PQresultErrorMessage(r);
      PQclear(r);
      throw Failure("SQL failed: " + sql.substr(0, 200) + ": " + err);
    }
    std::string v = PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return v;
  }

 private:
  PGconn *conn_;
};

// An HS256 token for `sub`, valid for an hour, signed with the test secret.
inline std::string Token(const std::string &sub) {
  int64_t now = time(nullptr);
  nlohmann::json claims = {{"sub", sub}, {"iat", now}, {"exp", now + 3600}};
  return MakeHs256Token(Env("SYNCLINE_JWT_SECRET", "e2e-secret"), claims.dump());
}

// Close code, reason, errors and checksum failures of a client, for messages.
inline std::string Describe(const Client &c) {
  std::string out = "close=" + std::to_string(c.close_code) + " reason=\"" + c.close_reason + "\"";
  for (const auto &e : c.errors) out += " error[" + std::to_string(e.code()) + "]=" + e.message();
  for (const auto &f : c.checksum_failures) out += " checksum: " + f;
  return out;
}

}  // namespace syncline::testing
