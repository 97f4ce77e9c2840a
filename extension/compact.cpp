// Compaction: keeps the op log proportional to what clients need, one bucket
// at a time, without the flush lock (flushes and live sync go on meanwhile),
// and pruning of write bookkeeping nothing needs any more. The background
// worker runs both in bounded rounds; syncline.compact() compacts everything.
#include "compact.hpp"

extern "C" {
#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
}

#include <climits>

#include "flush.hpp"
#include "rule_env.hpp"
#include "spi_util.hpp"

namespace syncline {

namespace {

// First key of the per-bucket compaction lock (flush: 1398361667, client
// batches: 1398361668): two compactions of one bucket never overlap.
constexpr int32 kCompactLockKey = 1398361669;

int64 FetchCount() {
  if (SPI_processed == 0) return 0;
  bool isnull;
  Datum value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
  return isnull ? 0 : DatumGetInt64(value);
}

}  // namespace

int64 CompactBucket(const char *bucket, bool incremental, int64 window, bool *more) {
  int64 changed = 0;
  if (more != nullptr) *more = false;
  // Never a nested loop: a bucket that grew since the op log was last analyzed
  // (or one never analyzed, after a bulk load) is estimated at a few hundred
  // ops, and a nested loop over a million of them probes the bucket once per
  // object (it ran for 13 minutes on 1M ops here before it was cancelled). A
  // hash join costs one pass whatever the estimates.
  AsEngine([&] {
    WithSetting("enable_nestloop", "off", [&] {
      Oid types[3] = {TEXTOID, INT8OID, INT8OID};
      Datum args[3] = {CStringGetTextDatum(bucket), Int64GetDatum(0), Int64GetDatum(0)};
      static const char *kLockSql =
          "SELECT pg_catalog.pg_advisory_xact_lock(1398361669, pg_catalog.hashtext($1))";
      static_assert(kCompactLockKey == 1398361669, "keep the SQL in step");
      ExecPrepared(kLockSql, 1, types, args);

      // What this compaction covers: every op up to the bucket's last op id as
      // read now (the statements below see at least those). An incremental
      // compaction looks only at objects with an op since the last one: any op
      // superseded since then is superseded by one of those.
      static const char *kStateSql =
          "SELECT last_op_id, compacted_op_id FROM syncline_internal.bucket_state "
          " WHERE bucket = $1";
      ExecPrepared(kStateSql, 1, types, args);
      if (SPI_processed == 0) return;
      bool isnull;
      int64 upto =
          DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
      int64 compacted =
          DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
      if (!incremental) compacted = 0;
      // A backlog (a bulk load or update, a first compaction) is looked at a
      // window at a time: the statements below read the bucket's ops up to the
      // window's end, so each window costs at most one pass over them.
      if (incremental && window > 0 && upto - compacted > window) {
        // Op ids are global, so a window is a count of this bucket's ops: its
        // end is the id of the window-th op after the last compaction.
        Datum window_args[3] = {args[0], Int64GetDatum(compacted), Int64GetDatum(window - 1)};
        static const char *kWindowEndSql =
            "SELECT op_id FROM syncline_internal.ops "
            " WHERE bucket = $1 AND op_id > $2 ORDER BY op_id OFFSET $3 LIMIT 1";
        ExecPrepared(kWindowEndSql, 3, types, window_args);
        if (SPI_processed == 1) {
          int64 end = DatumGetInt64(
              SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
          if (end < upto) {
            upto = end;
            if (more != nullptr) *more = true;
          }
        }
      }
      args[1] = Int64GetDatum(compacted);
      args[2] = Int64GetDatum(upto);

      // A PUT or REMOVE followed by a later op on the same object carries
      // nothing a client needs: keep its place and checksum, drop its data.
      // The objects with an op in ($2, $3], each with its newest op id there,
      // are hash-joined with one pass over the bucket's PUTs and REMOVEs up to
      // $3 (no sort of the whole bucket: a 1M-op bucket with 1,000 changed rows
      // took 1,071 ms for the window over every op, 104 ms this way). An op
      // superseded by one past $3 is moved by the window that holds that one.
      static const char *kMoveSql = R"sql(
      WITH touched AS (
        SELECT o.object_type, o.object_id, max(o.op_id) AS newest
          FROM syncline_internal.ops o
         WHERE o.bucket = $1 AND o.op_id > $2 AND o.op_id <= $3 AND o.op IN (1, 2)
         GROUP BY o.object_type, o.object_id),
      moved AS (
        UPDATE syncline_internal.ops o SET op = 3, data = NULL
          FROM touched t
         WHERE o.bucket = $1 AND o.op_id < $3 AND o.op IN (1, 2)
           AND o.object_type = t.object_type AND o.object_id = t.object_id
           AND o.op_id < t.newest
        RETURNING 1)
      SELECT count(*) FROM moved)sql";
      ExecPrepared(kMoveSql, 3, types, args);
      changed += FetchCount();

      // The leading run of REMOVE/MOVE/CLEAR ops becomes one CLEAR at the run's
      // last op id carrying the run's checksum. A reader part-way through the
      // run meets the CLEAR next, which empties the bucket (nothing in the run
      // was live) and sets its running checksum to the run's: still right.
      // (The run's end is a scalar bound, so only the run is read.)
      static const char *kClearSql = R"sql(
      WITH run AS (
        SELECT max(o.op_id) AS last_op, sum(o.checksum) % 4294967296 AS checksum,
               count(*) AS n
          FROM syncline_internal.ops o
         WHERE o.bucket = $1
           AND o.op_id < coalesce((SELECT min(p.op_id) FROM syncline_internal.ops p
                                    WHERE p.bucket = $1 AND p.op = 1),
                                  9223372036854775807)
        HAVING count(*) > 1 OR bool_or(o.op <> 4)),
      removed AS (
        DELETE FROM syncline_internal.ops o USING run r
         WHERE o.bucket = $1 AND o.op_id < r.last_op
        RETURNING 1),
      cleared AS (
        UPDATE syncline_internal.ops o
           SET op = 4, object_type = NULL, object_id = NULL, data = NULL, checksum = r.checksum
          FROM run r
         WHERE o.bucket = $1 AND o.op_id = r.last_op
        RETURNING 1),
      counted AS (
        UPDATE syncline_internal.bucket_state s SET count = s.count - r.n + 1
          FROM run r WHERE s.bucket = $1
        RETURNING 1)
      SELECT count(*) FROM counted)sql";
      ExecPrepared(kClearSql, 1, types, args);
      changed += FetchCount();

      // Everything up to `upto` has been looked at (not the last op id as of
      // this statement: a flush may have added ops the statements above did
      // not see, and an incremental compaction would then never look at them).
      args[1] = Int64GetDatum(upto);
      static const char *kDoneSql =
          "UPDATE syncline_internal.bucket_state SET compacted_op_id = $2 "
          " WHERE bucket = $1 AND compacted_op_id < $2";
      ExecPrepared(kDoneSql, 2, types, args);
    });
  });
  return changed;
}

