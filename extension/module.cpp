// Module entry: GUCs, the background worker, and the error boundary.
#include "pg_compat.hpp"

extern "C" {
#include "utils/acl.h"
#include "utils/guc.h"
PG_MODULE_MAGIC;
void _PG_init(void);
}

#include "flush.hpp"
#include "rule_env.hpp"

#include <cstdarg>
#include <cstdio>

namespace syncline {

int max_buckets_per_user = 10000;
int compact_interval_s = 60;
int compact_window_ops = 250000;
int client_batch_retention_s = 7 * 24 * 3600;

Oid EngineRole() {
  Oid role = get_role_oid("syncline_engine", true);
  if (!OidIsValid(role))
    throw Error(ERRCODE_UNDEFINED_OBJECT, "role \"syncline_engine\" is missing", "",
                "Syncline's own statements run as it: ALTER EXTENSION syncline UPDATE, or drop "
                "and create the extension again.");
  return role;
}
extern char *write_role_name;
static char *claims_setting = nullptr;

void Fail(const char *format, ...) {
  // Measured first: messages quote whole statements, which a fixed buffer
  // would cut.
  va_list args, again;
  va_start(args, format);
  va_copy(again, args);
  int length = vsnprintf(nullptr, 0, format, args);
  va_end(args);
  std::string message(length > 0 ? static_cast<size_t>(length) : 0, '\0');
  if (length > 0) vsnprintf(message.data(), message.size() + 1, format, again);
  va_end(again);
  throw Error(ERRCODE_INTERNAL_ERROR, std::move(message));
}

void RaiseCaught(ErrorData *pg_error, int sqlstate, const char *message, const char *detail,
                 const char *hint, const char *context) {
  // raises: the boundary itself, called once every C++ frame is gone
  if (pg_error != nullptr) ReThrowError(pg_error);
  // raises: as above
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
      "Set by Syncline for the duration of a request; read it with syncline.claims(). Only "
      "superusers may set it themselves, so row-level security policies can trust it.",
      &syncline::claims_setting, "", PGC_SUSET, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr,
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
        "syncline.flush_delay", "Pause between two flushes while many ops keep arriving (ms).",
        "After a flush that published a batch of ops the worker waits this long, so that under "
        "load each flush publishes more commits at once (most of a flush's cost is per flush, "
        "not per op); after a small flush it waits only a millisecond, and a client write batch "
        "(whose WriteAck waits for its flush) that commits during the pause cuts it short.",
        &syncline::flush_delay_ms, 10, 0, 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "syncline.compact_interval", "Pause between the worker's incremental compaction rounds.",
        "Each round compacts a bounded number of buckets that received ops since their last "
        "compaction, and prunes old client batch records; 0 turns it off.",
        &syncline::compact_interval_s, 60, 0, 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "syncline.compact_window", "Ops of a bucket the worker compacts in one transaction.",
        "A bucket's ops since its last compaction (a bulk load, a first compaction) are "
        "compacted this many at a time, each a transaction of its own, so none holds back "
        "vacuum for long.",
        &syncline::compact_window_ops, 250000, 100, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "syncline.client_batch_retention", "How long the outcome of a client write batch is kept.",
        "A retry arriving later than this is answered seq_regressed instead of its first outcome; "
        "a client's newest batch is always kept.",
        &syncline::client_batch_retention_s, 7 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
        nullptr, nullptr, nullptr);
    syncline::RequestFlusherSharedMemory();
    syncline::RegisterWorkers();
  }
  MarkGUCPrefixReserved("syncline");
}
