// Encodes Postgres values as JSON text with one stable encoding per type,
// independent of the session's DateStyle, TimeZone and float settings.
#pragma once

#include "pg_compat.hpp"

#include <memory>
#include <string>

namespace syncline {

// How values of one column type are written; built once per column.
class ValueEncoder {
 public:
  // Looks the type up (syscache); call inside PgGuard. `context` holds fmgr state.
  void Init(Oid type, MemoryContext context);
  // Appends the JSON text of the value ("null" for NULL).
  void AppendJson(std::string &out, Datum value, bool isnull) const;
  // Appends the value as plain text: strings unquoted, everything else as JSON.
  void AppendText(std::string &out, Datum value, bool isnull) const;
  // True when the JSON form of non-null values is a string.
  bool IsString() const;
  // A name for the JSON kind of this type, for error messages ("number", "string", ...).
  const char *JsonKind() const;
  Oid type() const { return type_; }

 private:
  enum class Kind {
    kBool,
    kInt2,
    kInt4,
    kInt8,
    kFloat4,
    kFloat8,
    kNumeric,
    kText,
    kJson,
    kJsonb,
    kBytea,
    kTimestamp,
    kTimestamptz,
    kDate,
    kTime,
    kInterval,
    kArray,
    kOther
  };
  void AppendArrayLevel(std::string &out, const int *dims, int ndim, int level, const Datum *elems,
                        const bool *nulls, int *index) const;

  Oid type_ = InvalidOid;
  Kind kind_ = Kind::kOther;
  FmgrInfo output_{};
  // Arrays: element type and its encoder.
  Oid elem_type_ = InvalidOid;
  int16 elem_len_ = 0;
  bool elem_byval_ = false;
  char elem_align_ = 'i';
  std::shared_ptr<ValueEncoder> elem_;
};

}  // namespace syncline
