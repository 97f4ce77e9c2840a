// Sync rules: parsing and validating data queries, and the SQL functions that
// declare and drop buckets.
#pragma once

#include "pg_compat.hpp"

extern "C" {
#include "nodes/parsenodes.h"
}

#include <string>
#include <vector>

namespace syncline {

// A validated data query.
struct DataQueryShape {
  Oid relid = InvalidOid;
  std::string object_type;                // alias, or the table name as written
  std::vector<AttrNumber> param_attnums;  // bucket parameter i is compared with this column
  Query *analyzed = nullptr;              // plain-column target list + row-local conditions
  // Declaring only: the row-local conditions deparsed with every name
  // schema-qualified (empty: none). This is what is stored and compiled.
  std::string canonical_filter;
};

// Parses a data query with Postgres' parser and checks it is one over one
// table whose WHERE binds every name in `param_names` with `col = bucket.<name>`
// and whose other conditions use only built-in immutable functions and
// operators (they run for every writer of the table, and in the background,
// with nobody's privileges: no user code may run there).
//
// Declaring (`stored` is null): names resolve with the caller's search_path
// and the conditions are deparsed into `canonical_filter`. Compiling a stored
// rule (`stored` set): the table is `stored->relid` whatever its name is now,
// and the conditions are `stored->filter` (canonical text, NULL for none),
// parsed under the pinned search_path. Throws Error naming the offending part.
struct StoredDataQuery {
  Oid relid = InvalidOid;
  const char *filter = nullptr;
  // Upgrading a rule stored before 0.2 (no canonical filter yet): the
  // conditions come from the declared text and are deparsed.
  bool from_declared_text = false;
};
DataQueryShape ParseDataQuery(const char *text, const std::vector<std::string> &param_names,
                              const StoredDataQuery *stored);

// A validated parameter query: the bucket parameters it returns, the tables it
// reads, and its text deparsed with every name schema-qualified (what runs at
// every checkpoint, as the declarer, under the pinned search_path).
struct ParameterQueryShape {
  std::vector<std::string> names;
  std::vector<Oid> types;
  std::vector<Oid> tables;  // ordinary tables it reads
  std::string canonical;
};

// Analyzes a parameter query under the current search_path, as the current
// user, and runs it once (read-only, no claims) so missing privileges show
// when it is declared. Throws Error. Call with SPI connected.
ParameterQueryShape AnalyzeParameterQuery(const std::string &bucket, const char *query);

// The primary key columns of a table, in key order (empty: none).
std::vector<std::string> PrimaryKeyColumns(Oid relid);

// Names of Syncline's triggers on user tables.
constexpr const char *kRowTrigger = "syncline_row";
constexpr const char *kTruncateTrigger = "syncline_truncate";
constexpr const char *kParameterTrigger = "syncline_parameters";
constexpr const char *kParameterTruncateTrigger = "syncline_parameters_truncate";

}  // namespace syncline
