// What PostgreSQL's text and jsonb can hold, and what the gateway can handle safely, checked
// before a client's JSON values are copied, dumped or sent to the database.
// Pure C++ (no libwebsockets, no libpq), so the unit tests link it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace syncline::gateway {

// Nesting accepted in a client's JSON value (a row's data, a key): a parsed value nested deeper
// would overflow the stack when copied or dumped (nlohmann's parser is iterative, but its copy
// and dump recurse: 100,000 levels fit in a 200 KB message and crash the process), and
// PostgreSQL refuses it past its max_stack_depth.
constexpr size_t kMaxClientJsonDepth = 100;
// apply_writes refuses (with an error, not a recorded rejection) a client id longer than this
// and a seq past INT64_MAX: the gateway refuses them first, so no write of theirs is retried
// forever. PowerSync transaction ids have the same bound.
constexpr size_t kMaxClientIdBytes = 200;
constexpr uint64_t kMaxWriteSeq = uint64_t{1} << 62;

struct JsonScan {
  size_t depth = 0;  // a scalar is 1, [] or {} is 1, [[]] is 2
  bool nul = false;  // a string or object key holds U+0000
};
// Walks `value` without recursion (safe at any depth). It stops going deeper than
// kMaxClientJsonDepth + 1 levels: depth is then kMaxClientJsonDepth + 1 and nul covers only
// the levels seen.
JsonScan ScanJson(const nlohmann::json &value);

// Whether any string or object key in `value` holds U+0000. PostgreSQL's text and jsonb
// cannot hold it, and libpq passes a text parameter cut at it: a value holding one either
// fails the whole statement or arrives as another value. Safe at any depth, but looks only
// kMaxClientJsonDepth levels deep: check the depth first (ScanJson) where it can be more.
bool JsonHoldsNul(const nlohmann::json &value);

// What is wrong with a client id for the database (apply_writes, client_write_checkpoint):
// U+0000 (libpq would pass it cut there, as another installation's id) or more than
// kMaxClientIdBytes; empty when nothing is.
std::string ClientIdProblem(const std::string &client_id);

// {"op": op, "refused": why, "code": sqlstate}: apply_writes rejects the batch at this op with
// that SQLSTATE and records it under its seq. A write the database cannot even be handed is
// sent so, on both write paths (WriteBatch, PowerSync /upload).
nlohmann::json RefusedOp(const std::string &op, const std::string &why,
                         const std::string &sqlstate = "22P05");
// The refused op for a client's JSON value named `what` (data, id, crud[3]): nested deeper
// than kMaxClientJsonDepth (54001) or holding U+0000 (22P05); null when it can be passed on.
nlohmann::json RefusalOf(const nlohmann::json &value, const std::string &op,
                         const std::string &what);

// `value` dumped for an error message, at most max_chars; a value nested too deep to dump
// safely is named by its depth instead.
std::string DumpForMessage(const nlohmann::json &value, size_t max_chars = 200);

}  // namespace syncline::gateway
