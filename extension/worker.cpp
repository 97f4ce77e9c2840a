// The background workers (pg_cron-style: registered in _PG_init, SIGHUP
// reloads, SIGTERM ends them, a WaitLatch loop with one transaction per unit
// of work): the flusher publishes staged ops within milliseconds of each
// commit; the maintenance worker compacts the op log and prunes bookkeeping.
// They are two processes because a maintenance round can take seconds (a
// backlog of 1M updated rows: ~10 s, in windows of syncline.compact_window
// ops; when the flusher compacted, a 1.2M-op bucket held every flush up for
// 2.6 s), and no flush may wait for it.
#include "flush.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "compact.hpp"
#include "rule_env.hpp"
#include "staging.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "access/table.h"
#include "storage/bufmgr.h"
#include "commands/vacuum.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace syncline {

char *worker_database = nullptr;
int flush_delay_ms = 10;
extern int compact_interval_s;
extern int compact_window_ops;
extern int client_batch_retention_s;

namespace {

struct FlusherShared {
  Latch *latch;
  Oid database;                    // only commits in this database wake the worker
  pg_atomic_uint32 client_writes;  // commits that staged a client write batch (wraps)
  // Set by those commits only: the flusher waits on it between two flushes under load,
  // when every other commit's wake (`latch`) should wait for the pause to end.
  Latch client_write_latch;
};

FlusherShared *shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

void RequestShmem() {
  if (previous_request_hook) previous_request_hook();
  RequestAddinShmemSpace(MAXALIGN(sizeof(FlusherShared)));
}

void StartupShmem() {
  if (previous_startup_hook) previous_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found;
  shared = static_cast<FlusherShared *>(
      ShmemInitStruct("syncline flusher", sizeof(FlusherShared), &found));
  if (!found) {
    shared->latch = nullptr;
    shared->database = InvalidOid;
    pg_atomic_init_u32(&shared->client_writes, 0);
    InitSharedLatch(&shared->client_write_latch);
  }
  LWLockRelease(AddinShmemInitLock);
}

void ForgetLatch(int, Datum) {
  if (shared) {
    shared->latch = nullptr;
    // A restarted flusher owns it again (OwnLatch refuses an owned latch).
    if (shared->client_write_latch.owner_pid == MyProcPid) DisownLatch(&shared->client_write_latch);
  }
}

bool ExtensionInstalled() {
  Oid nsp = get_namespace_oid("syncline_internal", true);
  return OidIsValid(nsp) && OidIsValid(get_relname_relid("state", nsp)) &&
         OidIsValid(get_relname_relid("pending", nsp));
}

// Staged rows vacuumed by the worker itself once this many were published
// since its last vacuum, at most every kVacuumIntervalMs.
constexpr int64 kVacuumAfterRows = 1024;
constexpr long kVacuumIntervalMs = 100;

// A flush that published at least this many ops counts as "under load": the
// next one waits syncline.flush_delay; smaller ones wait kLightLoadPauseMs.
constexpr int64 kBusyFlushOps = 8;
constexpr long kLightLoadPauseMs = 1;
// A pause waits on client_write_latch at most this long at a time, then looks for interrupts.
constexpr long kPauseStepMs = 10;

uint32 ClientWritesCommitted() {
  return shared != nullptr ? pg_atomic_read_u32(&shared->client_writes) : 0;
}

// The pause between two flushes under load, cut short once a client write batch has
// committed since `writes_seen`, read before the flush: its client waits for the flush that
// publishes it (the WriteAck), so pacing it would pace every client's writes, also while
// direct writes keep the flushes busy. Such a commit sets client_write_latch; the other
// commits, thousands a second, set only the worker's own latch, which is not waited on here.
// (This replaced polling the counter every kLightLoadPauseMs, which left each client batch
// ~0.5 ms more on average before its flush.)
void PauseBetweenFlushes(long pause_ms, uint32 writes_seen) {
  TimestampTz start = GetCurrentTimestamp();
  for (;;) {
    ResetLatch(&shared->client_write_latch);
    if (ClientWritesCommitted() != writes_seen) return;
    long waited_ms = static_cast<long>((GetCurrentTimestamp() - start) / 1000);
    if (waited_ms >= pause_ms) return;
    // In steps: SIGTERM and SIGHUP set the worker's own latch, not this one.
    long step = std::min(pause_ms - waited_ms, kPauseStepMs);
    (void)WaitLatch(&shared->client_write_latch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                    step, PG_WAIT_EXTENSION);
    CHECK_FOR_INTERRUPTS();
  }
}

// One transaction: one flush. Returns true when there may be more to do.
// Adds the staged rows it consumed to *published and the ops it published to
// *ops. An error is raised (as a Postgres ERROR) to the worker's loop, which
// survives it.
bool FlushOnce(int64 *published, int64 *ops) {
  bool more = false;
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  PushActiveSnapshot(GetTransactionSnapshot());
  pgstat_report_activity(STATE_RUNNING, "syncline flush");
  if (ExtensionInstalled()) {
    RunRaisingErrors([&] {
      PgGuard([&] {
        if (SPI_connect() != SPI_OK_CONNECT) Fail("SPI_connect failed");
        AsEngine([&] {
          FlushResult result = FlushStep(256);
          more = result.ops > 0 || result.more_copy;
          *published += result.ops + result.markers;
          *ops = result.ops;
        });
        SPI_finish();
      });
    });
  }
  PopActiveSnapshot();
  CommitTransactionCommand();
  // A background worker reports its table statistics itself (backends do it
  // when idle). Without this, autovacuum never learns that every flush
  // deletes the staged rows it publishes, and each flush scans an
  // ever-growing staging table. Rate-limited inside (once a second at most).
  pgstat_report_stat(false);
  pgstat_report_activity(STATE_IDLE, nullptr);
  return more;
}

// Buckets compacted per round, each in a transaction of its own.
constexpr int kCompactBucketsPerRound = 64;
constexpr int kPruneBatchesPerRound = 10000;

// One maintenance round: prunes old client batch records, then compacts the
// buckets with the most ops their last compaction did not see. Each unit is
// a transaction of its own that takes no flush lock, and it runs in its own
// process, so flushes (and the live updates waiting for them) go on meanwhile.
//
// An error in one of them is raised (RunRaisingErrors) to the worker's loop,
// a longjmp past this frame: so the bucket list is static, not a local whose
// destructor would be skipped.
void MaintenanceRound() {
  static std::vector<std::string> buckets;
  buckets.clear();
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  PushActiveSnapshot(GetTransactionSnapshot());
  if (ExtensionInstalled()) {
    pgstat_report_activity(STATE_RUNNING, "syncline maintenance");
    RunRaisingErrors([&] {
      PgGuard([&] {
        if (SPI_connect() != SPI_OK_CONNECT) Fail("SPI_connect failed");
        (void)PruneFlushes();
        int64 pruned = PruneClientBatches(client_batch_retention_s, kPruneBatchesPerRound);
        if (pruned > 0)
          elog(DEBUG1, "syncline: pruned %lld client batch records", (long long)pruned);
        buckets = BucketsToCompact(kCompactBucketsPerRound);
        SPI_finish();
      });
    });
  }
  PopActiveSnapshot();
  CommitTransactionCommand();
  // A bucket's backlog is compacted syncline.compact_window ops at a time,
  // each window a transaction of its own: one statement over a bucket of
  // millions of new ops held back the vacuum horizon for its whole run (12 s
  // for 2M ops here), and staging's dead rows, which every flush reads, with it.
  for (const std::string &bucket : buckets) {
    for (bool more = true; more;) {
      CHECK_FOR_INTERRUPTS();
      SetCurrentStatementStartTimestamp();
      StartTransactionCommand();
      PushActiveSnapshot(GetTransactionSnapshot());
      RunRaisingErrors([&] {
        PgGuard([&] {
          if (SPI_connect() != SPI_OK_CONNECT) Fail("SPI_connect failed");
          (void)CompactBucket(bucket.c_str(), /*incremental=*/true, compact_window_ops, &more);
          SPI_finish();
        });
      });
      PopActiveSnapshot();
      CommitTransactionCommand();
    }
  }
  pgstat_report_stat(false);
  pgstat_report_activity(STATE_IDLE, nullptr);
}

// Staging is a queue: every flush deletes the rows it publishes, and a flush
// reads the whole table. Autovacuum visits a database once per
// autovacuum_naptime (a minute by default); at thousands of commits a second
// the dead rows would pile up meanwhile and each flush would wade through
// them. So the worker vacuums staging itself, between flushes. Staging has
// no index, so this is one pass over a small table; it never blocks writers
// (truncation, as in autovacuum, gives way to anyone waiting).
//
// Up to kKeepStagingBlocks the emptied pages stay: truncating them handed
// back pages that the next commits took again at once, so under load every
// page of staged rows cost a file extension (and every vacuum a truncation
// under an exclusive lock); kept, the vacuum's free-space map lets new rows
// reuse them. Past it (after a burst) the empty tail is truncated as before,
// since every flush scans the whole table.
constexpr BlockNumber kKeepStagingBlocks = 256;

void VacuumStaging() {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  if (ExtensionInstalled()) {
    pgstat_report_activity(STATE_RUNNING, "syncline vacuum staging");
    VacuumStmt *stmt = makeNode(VacuumStmt);
    stmt->options = NIL;
    Relation pending = table_open(InternalRelid("pending"), AccessShareLock);
    BlockNumber blocks = RelationGetNumberOfBlocks(pending);
    table_close(pending, AccessShareLock);
    if (blocks <= kKeepStagingBlocks)
      stmt->options = list_make1(makeDefElem(
          pstrdup("truncate"), reinterpret_cast<Node *>(makeString(pstrdup("false"))), -1));
    stmt->rels = list_make1(makeVacuumRelation(
        makeRangeVar(pstrdup("syncline_internal"), pstrdup("pending"), -1), InvalidOid, NIL));
    stmt->is_vacuumcmd = true;
    ExecVacuum(make_parsestate(nullptr), stmt, /*isTopLevel=*/true);
  }
  CommitTransactionCommand();
  pgstat_report_stat(false);
  pgstat_report_activity(STATE_IDLE, nullptr);
}

}  // namespace

