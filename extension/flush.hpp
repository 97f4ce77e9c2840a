// The flusher: gives committed staged ops their final op ids, one flush at a
// time, so op ids increase in the order ops become visible.
#pragma once

#include "pg_compat.hpp"

#include <string>

namespace syncline {

struct FlushResult {
  int64 ops = 0;           // ops made visible
  int64 markers = 0;       // parameter/rules/write markers consumed
  bool more_copy = false;  // an initial copy has blocks left
};

// One flush in the current transaction (READ COMMITTED): takes the flush
// lock, publishes every committed staged op, copies up to `copy_blocks`
// blocks of pending initial snapshots, and notifies listeners. Postgres
// calls: use inside PgGuard, with SPI connected.
FlushResult FlushStep(int64 copy_blocks);

// Takes the flush lock (a transaction-level advisory lock) for the rest of the
// current transaction: no flush runs until it ends. Inside AsEngine, SPI
// connected.
void TakeFlushLock();

// Wakes the background worker (no-op when it is not running).
void WakeFlusher();

// Counts a committed transaction that staged a client write batch's marker (its client waits
// for the flush that publishes it): the worker cuts its pause between flushes short.
void NoteClientWriteCommitted();

// True when the background worker serves the current database.
bool FlusherAttached();

// True when the installed SQL (0.3 on) resolves a client batch's write
// checkpoint from syncline_internal.state.flushed_snapshot, which each flush
// records, rather than from the op id a flusher stamps on its record (0.2,
// until ALTER EXTENSION syncline UPDATE). Postgres calls: inside PgGuard.
bool ResolvesWriteCheckpoints();

// "<system identifier>:<database oid>", recorded with the op id counter so a
// restored counter can be told from the original.
std::string CurrentDatabaseIdentity();

// (Re)starts the initial copy of every data query over `relid`; `reset`
// starts each bucket instance the copy finds with a CLEAR. Use inside PgGuard
// with SPI connected.
void ScheduleInitialCopies(Oid relid, bool reset);

// Shared memory for the flusher's latch, and the two background workers (called
// from _PG_init when preloaded).
void RequestFlusherSharedMemory();
void RegisterWorkers();
extern char *worker_database;
extern int flush_delay_ms;

}  // namespace syncline
