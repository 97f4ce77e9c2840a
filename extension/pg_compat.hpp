// The one firewall between C++ exceptions and Postgres' longjmp-based errors.
//
// Rules for every file of the extension:
//  * Postgres headers are included only through this header (inside extern "C").
//  * Every SQL-callable function is defined with SYNCLINE_FUNCTION: a C++ exception
//    that escapes the body becomes ereport(ERROR) after every C++ frame is gone.
//  * C++ code never calls ereport(ERROR) itself; it throws syncline::Error.
//  * A Postgres call that may elog(ERROR) while C++ objects with destructors are
//    alive goes through PgGuard, which turns the error into syncline::Error.
#pragma once

extern "C" {
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "catalog/pg_authid_d.h"
#include "catalog/pg_namespace_d.h"
}

#include <exception>
#include <string>
#include <utility>

namespace syncline {

// An error on its way to the client: SQLSTATE, message, detail and hint, or a
// Postgres error caught by PgGuard (kept whole so nothing of it is lost).
class Error {
 public:
  Error(int sqlstate, std::string message, std::string detail = {}, std::string hint = {})
      : sqlstate_(sqlstate),
        message_(std::move(message)),
        detail_(std::move(detail)),
        hint_(std::move(hint)) {}
  explicit Error(ErrorData *pg_error) : pg_error_(pg_error) {}

  int sqlstate() const { return pg_error_ ? pg_error_->sqlerrcode : sqlstate_; }
  const char *message() const { return pg_error_ ? pg_error_->message : message_.c_str(); }
  const std::string &detail() const { return detail_; }
  const std::string &hint() const { return hint_; }
  ErrorData *pg_error() const { return pg_error_; }
  const std::string &context() const { return context_; }
  // Says where the error happened ("data query 2 of bucket \"by_list\"").
  Error &AddContext(const std::string &context);
  // Points the error's cursor into `query` (a rule's text) instead of the
  // statement that declared it.
  Error &InQuery(const char *query);

 private:
  int sqlstate_ = 0;
  std::string message_, detail_, hint_, context_;
  ErrorData *pg_error_ = nullptr;
};

// Runs `fn` and turns a Postgres ERROR raised inside it into syncline::Error.
// A C++ exception thrown by `fn` is caught inside PG_TRY and rethrown after
// it, so neither kind of error crosses the other's frames. Locals of `fn`
// that own memory are not destroyed when Postgres longjmps out of it: keep
// such objects outside and pass them in by reference.
template <typename Fn>
void PgGuard(Fn &&fn) {
  MemoryContext caller_context = CurrentMemoryContext;
  ErrorData *volatile caught = nullptr;
  std::exception_ptr cpp_error;
  PG_TRY();
  {
    try {
      fn();
    } catch (...) {
      cpp_error = std::current_exception();
    }
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(caller_context);
    caught = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  if (caught != nullptr) throw Error(caught);
  if (cpp_error) std::rethrow_exception(cpp_error);
}

// An internal error ("cannot happen": an unexpected SPI result code) in C++
// code: thrown as syncline::Error (XX000), so every C++ frame unwinds before
// Postgres raises it. Use it instead of elog(ERROR), which would longjmp
// over those frames.
[[noreturn]] void Fail(const char *format, ...) pg_attribute_printf(1, 2);

// Raises a Postgres ERROR for an exception caught at the C++ boundary. Called
// only from InvokeCpp, after every C++ object of the body has been destroyed.
[[noreturn]] void RaiseCaught(ErrorData *pg_error, int sqlstate, const char *message,
                              const char *detail, const char *hint, const char *context);

// What a caught C++ exception said, copied out of the catch block so the
// Postgres error can be raised after it has ended (longjmp out of a catch
// handler would leave the C++ runtime's exception state behind).
struct CaughtError {
  ErrorData *pg_error = nullptr;
  int sqlstate = ERRCODE_INTERNAL_ERROR;
  char *message = nullptr, *detail = nullptr, *hint = nullptr, *context = nullptr;
  void From(const Error &e) {
    pg_error = e.pg_error();
    sqlstate = e.sqlstate();
    message = pstrdup(e.message());
    if (!e.detail().empty()) detail = pstrdup(e.detail().c_str());
    if (!e.hint().empty()) hint = pstrdup(e.hint().c_str());
    if (!e.context().empty()) context = pstrdup(e.context().c_str());
  }
  [[noreturn]] void Raise() { RaiseCaught(pg_error, sqlstate, message, detail, hint, context); }
};

template <typename Body>
Datum InvokeCpp(Body body, FunctionCallInfo fcinfo) {
  CaughtError caught;
  try {
    return body(fcinfo);
  } catch (const Error &e) {
    caught.From(e);
  } catch (const std::exception &e) {
    caught.message = pstrdup(e.what());
  } catch (...) {
    caught.message = pstrdup("unexpected C++ exception in syncline");
  }
  caught.Raise();
}

// Runs C++ `fn` from C code that expects Postgres errors (the background
// worker's loop): an exception becomes ereport(ERROR) after every C++ frame of
// `fn` is gone.
template <typename Fn>
void RunRaisingErrors(Fn &&fn) {
  CaughtError caught;
  try {
    fn();
    return;
  } catch (const Error &e) {
    caught.From(e);
  } catch (const std::exception &e) {
    caught.message = pstrdup(e.what());
  } catch (...) {
    caught.message = pstrdup("unexpected C++ exception in syncline");
  }
  caught.Raise();
}

}  // namespace syncline

// Defines SQL-callable function `name`; its body is C++ guarded by InvokeCpp.
#define SYNCLINE_FUNCTION(name)                                                                \
  extern "C" {                                                                                 \
  PG_FUNCTION_INFO_V1(name);                                                                   \
  }                                                                                            \
  static Datum name##_body(FunctionCallInfo fcinfo);                                           \
  extern "C" Datum name(PG_FUNCTION_ARGS) { return syncline::InvokeCpp(name##_body, fcinfo); } \
  static Datum name##_body(FunctionCallInfo fcinfo)