bool FlusherAttached() {
  return shared != nullptr && shared->database == MyDatabaseId && shared->latch != nullptr;
}

void NoteClientWriteCommitted() {
  if (shared != nullptr && shared->database == MyDatabaseId) {
    pg_atomic_fetch_add_u32(&shared->client_writes, 1);
    // A signal only while the flusher waits on it.
    SetLatch(&shared->client_write_latch);
  }
}

void WakeFlusher() {
  if (shared != nullptr && shared->database == MyDatabaseId) {
    Latch *latch = shared->latch;
    if (latch != nullptr) SetLatch(latch);
  }
}

void RequestFlusherSharedMemory() {
  previous_request_hook = shmem_request_hook;
  shmem_request_hook = RequestShmem;
  previous_startup_hook = shmem_startup_hook;
  shmem_startup_hook = StartupShmem;
}

namespace {

void RegisterWorker(const char *function, const char *name) {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = 10;  // a missing database: one FATAL per 10 s
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "syncline");
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
  snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
  snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
  RegisterBackgroundWorker(&worker);
}

// After an error in a worker's unit of work (the longjmp to its sigsetjmp):
// report it, abort its transaction, and back off longer after each error in a
// row, as pg_cron's launcher and autovacuum do, instead of exiting (which
// would stop the op log for everyone, or restart the worker in a loop).
void RecoverFromError(const char *who, MemoryContext work_context, int *failures) {
  error_context_stack = nullptr;
  HOLD_INTERRUPTS();
  EmitErrorReport();
  AbortCurrentTransaction();
  FlushErrorState();
  MemoryContextSwitchTo(TopMemoryContext);
  MemoryContextResetAndDeleteChildren(work_context);
  RESUME_INTERRUPTS();
  (*failures)++;
  long backoff_ms = std::min(100L << std::min(*failures, 7), 10000L);
  elog(LOG, "%s: retrying in %ld ms after an error (%d in a row)", who, backoff_ms, *failures);
  (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, backoff_ms,
                  PG_WAIT_EXTENSION);
  ResetLatch(MyLatch);
  CHECK_FOR_INTERRUPTS();
}

