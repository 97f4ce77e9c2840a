// Per-backend compiled form of the data queries over one table: what the row
// trigger and the initial copy evaluate for every row.
#pragma once

#include "pg_compat.hpp"

extern "C" {
#include "executor/executor.h"
#include "utils/rel.h"
}

#include <string>
#include <vector>

#include "datum_json.hpp"
#include "rule_env.hpp"
#include "staging.hpp"

namespace syncline {

struct OutputColumn {
  AttrNumber attnum;
  std::string key;  // "\"name\":", ready to append
  ValueEncoder encoder;
};

struct CompiledQuery {
  std::string definition;  // bucket definition name
  int position = 0;
  std::string object_type;
  std::vector<AttrNumber> param_attnums;
  std::vector<ValueEncoder> param_encoders;
  ExprState *filter = nullptr;  // NULL: every row
  std::vector<OutputColumn> columns;
};

struct TableRules {
  Oid relid = InvalidOid;
  bool valid = true;      // false once an invalidation (even one during Compile) arrived
  bool complete = false;  // Compile ran to its end
  MemoryContext context = nullptr;
  ExprContext *econtext = nullptr;
  std::vector<AttrNumber> key_attnums;
  std::vector<ValueEncoder> key_encoders;
  std::vector<CompiledQuery> queries;
};

// Compiles the stored data queries over `rel` into `rules` (whose context
// the caller deletes). Use inside PgGuard.
void Compile(Relation rel, TableRules *rules);

// The compiled rules of `rel` (empty when no data query uses it). Postgres
// calls: use inside PgGuard.
const TableRules &GetTableRules(Relation rel);

// Appends to `out` the ops that turning `old_row` into `new_row` (either may
// be NULL) produces in every bucket instance, or only for the data query at
// `only_position` of `only_definition` when that is set. Use inside PgGuard.
void ComputeRowOps(const TableRules &rules, TupleTableSlot *old_row, TupleTableSlot *new_row,
                   std::vector<RowOp> &out, const char *only_definition = nullptr,
                   int only_position = 0);

}  // namespace syncline
