// Staged ops: rows appended to syncline_internal.pending by triggers (without
// SPI, without permission checks on the internal table) and later given
// their final op ids by the flusher.
#pragma once

#include "pg_compat.hpp"

#include "op_chunk.hpp"

#include <string>
#include <vector>

namespace syncline {

// Appends `ops` to pending, moving them out (the caller clears `ops` after).
// `initial_copy` ops sort before every other op of the flush that publishes
// them (see flush.cpp). Postgres calls: use in PgGuard.
void StageOps(std::vector<RowOp> &ops, bool initial_copy = false);

// Appends one marker row (kind >= 10). Postgres calls: use in PgGuard.
void StageMarker(int16 kind, const char *object_id, const char *data);

// Oid of a relation in schema syncline_internal. Raises a Postgres ERROR when
// it is missing: call it in PgGuard, or where no C++ object is alive.
Oid InternalRelid(const char *name);

// Asks the flusher to run when the current transaction commits.
void WakeFlusherAtCommit();

}  // namespace syncline
