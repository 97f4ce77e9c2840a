// SPI helpers shared by the flusher and the write path.
#pragma once

#include "pg_compat.hpp"

namespace syncline {

// Runs a fixed statement through a plan prepared (generic) once per backend.
// `sql` must be a string literal: its address names the cached plan. Returns
// the SPI result code; raises a Postgres ERROR on failure (use inside PgGuard).
int ExecPrepared(const char *sql, int nargs, Oid *types, Datum *args, const char *nulls = nullptr);

}  // namespace syncline