void ReloadConfigIfAsked() {
  if (ConfigReloadPending) {
    ConfigReloadPending = false;
    ProcessConfigFile(PGC_SIGHUP);
  }
}

}  // namespace

void RegisterWorkers() {
  RegisterWorker("syncline_worker_main", "syncline flusher");
  RegisterWorker("syncline_maintenance_main", "syncline maintenance");
}

}  // namespace syncline

extern "C" PGDLLEXPORT void syncline_worker_main(Datum);
extern "C" PGDLLEXPORT void syncline_maintenance_main(Datum);

void syncline_worker_main(Datum) {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(syncline::worker_database, nullptr, 0);
  syncline::shared->database = MyDatabaseId;
  syncline::shared->latch = &MyProc->procLatch;
  OwnLatch(&syncline::shared->client_write_latch);
  before_shmem_exit(syncline::ForgetLatch, 0);
  elog(LOG, "syncline flusher started for database \"%s\"", syncline::worker_database);

  // Every unit of work runs in this context, reset after each.
  MemoryContext work_context =
      AllocSetContextCreate(TopMemoryContext, "syncline worker", ALLOCSET_DEFAULT_SIZES);
  // Static: they keep their values across the longjmp below.
  static int64 published = 0;  // staged rows consumed since the last vacuum
  static TimestampTz last_vacuum = GetCurrentTimestamp();
  static int failures = 0;  // consecutive units of work that raised an error

  sigjmp_buf local_sigjmp_buf;
  if (sigsetjmp(local_sigjmp_buf, 1) != 0)
    syncline::RecoverFromError("syncline flusher", work_context, &failures);
  PG_exception_stack = &local_sigjmp_buf;

  for (;;) {
    MemoryContextSwitchTo(work_context);
    // Under load, wait a moment between flushes so each one publishes many
    // commits; when idle, a commit's latch wakes the next flush at once.
    for (;;) {
      int64 ops = 0;
      // Before the flush's snapshot: a client batch that commits after it bumps the count.
      uint32 writes_seen = syncline::ClientWritesCommitted();
      bool more = syncline::FlushOnce(&published, &ops);
      failures = 0;
      MemoryContextReset(work_context);
      if (published >= syncline::kVacuumAfterRows &&
          TimestampDifferenceExceeds(last_vacuum, GetCurrentTimestamp(),
                                     syncline::kVacuumIntervalMs)) {
        syncline::VacuumStaging();
        MemoryContextReset(work_context);
        published = 0;
        last_vacuum = GetCurrentTimestamp();
      }
      if (!more) break;
      CHECK_FOR_INTERRUPTS();
      long pause_ms = ops >= syncline::kBusyFlushOps
                          ? syncline::flush_delay_ms
                          : std::min<long>(syncline::flush_delay_ms, syncline::kLightLoadPauseMs);
      if (pause_ms > 0) syncline::PauseBetweenFlushes(pause_ms, writes_seen);
    }
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000L,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    syncline::ReloadConfigIfAsked();
  }
}

