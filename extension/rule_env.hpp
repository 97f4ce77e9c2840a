// Who Syncline's statements run as, and with which search_path.
//
// Every statement the extension runs itself (the rules catalog, the op log,
// write bookkeeping) runs as the syncline_engine role, which holds nothing but
// the internal tables, and every rule a user declared runs as its declarer;
// both in a restricted security context (no SET ROLE, no temp objects: what
// REFRESH MATERIALIZED VIEW and ANALYZE use for user code) and with
// search_path pinned to pg_catalog, pg_temp, so no caller's search_path and no
// object someone creates later can change what a name means. The previous
// user, security context and settings are restored when `fn` returns or
// raises (PG_FINALLY), never left to the transaction's abort.
#pragma once

#include "pg_compat.hpp"

extern "C" {
#include "utils/guc.h"
}

#include <exception>

namespace syncline {

// The search_path of every statement Syncline runs.
constexpr const char *kPinnedSearchPath = "pg_catalog, pg_temp";

// The role Syncline's own statements run as (syncline_engine).
Oid EngineRole();

// Runs `fn` as `role` (InvalidOid: the current user) in a restricted security
// context with the pinned search_path. An error in `fn`, a Postgres ERROR
// (as syncline::Error) or a C++ exception, is thrown after the switch back:
// never a longjmp over the caller's C++ frames. Use inside PgGuard (or a
// function body guarded by InvokeCpp).
template <typename Fn>
void RunAs(Oid role, Fn &&fn) {
  Oid saved_user;
  int saved_context;
  GetUserIdAndSecContext(&saved_user, &saved_context);
  int nest_level = NewGUCNestLevel();
  std::exception_ptr cpp_error;
  PG_TRY();
  {
    (void)set_config_option("search_path", kPinnedSearchPath, PGC_USERSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    SetUserIdAndSecContext(OidIsValid(role) ? role : saved_user, saved_context |
                                                                     SECURITY_LOCAL_USERID_CHANGE |
                                                                     SECURITY_RESTRICTED_OPERATION);
    try {
      PgGuard(fn);
    } catch (...) {
      cpp_error = std::current_exception();
    }
  }
  PG_FINALLY();
  {
    SetUserIdAndSecContext(saved_user, saved_context);
    AtEOXact_GUC(true, nest_level);
  }
  PG_END_TRY();
  if (cpp_error) std::rethrow_exception(cpp_error);
}

// Runs `fn` with the setting `name` at `value` (restored when it returns or
// raises); errors come out of it as C++ exceptions, as from RunAs. Use inside
// PgGuard.
template <typename Fn>
void WithSetting(const char *name, const char *value, Fn &&fn) {
  int nest_level = NewGUCNestLevel();
  std::exception_ptr cpp_error;
  PG_TRY();
  {
    (void)set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                            false);
    try {
      PgGuard(fn);
    } catch (...) {
      cpp_error = std::current_exception();
    }
  }
  PG_FINALLY();
  { AtEOXact_GUC(true, nest_level); }
  PG_END_TRY();
  if (cpp_error) std::rethrow_exception(cpp_error);
}

// Runs `fn` with search_path set to `path` (see WithSetting).
template <typename Fn>
void WithSearchPath(const char *path, Fn &&fn) {
  WithSetting("search_path", path, fn);
}

// Runs `fn` as the engine role: for statements on Syncline's internal tables.
template <typename Fn>
void AsEngine(Fn &&fn) {
  RunAs(EngineRole(), fn);
}

}  // namespace syncline
