// SPI helpers shared by the flusher and the write path.
#pragma once

#include "pg_compat.hpp"

#include <string>
#include <string_view>

namespace syncline {

// Runs a fixed statement through a plan prepared (generic) once per backend.
// `sql` must be a string literal: its address names the cached plan. Returns
// the SPI result code. A Postgres ERROR (a failed statement, a cancel, a lock
// or statement timeout) comes out as syncline::Error, so the caller's C++
// objects are destroyed on the way out (use inside PgGuard or InvokeCpp).
int ExecPrepared(const char *sql, int nargs, Oid *types, Datum *args, const char *nulls = nullptr);

// The bytes of a text or bytea datum, detoasted if need be. Detoasting may
// raise (out of memory, a damaged TOAST value), so it runs in PgGuard; an
// inline value, the common case, costs nothing more. With `copy`, a
// detoasted copy is handed back there (else nullptr) for the caller to
// pfree once done with the bytes: loops over many large values use it.
std::string_view VarlenaBytes(Datum value, struct varlena **copy = nullptr);

// A text datum of `bytes` (palloc'd in PgGuard).
Datum TextDatumOf(std::string_view bytes);

}  // namespace syncline