// The maintenance worker: a round every syncline.compact_interval (none while
// it is 0), the first one an interval after it starts.
void syncline_maintenance_main(Datum) {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(syncline::worker_database, nullptr, 0);
  elog(LOG, "syncline maintenance started for database \"%s\"", syncline::worker_database);

  MemoryContext work_context =
      AllocSetContextCreate(TopMemoryContext, "syncline maintenance", ALLOCSET_DEFAULT_SIZES);
  // Static: they keep their values across the longjmp below.
  static TimestampTz last_round = GetCurrentTimestamp();
  static int failures = 0;
  sigjmp_buf local_sigjmp_buf;
  if (sigsetjmp(local_sigjmp_buf, 1) != 0) {
    // A failed round counts as done: the next comes an interval later.
    last_round = GetCurrentTimestamp();
    syncline::RecoverFromError("syncline maintenance", work_context, &failures);
  }
  PG_exception_stack = &local_sigjmp_buf;

  for (;;) {
    MemoryContextSwitchTo(work_context);
    long wait_ms = 1000;  // while off, look at the setting again every second
    if (syncline::compact_interval_s > 0) {
      long since_ms = TimestampDifferenceMilliseconds(last_round, GetCurrentTimestamp());
      long interval_ms = syncline::compact_interval_s * 1000L;
      if (since_ms >= interval_ms) {
        last_round = GetCurrentTimestamp();
        syncline::MaintenanceRound();
        failures = 0;
        MemoryContextReset(work_context);
        continue;
      }
      wait_ms = std::min(wait_ms, interval_ms - since_ms);
    }
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    syncline::ReloadConfigIfAsked();
  }
}
