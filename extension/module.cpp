// Module entry: GUCs, the background worker, and the error boundary.
#include "pg_compat.hpp"

extern "C" {
#include "utils/guc.h"
PG_MODULE_MAGIC;
void _PG_init(void);
}

#include "flush.hpp"

namespace syncline {

int max_buckets_per_user = 10000;
extern char *write_role_name;
static char *claims_setting = nullptr;

void RaiseCaught(ErrorData *pg_error, int sqlstate, const char *message, const char *detail,
                 const char *hint, const char *context) {
  if (pg_error != nullptr) ReThrowError(pg_error);
  ereport(ERROR, (errcode(sqlstate), errmsg_internal("%s", message),
                  detail && *detail ? errdetail_internal("%s", detail) : 0,
                  hint && *hint ? errhint("%s", hint) : 0,
                  context && *context ? errcontext("%s", context) : 0));
  pg_unreachable();
}

}  // namespace syncline

void _PG_init(void) {
  DefineCustomStringVariable(
      "syncline.claims", "Verified token claims of the current sync or write request (JSON).",
      "Set by Syncline for the duration of a request; read it with syncline.claims().",
      &syncline::claims_setting, "", PGC_USERSET, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr,
      nullptr, nullptr);
  DefineCustomIntVariable(
      "syncline.max_buckets_per_user", "Most bucket instances one checkpoint may name.", nullptr,
      &syncline::max_buckets_per_user, 10000, 1, 1000000, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomStringVariable(
      "syncline.write_role", "Role whose privileges and row-level security apply client writes.",
      "It must not be a superuser or bypass row-level security.", &syncline::write_role_name,
      "syncline_writer", PGC_SUSET, 0, nullptr, nullptr, nullptr);
  if (process_shared_preload_libraries_in_progress) {
    DefineCustomStringVariable(
        "syncline.database", "Database whose staged ops the background worker flushes.", nullptr,
        &syncline::worker_database, "postgres", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "syncline.flush_delay", "Pause between two flushes while ops keep arriving (ms).",
        "Trades a little live latency for larger, cheaper flushes under load.",
        &syncline::flush_delay_ms, 2, 0, 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    syncline::RequestFlusherSharedMemory();
    syncline::RegisterFlusherWorker();
  }
  MarkGUCPrefixReserved("syncline");
}