std::vector<std::string> BucketsToCompact(int limit) {
  std::vector<std::string> buckets;
  AsEngine([&] {
    Oid types[1] = {INT4OID};
    Datum args[1] = {Int32GetDatum(limit)};
    static const char *kSql =
        "SELECT bucket FROM syncline_internal.bucket_state "
        " WHERE last_op_id > compacted_op_id "
        " ORDER BY last_op_id - compacted_op_id DESC LIMIT $1";
    ExecPrepared(kSql, 1, types, args);
    bool isnull;
    for (uint64 i = 0; i < SPI_processed; i++)
      buckets.emplace_back(
          VarlenaBytes(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
  });
  return buckets;
}

int64 PruneFlushes() {
  int64 pruned = 0;
  AsEngine([&] {
    // Keep the newest flush, so changes() can tell "nothing changed" apart.
    static const char *kSql = R"sql(
      WITH deleted AS (
        DELETE FROM syncline_internal.flushes f
         WHERE f.flushed_at < pg_catalog.now() - interval '1 hour'
           AND f.last_op_id < (SELECT max(n.last_op_id) FROM syncline_internal.flushes n)
        RETURNING 1)
      SELECT count(*) FROM deleted)sql";
    ExecPrepared(kSql, 0, nullptr, nullptr);
    pruned = FetchCount();
  });
  return pruned;
}

int64 PruneClientBatches(int retention_seconds, int limit) {
  int64 pruned = 0;
  AsEngine([&] {
    Oid types[2] = {INT4OID, INT4OID};
    Datum args[2] = {Int32GetDatum(retention_seconds), Int32GetDatum(limit)};
    // A client's newest batch stays: it is the client's last seq.
    static const char *kSql = R"sql(
      WITH old AS (
        SELECT b.client_id, b.seq FROM syncline_internal.client_batches b
         WHERE b.applied_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)
           AND b.seq < (SELECT max(n.seq) FROM syncline_internal.client_batches n
                         WHERE n.client_id = b.client_id)
         LIMIT $2),
      deleted AS (
        DELETE FROM syncline_internal.client_batches b USING old
         WHERE b.client_id = old.client_id AND b.seq = old.seq
        RETURNING 1)
      SELECT count(*) FROM deleted)sql";
    ExecPrepared(kSql, 2, types, args);
    pruned = FetchCount();
  });
  return pruned;
}

}  // namespace syncline

// syncline.compact(): every bucket now, each as the worker would, but in one
// transaction. That transaction holds every compacted bucket's state row
// until it ends, so it takes the flush lock: flushes wait rather than
// deadlock with it. (The worker compacts one bucket per transaction and
// never holds flushes up.)
SYNCLINE_FUNCTION(syncline_compact) {
  int64 total = 0;
  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    std::vector<std::string> buckets;
    syncline::AsEngine([&] {
      syncline::TakeFlushLock();
      syncline::PgGuard([] {
        int rc = SPI_execute("SELECT bucket FROM syncline_internal.bucket_state ORDER BY bucket",
                             false, 0);
        if (rc != SPI_OK_SELECT) syncline::Fail("reading bucket state failed");
      });
      bool isnull;
      for (uint64 i = 0; i < SPI_processed; i++)
        buckets.emplace_back(syncline::VarlenaBytes(
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
    });
    for (const std::string &bucket : buckets)
      total += syncline::CompactBucket(bucket.c_str(), /*incremental=*/false);
    SPI_finish();
  });
  PG_RETURN_INT64(total);
}

// syncline.prune_client_batches(older_than): what the worker does every
// syncline.compact_interval, on demand.
SYNCLINE_FUNCTION(syncline_prune_client_batches) {
  if (PG_ARGISNULL(0))
    throw syncline::Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "older_than must not be NULL");
  Interval *older_than = PG_GETARG_INTERVAL_P(0);
  double seconds = older_than->time / 1e6 + older_than->day * 86400.0 +
                   older_than->month * (DAYS_PER_MONTH * 86400.0);
  if (seconds < 0 || seconds > INT_MAX)
    throw syncline::Error(ERRCODE_INVALID_PARAMETER_VALUE,
                          "older_than must be between 0 and about 68 years");
  int64 pruned = 0;
  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    pruned = syncline::PruneClientBatches(static_cast<int>(seconds), INT_MAX);
    SPI_finish();
  });
  PG_RETURN_INT64(pruned);
}
