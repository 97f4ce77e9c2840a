#include "datum_json.hpp"

extern "C" {
#include "common/shortest_dec.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
}

#include <charconv>
#include <cmath>

#include "json_text.hpp"

namespace syncline {

void ValueEncoder::Init(Oid type, MemoryContext context) {
  type_ = type;
  Oid base = getBaseType(type);
  switch (base) {
    case BOOLOID:
      kind_ = Kind::kBool;
      break;
    case INT2OID:
      kind_ = Kind::kInt2;
      break;
    case INT4OID:
      kind_ = Kind::kInt4;
      break;
    case INT8OID:
      kind_ = Kind::kInt8;
      break;
    case FLOAT4OID:
      kind_ = Kind::kFloat4;
      break;
    case FLOAT8OID:
      kind_ = Kind::kFloat8;
      break;
    case NUMERICOID:
      kind_ = Kind::kNumeric;
      break;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID:
    case NAMEOID:
      kind_ = Kind::kText;
      break;
    case JSONOID:
      kind_ = Kind::kJson;
      break;
    case JSONBOID:
      kind_ = Kind::kJsonb;
      break;
    case BYTEAOID:
      kind_ = Kind::kBytea;
      break;
    case TIMESTAMPOID:
      kind_ = Kind::kTimestamp;
      break;
    case TIMESTAMPTZOID:
      kind_ = Kind::kTimestamptz;
      break;
    case DATEOID:
      kind_ = Kind::kDate;
      break;
    case TIMEOID:
      kind_ = Kind::kTime;
      break;
    case INTERVALOID:
      kind_ = Kind::kInterval;
      break;
    default:
      kind_ = Kind::kOther;
      break;
  }
  Oid elem = get_element_type(base);
  if (kind_ == Kind::kOther && OidIsValid(elem)) {
    kind_ = Kind::kArray;
    elem_type_ = elem;
    get_typlenbyvalalign(elem, &elem_len_, &elem_byval_, &elem_align_);
    elem_ = std::make_shared<ValueEncoder>();
    elem_->Init(elem, context);
    return;
  }
  if (kind_ == Kind::kNumeric || kind_ == Kind::kJsonb || kind_ == Kind::kOther) {
    Oid output_fn;
    bool varlena;
    getTypeOutputInfo(base, &output_fn, &varlena);
    fmgr_info_cxt(output_fn, &output_, context);
  }
}

bool ValueEncoder::IsString() const {
  switch (kind_) {
    case Kind::kBool:
    case Kind::kInt2:
    case Kind::kInt4:
    case Kind::kInt8:
    case Kind::kFloat4:
    case Kind::kFloat8:
    case Kind::kNumeric:
    case Kind::kJson:
    case Kind::kJsonb:
    case Kind::kArray:
      return false;
    default:
      return true;
  }
}

const char *ValueEncoder::JsonKind() const {
  switch (kind_) {
    case Kind::kBool:
      return "boolean";
    case Kind::kInt2:
    case Kind::kInt4:
    case Kind::kInt8:
      return "integer";
    case Kind::kFloat4:
    case Kind::kFloat8:
      return "float";
    case Kind::kNumeric:
      return "numeric";
    case Kind::kJson:
    case Kind::kJsonb:
      return "json";
    case Kind::kArray:
      return "array";
    default:
      return "string";
  }
}

namespace {

void AppendFloat(std::string &out, double value, bool is_float4) {
  if (std::isnan(value)) {
    out += "\"NaN\"";
  } else if (std::isinf(value)) {
    out += value > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  } else {
    char buf[64];
    if (is_float4) {
      float_to_shortest_decimal_buf(static_cast<float>(value), buf);
    } else {
      double_to_shortest_decimal_buf(value, buf);
    }
    out += buf;
  }
}

// std::to_chars, not snprintf: a synced row's integers are encoded for
// every op, and snprintf's format parsing was 4.5% of a bulk INSERT's
// profile.
void AppendInt(std::string &out, int64 value) {
  char buf[24];
  char *end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  out.append(buf, static_cast<size_t>(end - buf));
}

}  // namespace

void ValueEncoder::AppendArrayLevel(std::string &out, const int *dims, int ndim, int level,
                                    const Datum *elems, const bool *nulls, int *index) const {
  out.push_back('[');
  for (int i = 0; i < dims[level]; i++) {
    if (i > 0) out.push_back(',');
    if (level == ndim - 1) {
      elem_->AppendJson(out, elems[*index], nulls[*index]);
      (*index)++;
    } else {
      AppendArrayLevel(out, dims, ndim, level + 1, elems, nulls, index);
    }
  }
  out.push_back(']');
}

void ValueEncoder::AppendJson(std::string &out, Datum value, bool isnull) const {
  if (isnull) {
    out += "null";
    return;
  }
  switch (kind_) {
    case Kind::kBool:
      out += DatumGetBool(value) ? "true" : "false";
      return;
    case Kind::kInt2:
      AppendInt(out, DatumGetInt16(value));
      return;
    case Kind::kInt4:
      AppendInt(out, DatumGetInt32(value));
      return;
    case Kind::kInt8:
      AppendInt(out, DatumGetInt64(value));
      return;
    case Kind::kFloat4:
      AppendFloat(out, DatumGetFloat4(value), true);
      return;
    case Kind::kFloat8:
      AppendFloat(out, DatumGetFloat8(value), false);
      return;
    case Kind::kNumeric: {
      char *text = OutputFunctionCall(const_cast<FmgrInfo *>(&output_), value);
      if (text[0] == 'N' || text[0] == 'I' || (text[0] == '-' && text[1] == 'I')) {
        AppendJsonString(out, text);  // NaN, Infinity, -Infinity: not JSON numbers
      } else {
        out += text;
      }
      pfree(text);
      return;
    }
    case Kind::kText: {
      text *t = DatumGetTextPP(value);
      AppendJsonString(out, std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
      if (reinterpret_cast<Pointer>(t) != DatumGetPointer(value)) pfree(t);
      return;
    }
    case Kind::kJson: {
      text *t = DatumGetTextPP(value);
      out.append(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
      if (reinterpret_cast<Pointer>(t) != DatumGetPointer(value)) pfree(t);
      return;
    }
    case Kind::kJsonb: {
      char *text = OutputFunctionCall(const_cast<FmgrInfo *>(&output_), value);
      out += text;
      pfree(text);
      return;
    }
    case Kind::kBytea: {
      bytea *b = DatumGetByteaPP(value);
      out.push_back('"');
      out += Base64Encode(std::string_view(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b)));
      out.push_back('"');
      if (reinterpret_cast<Pointer>(b) != DatumGetPointer(value)) pfree(b);
      return;
    }
    case Kind::kTimestamp:
    case Kind::kTimestamptz: {
      Timestamp ts = DatumGetTimestamp(value);
      if (TIMESTAMP_IS_NOBEGIN(ts)) {
        out += "\"-infinity\"";
      } else if (TIMESTAMP_IS_NOEND(ts)) {
        out += "\"infinity\"";
      } else {
        out.push_back('"');
        AppendIsoTimestamp(out, ts, kind_ == Kind::kTimestamptz);
        out.push_back('"');
      }
      return;
    }
    case Kind::kDate: {
      DateADT d = DatumGetDateADT(value);
      if (DATE_IS_NOBEGIN(d)) {
        out += "\"-infinity\"";
      } else if (DATE_IS_NOEND(d)) {
        out += "\"infinity\"";
      } else {
        out.push_back('"');
        AppendIsoDate(out, d);
        out.push_back('"');
      }
      return;
    }
    case Kind::kTime:
      out.push_back('"');
      AppendIsoTime(out, DatumGetTimeADT(value));
      out.push_back('"');
      return;
    case Kind::kInterval: {
      // ISO 8601 duration (P1DT2H), whatever the session's IntervalStyle.
      struct pg_itm itm;
      char buf[MAXDATELEN + 1];
      interval2itm(*DatumGetIntervalP(value), &itm);
      EncodeInterval(&itm, INTSTYLE_ISO_8601, buf);
      AppendJsonString(out, buf);
      return;
    }
    case Kind::kArray: {
      ArrayType *array = DatumGetArrayTypeP(value);
      int ndim = ARR_NDIM(array);
      if (ndim == 0) {
        out += "[]";
        return;
      }
      Datum *elems;
      bool *nulls;
      int count;
      deconstruct_array(array, elem_type_, elem_len_, elem_byval_, elem_align_, &elems, &nulls,
                        &count);
      int index = 0;
      AppendArrayLevel(out, ARR_DIMS(array), ndim, 0, elems, nulls, &index);
      pfree(elems);
      pfree(nulls);
      return;
    }
    case Kind::kOther: {
      char *text = OutputFunctionCall(const_cast<FmgrInfo *>(&output_), value);
      AppendJsonString(out, text);
      pfree(text);
      return;
    }
  }
}

void ValueEncoder::AppendText(std::string &out, Datum value, bool isnull) const {
  if (isnull || !IsString()) {
    AppendJson(out, value, isnull);
    return;
  }
  // Strings without quotes or escapes: encode, then unescape is wasteful;
  // the types below have a direct text form.
  switch (kind_) {
    case Kind::kText: {
      text *t = DatumGetTextPP(value);
      out.append(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
      return;
    }
    case Kind::kOther: {
      char *text = OutputFunctionCall(const_cast<FmgrInfo *>(&output_), value);
      out += text;
      pfree(text);
      return;
    }
    default: {
      // Dates, times, bytea: their JSON string form has nothing to escape.
      std::string json;
      AppendJson(json, value, false);
      out.append(json, 1, json.size() - 2);
      return;
    }
  }
}

}  // namespace syncline
