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
};

// Parses `text` with Postgres' parser and checks it is a data query over one
// table whose WHERE binds every name in `param_names` with `col = bucket.<name>`.
// With `fixed_relid` set (compiling a stored rule), the table is that one,
// whatever its name is now. Throws Error naming the offending part.
DataQueryShape ParseDataQuery(const char *text, const std::vector<std::string> &param_names,
                              Oid fixed_relid);

// Names of Syncline's triggers on user tables.
constexpr const char *kRowTrigger = "syncline_row";
constexpr const char *kTruncateTrigger = "syncline_truncate";
constexpr const char *kParameterTrigger = "syncline_parameters";

}  // namespace syncline
