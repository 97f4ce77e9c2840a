// Compaction of the op log and pruning of write bookkeeping (see compact.cpp).
#pragma once

#include "pg_compat.hpp"

#include <string>
#include <vector>

namespace syncline {

// Compacts one bucket instance in the current transaction: superseded ops
// become MOVE, the leading run of REMOVE/MOVE/CLEAR becomes one CLEAR;
// checksums are unchanged. Returns ops turned into MOVE plus runs cleared.
// `incremental`: only objects with ops since the bucket's last compaction are
// looked at (the worker); otherwise every op (syncline.compact()).
// `window` > 0 (incremental only): only the next `window` ops after the last
// compaction are looked at, and *more says whether ops are left beyond them:
// the caller compacts a backlog in bounded transactions, each holding back
// the vacuum horizon (staging's dead rows) for a bounded time.
// Postgres calls: use inside PgGuard with SPI connected.
int64 CompactBucket(const char *bucket, bool incremental, int64 window = 0, bool *more = nullptr);

// Up to `limit` bucket instances with ops their last compaction did not see,
// most such ops first. Use inside PgGuard with SPI connected.
std::vector<std::string> BucketsToCompact(int limit);

// Deletes the list of changed buckets of flushes older than an hour (but the
// newest): syncline.changes() falls back to scanning bucket_state for them.
int64 PruneFlushes();

// Deletes up to `limit` client batch records older than `retention_seconds`,
// keeping every client's newest. Returns how many. Use inside PgGuard with
// SPI connected.
int64 PruneClientBatches(int retention_seconds, int limit);

}  // namespace syncline
