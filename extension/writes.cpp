// syncline.apply_writes: one client transaction applied atomically, as the
// configured write role with the client's claims in scope, exactly once per
// (client_id, seq).
#include "pg_compat.hpp"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/xid8.h"
}

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "flush.hpp"
#include "json_exact.hpp"
#include "rule_cache.hpp"
#include "spi_util.hpp"
#include "staging.hpp"

using json = nlohmann::json;

namespace syncline {

char *write_role_name = nullptr;

namespace {

constexpr size_t kMaxOpsPerBatch = 10000;
// First key of the per-client advisory lock (the flush lock is 1398361667).
constexpr int32 kClientLockKey = 1398361668;

// Rejections a client cannot fix by retrying: they are recorded and replayed.
struct Rejection {
  std::string code;  // SQLSTATE
  std::string message;
  std::string hint;
  int op_index = -1;
};

struct TableInfo {
  Oid relid = InvalidOid;
  std::string name;  // qualified, quoted
  std::vector<AttrNumber> key_attnums;
  std::vector<std::string> key_names;     // quoted
  std::vector<std::string> key_equality;  // OPERATOR(schema.=) of each key column's type
  Oid owner = InvalidOid;
  bool row_security = false;        // ENABLE ROW LEVEL SECURITY
  bool force_row_security = false;  // FORCE ROW LEVEL SECURITY
};

// " OPERATOR(schema.name) ": the default equality operator of a type, written
// so that no search_path can make it mean another one. The statements the
// write path builds name nothing unqualified.
std::string QualifiedEquality(Oid type) {
  TypeCacheEntry *entry = lookup_type_cache(type, TYPECACHE_EQ_OPR);
  if (!OidIsValid(entry->eq_opr)) {
    const char *name = format_type_be(type);  // before any C++ object of the message
    throw Error(ERRCODE_UNDEFINED_FUNCTION,
                std::string("type ") + name + " has no equality operator");
  }
  HeapTuple tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(entry->eq_opr));
  if (!HeapTupleIsValid(tuple)) Fail("cache lookup failed for operator %u", entry->eq_opr);
  auto *form = reinterpret_cast<Form_pg_operator>(GETSTRUCT(tuple));
  const char *schema = quote_identifier(get_namespace_name(form->oprnamespace));
  std::string out = std::string(" OPERATOR(") + schema + "." + NameStr(form->oprname) + ") ";
  ReleaseSysCache(tuple);
  return out;
}

std::string SqlStateText(int code) { return unpack_sql_state(code); }

// Transient failures are raised as errors (the caller retries the batch);
// everything else rejects the batch for good.
bool IsTransient(int code) {
  std::string s = SqlStateText(code);
  std::string cls = s.substr(0, 2);
  return cls == "40" || cls == "53" || cls == "57" || cls == "58" || cls == "08" || s == "55P03" ||
         s == "55006";
}

// Runs one of the write path's fixed statements (a string literal).
void Exec(const char *sql, std::vector<Oid> types, std::vector<Datum> args) {
  ExecPrepared(sql, static_cast<int>(types.size()), types.data(), args.data());
}

Oid WriteRole() {
  const char *name = write_role_name && *write_role_name ? write_role_name : "syncline_writer";
  Oid role = get_role_oid(name, true);
  if (!OidIsValid(role))
    throw Error(ERRCODE_UNDEFINED_OBJECT, std::string("write role \"") + name + "\" does not exist",
                {},
                "Set syncline.write_role to the role whose GRANTs and policies govern client "
                "writes.");
  if (superuser_arg(role) || has_bypassrls_privilege(role))
    throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                std::string("write role \"") + name + "\" bypasses row-level security", {},
                "Client writes must run as a role that holds only what the app grants it.");
  return role;
}

// Renders a JSON array as a Postgres array literal.
void AppendArrayLiteral(std::string &out, const json &array) {
  out.push_back('{');
  bool first = true;
  for (const json &item : array) {
    if (!first) out.push_back(',');
    first = false;
    if (item.is_null()) {
      out += "NULL";
    } else if (item.is_array()) {
      AppendArrayLiteral(out, item);
    } else {
      std::string_view number = ExactNumberText(item);
      std::string text = !number.empty()    ? std::string(number)
                         : item.is_string() ? item.get<std::string>()
                                            : item.dump();
      out.push_back('"');
      for (char c : text) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c);
      }
      out.push_back('"');
    }
  }
  out.push_back('}');
}

// A field that must be a string: its text, or "" when it is missing or anything else.
std::string TextField(const json &object, const char *key) {
  auto it = object.find(key);
  return it != object.end() && IsJsonText(*it) ? it->get<std::string>() : std::string();
}

// The SQL name of a type, for messages; the Postgres call is guarded.
std::string TypeName(Oid type) {
  const char *name = nullptr;
  PgGuard([&] { name = format_type_be(type); });
  return name;
}

// The input text of a JSON value for a column of `type`, or nullopt for NULL. Called outside
// PgGuard: every Postgres call it makes is guarded (none for strings and NULLs).
std::optional<std::string> InputText(const json &value, Oid type, const std::string &column) {
  if (value.is_null()) return std::nullopt;
  // A number that is not a 64-bit integer, as the client wrote it (json_exact.hpp).
  if (std::string_view number = ExactNumberText(value); !number.empty()) return std::string(number);
  if (value.is_string()) return value.get<std::string>();
  Oid base = InvalidOid;
  PgGuard([&] { base = getBaseType(type); });
  if (base == JSONOID || base == JSONBOID) return DumpJsonExact(value);
  if (value.is_array()) {
    bool is_array = false;
    PgGuard([&] { is_array = OidIsValid(get_element_type(base)); });
    if (!is_array)
      throw Rejection{"22023", "column \"" + column + "\" is " + TypeName(type) + ", not an array"};
    std::string literal;
    AppendArrayLiteral(literal, value);
    return literal;
  }
  if (value.is_object())
    throw Rejection{"22023", "column \"" + column + "\" is " + TypeName(type) + ", not an object"};
  return value.dump();  // numbers and booleans
}

// What apply_writes looked up in its catalog tables, per backend: the table
// each type names and the handler (or none) of each (type, schema version).
// Cleared by every relcache invalidation: DDL, create_bucket and drop_bucket
// (they invalidate the data table) and changes to writable_tables and
// write_handlers (their trigger invalidates them). A batch keeps its own
// reference to a table's entry (or a copy of a handler's oid), since an
// invalidation can arrive in the middle of it.
struct WriteCatalog {
  // Shared with the batches that took an entry: an invalidation drops the catalog's
  // reference, never theirs.
  std::unordered_map<std::string, std::shared_ptr<const TableInfo>> tables;
  std::map<std::pair<std::string, std::string>, Oid> handlers;
};

void ClearWriteCatalog(Datum, Oid);

WriteCatalog &Catalog() {
  static WriteCatalog catalog;
  static bool registered = false;
  if (!registered) {
    CacheRegisterRelcacheCallback(ClearWriteCatalog, 0);
    registered = true;
  }
  return catalog;
}

void ClearWriteCatalog(Datum, Oid) {
  Catalog().tables.clear();
  Catalog().handlers.clear();
}

// A jsonb scalar as ParseJsonExact reads its text: an integer that fits 64 bits as a number,
// any other number as its exact text behind the marker (json_exact.hpp).
json ExactScalar(const JsonbValue &v) {
  switch (v.type) {
    case jbvNull:
      return nullptr;
    case jbvBool:
      return static_cast<bool>(v.val.boolean);
    case jbvString:
      return std::string(v.val.string.val, v.val.string.len);
    case jbvNumeric: {
      char *text = nullptr;
      syncline::PgGuard([&] {
        text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
      });
      std::string_view digits(text);
      // numeric_out writes no exponent: an integer is an optional '-' and digits.
      bool negative = !digits.empty() && digits.front() == '-';
      std::string_view magnitude = negative ? digits.substr(1) : digits;
      if (!magnitude.empty() &&
          magnitude.find_first_not_of("0123456789") == std::string_view::npos) {
        if (negative) {
          int64_t i;
          auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
          if (ec == std::errc() && end == digits.data() + digits.size()) return i;
        } else {
          uint64_t u;
          auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), u);
          if (ec == std::errc() && end == digits.data() + digits.size()) {
            if (u <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(u);
            return u;
          }
        }
      }
      return ExactNumber(digits);
    }
    default:
      syncline::Fail("unexpected jsonb scalar type %d", static_cast<int>(v.type));
  }
}

// The document `jb` holds, as ParseJsonExact reads the text JsonbToCString would write for it
// (numbers digit for digit), without writing and reading that text.
json ExactFromJsonb(Jsonb *jb) {
  json root;
  JsonDocumentBuilder builder(root);
  JsonbIterator *it = nullptr;
  syncline::PgGuard([&] { it = JsonbIteratorInit(&jb->root); });
  bool raw_scalar = false;  // a scalar document: jsonb wraps it in a one-element array
  for (;;) {
    JsonbValue v;
    JsonbIteratorToken token = WJB_DONE;
    syncline::PgGuard([&] { token = JsonbIteratorNext(&it, &v, false); });
    if (token == WJB_DONE) break;
    switch (token) {
      case WJB_BEGIN_OBJECT:
        builder.Open(json::object());
        break;
      case WJB_BEGIN_ARRAY:
        if (v.val.array.rawScalar)
          raw_scalar = true;
        else
          builder.Open(json::array());
        break;
      case WJB_END_OBJECT:
        builder.Close();
        break;
      case WJB_END_ARRAY:
        if (raw_scalar)
          raw_scalar = false;
        else
          builder.Close();
        break;
      case WJB_KEY:
        builder.Key(std::string(v.val.string.val, v.val.string.len));
        break;
      case WJB_VALUE:
      case WJB_ELEM:
        builder.Value(ExactScalar(v));
        break;
      default:
        break;
    }
  }
  return root;
}

class BatchApplier {
 public:
  BatchApplier(const std::string &schema_version, Oid role)
      : schema_version_(schema_version), role_(role) {}

  void Apply(const json &op, int index) {
    index_ = index;
    std::string kind = TextField(op, "op");
    if (!op.contains("type") || !IsJsonText(op["type"]))
      Reject("22023", "op " + std::to_string(index) + " has no \"type\"");
    std::string type = op["type"];
    std::optional<json> rewritten = RunHandler(type, op);
    if (!rewritten) return;  // the handler applied it
    const json &effective = *rewritten;
    kind = TextField(effective, "op");
    if (effective.contains("type")) type = TextField(effective, "type");
    if (kind != "PUT" && kind != "PATCH" && kind != "DELETE")
      Reject("22023", "op " + std::to_string(index) + " has unknown kind \"" + kind + "\"",
             "Use PUT, PATCH or DELETE.");
    if (!effective.contains("id") || effective["id"].is_null())
      Reject("22023", "op " + std::to_string(index) + " has no \"id\"");
    const TableInfo &table = Table(type);
    bool owns = false;
    PgGuard([&] { owns = has_privs_of_role(role_, table.owner); });
    if (owns && !(table.row_security && table.force_row_security))
      Reject("42501",
             "the write role owns table " + table.name +
                 ", so neither its GRANTs nor its row-level security policies would apply",
             "ALTER TABLE " + table.name +
                 " ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; or let another role own "
                 "the table.");
    json data = effective.value("data", json::object());
    if ((kind == "PUT" || kind == "PATCH") && !data.is_object())
      Reject("22023", "\"data\" of op " + std::to_string(index) + " must be an object");

    std::vector<Oid> types;
    std::vector<Datum> values;
    std::string nulls;
    // Key values from "id": a scalar, or an array for composite keys.
    json id = effective["id"];
    if (table.key_attnums.size() > 1 && !id.is_array())
      Reject("22023", "\"" + type + "\" has a composite key: \"id\" must be an array of " +
                          std::to_string(table.key_attnums.size()) + " values");
    std::vector<json> key_values;
    if (table.key_attnums.size() == 1) {
      key_values.push_back(id);
    } else {
      for (const json &v : id) key_values.push_back(v);
      if (key_values.size() != table.key_attnums.size())
        Reject("22023", "\"id\" of op " + std::to_string(index) + " must have " +
                            std::to_string(table.key_attnums.size()) + " values");
    }
    std::vector<std::string> key_params;
    for (size_t k = 0; k < table.key_attnums.size(); k++) {
      AddValue(table, table.key_attnums[k], key_values[k], types, values, nulls);
      key_params.push_back("$" + std::to_string(values.size()));
    }
    std::vector<std::string> columns, params;
    if (kind != "DELETE") {
      for (auto it = data.begin(); it != data.end(); ++it) {
        AttrNumber attnum = get_attnum(table.relid, it.key().c_str());
        if (attnum == InvalidAttrNumber || attnum < 0)
          Reject("42703", "column \"" + it.key() + "\" does not exist in \"" + type + "\"",
                 schema_version_.empty()
                     ? std::string()
                     : "The client was built for schema version \"" + schema_version_ +
                           "\"; declare a handler with syncline.set_write_handler('" + type +
                           "', '" + schema_version_ + "', ...) to map its writes.");
        if (std::find(table.key_attnums.begin(), table.key_attnums.end(), attnum) !=
            table.key_attnums.end())
          continue;  // the key comes from "id"
        AddValue(table, attnum, it.value(), types, values, nulls);
        columns.push_back(quote_identifier(it.key().c_str()));
        params.push_back("$" + std::to_string(values.size()));
      }
    }
    std::string where;
    for (size_t k = 0; k < key_params.size(); k++)
      where += (k ? " AND " : "") + table.key_names[k] + table.key_equality[k] + key_params[k];

    std::string sql;
    if (kind == "PUT") {
      std::string cols, vals, sets;
      for (size_t k = 0; k < key_params.size(); k++) {
        cols += (k ? ", " : "") + table.key_names[k];
        vals += (k ? ", " : "") + key_params[k];
      }
      for (size_t c = 0; c < columns.size(); c++) {
        cols += ", " + columns[c];
        vals += ", " + params[c];
        sets += (c ? ", " : "") + columns[c] + " = EXCLUDED." + columns[c];
      }
      std::string conflict;
      for (size_t k = 0; k < key_params.size(); k++)
        conflict += (k ? ", " : "") + table.key_names[k];
      sql = "INSERT INTO " + table.name + " (" + cols + ") VALUES (" + vals + ") ON CONFLICT (" +
            conflict + ") DO " + (sets.empty() ? "NOTHING" : "UPDATE SET " + sets);
    } else if (kind == "PATCH") {
      if (columns.empty()) {
        sql = "SELECT 1 FROM " + table.name + " WHERE " + where;
      } else {
        std::string sets;
        for (size_t c = 0; c < columns.size(); c++)
          sets += (c ? ", " : "") + columns[c] + " = " + params[c];
        sql = "UPDATE " + table.name + " SET " + sets + " WHERE " + where;
      }
    } else {
      sql = "DELETE FROM " + table.name + " WHERE " + where;
    }
    uint64 processed = 0;
    PgGuard([&] {
      SPIPlanPtr plan = Plan(sql, types);
      int rc = SPI_execute_plan(plan, values.data(), nulls.c_str(), false, 0);
      if (rc < 0) Fail("applying op failed: %s", SPI_result_code_string(rc));
      processed = SPI_processed;
    });
    if (kind == "PATCH" && processed == 0)
      Reject("P0002", "row " + DumpJsonExact(id) + " of \"" + type + "\" does not exist",
             "It was deleted (or is not visible to this user); the server state wins.");
  }

  int index() const { return index_; }

 private:
  [[noreturn]] void Reject(const std::string &code, const std::string &message,
                           const std::string &hint = {}) {
    throw Rejection{code, message, hint, index_};
  }

  // Appends one parameter: the JSON value converted to the column's type.
  void AddValue(const TableInfo &table, AttrNumber attnum, const json &value,
                std::vector<Oid> &types, std::vector<Datum> &values, std::string &nulls) {
    Oid type;
    int32 typmod;
    Oid collation;
    std::string column;
    PgGuard([&] {
      get_atttypetypmodcoll(table.relid, attnum, &type, &typmod, &collation);
      column = get_attname(table.relid, attnum, false);
    });
    std::optional<std::string> text;
    try {
      text = InputText(value, type, column);
    } catch (Rejection &r) {
      r.op_index = index_;
      throw;
    }
    Datum datum = 0;
    if (text) {
      try {
        PgGuard([&] {
          Oid input_fn, ioparam;
          getTypeInputInfo(type, &input_fn, &ioparam);
          datum =
              OidInputFunctionCall(input_fn, const_cast<char *>(text->c_str()), ioparam, typmod);
        });
      } catch (const Error &e) {
        Reject(SqlStateText(e.sqlstate()),
               "invalid value for column \"" + column + "\": " + e.message());
      }
    }
    types.push_back(type);
    values.push_back(datum);
    nulls.push_back(text ? ' ' : 'n');
  }

  const TableInfo &Table(const std::string &type) {
    auto it = tables_.find(type);
    if (it != tables_.end()) return *it->second;
    auto cached = Catalog().tables.find(type);
    if (cached != Catalog().tables.end())
      return *tables_.emplace(type, cached->second).first->second;
    std::vector<Oid> found;
    PgGuard([&] {
      AsEngine([&] {
        Exec(
            "SELECT relation::oid FROM syncline_internal.data_queries WHERE object_type = $1 "
            "UNION "
            "SELECT relation::oid FROM syncline_internal.writable_tables WHERE object_type = $1",
            {TEXTOID}, {CStringGetTextDatum(type.c_str())});
        for (uint64 i = 0; i < SPI_processed; i++) {
          bool isnull;
          found.push_back(DatumGetObjectId(
              SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
        }
      });
    });
    if (found.empty())
      Reject("42P01", "type \"" + type + "\" is not synced and not open for writes",
             "Sync it in a bucket, or allow writes with syncline.allow_writes('<table>').");
    if (found.size() > 1)
      Reject("42P09", "type \"" + type + "\" names more than one table",
             "Give the data queries distinct aliases.");
    TableInfo info;
    info.relid = found[0];
    PgGuard([&] {
      Relation rel = relation_open(info.relid, AccessShareLock);
      info.name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
                                             RelationGetRelationName(rel));
      // The key columns come from the compiled rules (cached per backend).
      info.key_attnums = GetTableRules(rel).key_attnums;
      for (AttrNumber attnum : info.key_attnums) {
        Form_pg_attribute attr = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
        info.key_names.push_back(quote_identifier(NameStr(attr->attname)));
        info.key_equality.push_back(QualifiedEquality(attr->atttypid));
      }
      info.owner = rel->rd_rel->relowner;
      info.row_security = rel->rd_rel->relrowsecurity;
      info.force_row_security = rel->rd_rel->relforcerowsecurity;
      relation_close(rel, AccessShareLock);
    });
    if (info.key_attnums.empty())
      Reject("55000", "table of type \"" + type + "\" has no primary key");
    auto shared = std::make_shared<const TableInfo>(std::move(info));
    Catalog().tables[type] = shared;
    return *tables_.emplace(type, std::move(shared)).first->second;
  }

  // Runs the app's handler for ops of an older schema version. Returns the
  // op to apply (the handler's rewrite, or the op itself), or nullopt when
  // the handler applied it.
  std::optional<json> RunHandler(const std::string &type, const json &op) {
    if (schema_version_.empty()) return op;
    Oid handler = InvalidOid;
    auto key = std::make_pair(type, schema_version_);
    auto cached = Catalog().handlers.find(key);
    if (cached != Catalog().handlers.end()) {
      handler = cached->second;
      return OidIsValid(handler) ? ApplyHandler(handler, op) : std::optional<json>(op);
    }
    PgGuard([&] {
      AsEngine([&] {
        Exec(
            "SELECT handler FROM syncline_internal.write_handlers "
            "WHERE object_type = $1 AND schema_version = $2",
            {TEXTOID, TEXTOID},
            {CStringGetTextDatum(type.c_str()), CStringGetTextDatum(schema_version_.c_str())});
        if (SPI_processed > 0) {
          bool isnull;
          handler = DatumGetObjectId(
              SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        }
      });
    });
    Catalog().handlers[key] = handler;
    if (!OidIsValid(handler)) return op;
    return ApplyHandler(handler, op);
  }

  std::optional<json> ApplyHandler(Oid handler, const json &op) {
    std::optional<json> result;
    std::string op_text = DumpJsonExact(op);
    // Outside the guard that runs the handler: a handler that raises an ERROR (the usual
    // way to refuse a write) longjmps out of it, past the destructors of its locals.
    std::string sql;
    PgGuard([&] {
      const char *name = quote_qualified_identifier(get_namespace_name(get_func_namespace(handler)),
                                                    get_func_name(handler));
      sql = std::string("SELECT ") + name + "($1::pg_catalog.jsonb)";
    });
    Jsonb *rewritten = nullptr;  // in SPI's memory until its next statement
    PgGuard([&] {
      Datum arg = DirectFunctionCall1(jsonb_in, CStringGetDatum(op_text.c_str()));
      Oid types[1] = {JSONBOID};
      int rc = SPI_execute_with_args(sql.c_str(), 1, types, &arg, nullptr, false, 0);
      if (rc != SPI_OK_SELECT || SPI_processed != 1) Fail("write handler failed");
      bool isnull;
      Datum out = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
      if (!isnull) rewritten = DatumGetJsonbP(out);
    });
    if (rewritten != nullptr) result = ExactFromJsonb(rewritten);
    if (result && !result->is_object()) {
      const char *name = nullptr;
      PgGuard([&] { name = format_procedure(handler); });
      Reject("22023", "write handler " + std::string(name) +
                          " returned something other than an op object or NULL");
    }
    return result;
  }

  SPIPlanPtr Plan(const std::string &sql, std::vector<Oid> &types) {
    static std::unordered_map<std::string, SPIPlanPtr> plans;
    std::string key = sql;
    for (Oid t : types) key += "|" + std::to_string(t);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    // Its own PgGuard: a statement that does not parse (a column the table
    // does not have) raises while `key` is alive.
    SPIPlanPtr plan = nullptr;
    PgGuard([&] {
      plan = SPI_prepare(sql.c_str(), static_cast<int>(types.size()), types.data());
      if (plan == nullptr) Fail("preparing \"%s\" failed", sql.c_str());
      SPI_keepplan(plan);
    });
    plans.emplace(key, plan);
    return plan;
  }

  std::string schema_version_;
  Oid role_;
  std::map<std::string, std::shared_ptr<const TableInfo>> tables_;
  int index_ = -1;
};

// A scalar as a JsonbValue. Strings point into `value`, which must outlive the jsonb's
// construction. Called inside PgGuard; nothing here has a destructor.
JsonbValue JsonbScalar(const json &value) {
  JsonbValue v;
  if (value.is_null()) {
    v.type = jbvNull;
  } else if (value.is_boolean()) {
    v.type = jbvBool;
    v.val.boolean = value.get<bool>();
  } else if (value.is_string() && ExactNumberText(value).empty()) {
    const std::string &text = value.get_ref<const std::string &>();
    v.type = jbvString;
    v.val.string.val = const_cast<char *>(text.data());
    v.val.string.len = static_cast<int>(text.size());
  } else {
    v.type = jbvNumeric;
    if (value.is_number_integer() && !value.is_number_unsigned()) {
      v.val.numeric = int64_to_numeric(value.get<int64_t>());
    } else if (value.is_number_float()) {
      v.val.numeric =
          DatumGetNumeric(DirectFunctionCall1(float8_numeric, Float8GetDatum(value.get<double>())));
    } else {
      // An unsigned integer past int64, or a number kept as its exact text.
      std::string_view exact = ExactNumberText(value);
      char digits[24];
      if (exact.empty()) {
        auto end = std::to_chars(digits, digits + sizeof digits, value.get<uint64_t>()).ptr;
        exact = std::string_view(digits, static_cast<size_t>(end - digits));
      }
      char *text = pnstrdup(exact.data(), exact.size());
      v.val.numeric = DatumGetNumeric(DirectFunctionCall3(
          numeric_in, CStringGetDatum(text), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
    }
  }
  return v;
}

// Pushes a container's tokens; returns the finished value at its end.
JsonbValue *PushContainer(JsonbParseState **state, const json &value) {
  bool object = value.is_object();
  pushJsonbValue(state, object ? WJB_BEGIN_OBJECT : WJB_BEGIN_ARRAY, nullptr);
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (object) {
      JsonbValue key;
      key.type = jbvString;
      key.val.string.val = const_cast<char *>(it.key().data());
      key.val.string.len = static_cast<int>(it.key().size());
      pushJsonbValue(state, WJB_KEY, &key);
    }
    if (it->is_structured()) {
      PushContainer(state, *it);
    } else {
      JsonbValue scalar = JsonbScalar(*it);
      pushJsonbValue(state, object ? WJB_VALUE : WJB_ELEM, &scalar);
    }
  }
  return pushJsonbValue(state, object ? WJB_END_OBJECT : WJB_END_ARRAY, nullptr);
}

// The jsonb of a document, built directly rather than written as text and parsed again.
Datum JsonbFrom(const json &value) {
  Datum result = 0;
  PgGuard([&] {
    JsonbValue *built;
    JsonbValue scalar;
    if (value.is_structured()) {
      JsonbParseState *state = nullptr;
      built = PushContainer(&state, value);
    } else {
      scalar = JsonbScalar(value);
      built = &scalar;
    }
    result = JsonbPGetDatum(JsonbValueToJsonb(built));
  });
  return result;
}

}  // namespace
}  // namespace syncline

using syncline::Error;
using json = nlohmann::json;

namespace {

// A client's recorded batch: its seq and the token subject that owns the client id.
struct RecordedBatch {
  int64_t seq = 0;
  std::string subject;
};

// The newest record of `client_id` at seq >= `from`, read from client_batches' (client_id,
// seq) primary key the way
//   SELECT seq, subject FROM syncline_internal.client_batches
//    WHERE client_id = $1 AND seq >= $2 ORDER BY seq DESC LIMIT 1
// reads it through SPI: in a new snapshot (taken after the caller's per-client lock) that
// sees this transaction's earlier statements, the table's locks kept to the end of the
// transaction. Without that statement's executor start-up and role switch: ~45,000 of the
// ~380,000 instructions a single-op batch cost (bench/instructions.sh).
std::optional<RecordedBatch> NewestRecord(const std::string &client_id, int64_t from) {
  bool found = false;
  int64 seq = 0;
  char *subject = nullptr;
  syncline::PgGuard([&] {
    Relation heap = table_open(syncline::InternalRelid("client_batches"), AccessShareLock);
    AttrNumber client_att = get_attnum(RelationGetRelid(heap), "client_id");
    AttrNumber seq_att = get_attnum(RelationGetRelid(heap), "seq");
    AttrNumber subject_att = get_attnum(RelationGetRelid(heap), "subject");
    Oid index_oid = RelationGetPrimaryKeyIndex(heap);
    if (!OidIsValid(index_oid) || subject_att == InvalidAttrNumber)
      syncline::Fail("syncline_internal.client_batches has lost its primary key or a column");
    Relation index = index_open(index_oid, AccessShareLock);
    if (index->rd_index->indnkeyatts != 2 || index->rd_index->indkey.values[0] != client_att ||
        index->rd_index->indkey.values[1] != seq_att)
      syncline::Fail("the primary key of syncline_internal.client_batches is not (client_id, seq)");
    CommandCounterIncrement();
    Snapshot snapshot = RegisterSnapshot(GetTransactionSnapshot());
    ScanKeyData keys[2];
    ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
                           index->rd_indcollation[0], F_TEXTEQ,
                           CStringGetTextDatum(client_id.c_str()));
    ScanKeyEntryInitialize(&keys[1], 0, 2, BTGreaterEqualStrategyNumber, InvalidOid,
                           index->rd_indcollation[1], F_INT8GE, Int64GetDatum(from));
    IndexScanDesc scan = index_beginscan(heap, index, snapshot, 2, 0);
    index_rescan(scan, keys, 2, nullptr, 0);
    TupleTableSlot *slot = table_slot_create(heap, nullptr);
    if (index_getnext_slot(scan, BackwardScanDirection, slot)) {
      bool isnull;
      found = true;
      seq = DatumGetInt64(slot_getattr(slot, seq_att, &isnull));
      Datum value = slot_getattr(slot, subject_att, &isnull);
      subject = isnull ? nullptr : TextDatumGetCString(value);
    }
    ExecDropSingleTupleTableSlot(slot);
    index_endscan(scan);
    UnregisterSnapshot(snapshot);
    index_close(index, NoLock);
    table_close(heap, NoLock);
  });
  if (!found) return std::nullopt;
  return RecordedBatch{seq, subject ? subject : ""};
}

// Records a batch's outcome in client_batches, as
//   INSERT INTO syncline_internal.client_batches (client_id, seq, subject, outcome)
//   VALUES ($1, $2, $3, $4)
// does (write_checkpoint NULL, applied_at now(), txid pg_current_xact_id(): the columns'
// defaults), straight into the heap and its (client_id, seq) primary key, which refuses a
// duplicate as the statement would. Returns false, having written nothing, when the table is
// not as this library knows it (another column, another index, a trigger): the caller runs
// the statement then. Saves that statement's executor start-up and role switch per batch.
bool RecordBatch(const std::string &client_id, int64_t seq, const std::string &subject,
                 Datum outcome) {
  bool recorded = false;
  syncline::PgGuard([&] {
    Relation rel = table_open(syncline::InternalRelid("client_batches"), RowExclusiveLock);
    TupleDesc desc = RelationGetDescr(rel);
    Datum *values = static_cast<Datum *>(palloc0(sizeof(Datum) * desc->natts));
    bool *nulls = static_cast<bool *>(palloc(sizeof(bool) * desc->natts));
    bool known = true;
    for (int i = 0; i < desc->natts && known; i++) {
      Form_pg_attribute attr = TupleDescAttr(desc, i);
      nulls[i] = false;
      const char *name = NameStr(attr->attname);
      if (attr->attisdropped || strcmp(name, "write_checkpoint") == 0)
        nulls[i] = true;
      else if (strcmp(name, "client_id") == 0)
        values[i] = CStringGetTextDatum(client_id.c_str());
      else if (strcmp(name, "seq") == 0)
        values[i] = Int64GetDatum(seq);
      else if (strcmp(name, "subject") == 0)
        values[i] = CStringGetTextDatum(subject.c_str());
      else if (strcmp(name, "outcome") == 0)
        values[i] = outcome;
      else if (strcmp(name, "applied_at") == 0)
        values[i] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
      else if (strcmp(name, "txid") == 0)
        values[i] = FullTransactionIdGetDatum(GetTopFullTransactionId());
      else
        known = false;
    }
    Oid key_oid = RelationGetPrimaryKeyIndex(rel);
    List *index_oids = RelationGetIndexList(rel);
    Relation key = nullptr;
    // A trigger someone added runs only for the statement.
    if (known && rel->trigdesc == nullptr && OidIsValid(key_oid) && list_length(index_oids) == 1) {
      key = index_open(key_oid, RowExclusiveLock);
      if (key->rd_index->indnkeyatts != 2 || key->rd_index->indnatts != 2 ||
          !heap_attisnull(key->rd_indextuple, Anum_pg_index_indexprs, nullptr) ||
          !heap_attisnull(key->rd_indextuple, Anum_pg_index_indpred, nullptr)) {
        index_close(key, RowExclusiveLock);
        key = nullptr;
      }
    }
    if (key != nullptr) {
      HeapTuple tuple = heap_form_tuple(desc, values, nulls);
      simple_heap_insert(rel, tuple);
      Datum key_values[2];
      bool key_nulls[2] = {false, false};
      for (int k = 0; k < 2; k++) {
        AttrNumber attnum = key->rd_index->indkey.values[k];
        key_values[k] = values[attnum - 1];
        key_nulls[k] = nulls[attnum - 1];
      }
      index_insert(key, key_values, key_nulls, &tuple->t_self, rel, UNIQUE_CHECK_YES, false,
                   BuildIndexInfo(key));
      index_close(key, NoLock);
      recorded = true;
    }
    table_close(rel, NoLock);
  });
  return recorded;
}

}  // namespace

SYNCLINE_FUNCTION(syncline_apply_writes) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
    throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "claims, client_id and batch must not be NULL");
  std::string claims_text, client_id, subject;
  Jsonb *batch_jsonb = nullptr;
  syncline::PgGuard([&] {
    Jsonb *claims = PG_GETARG_JSONB_P(0);
    claims_text = JsonbToCString(nullptr, &claims->root, VARSIZE(claims));
    // The subject straight from the jsonb: the claims are not needed as a document here.
    if (JB_ROOT_IS_OBJECT(claims)) {
      JsonbValue *sub = getKeyJsonValueFromContainer(&claims->root, "sub", 3, nullptr);
      if (sub != nullptr && sub->type == jbvString)
        subject.assign(sub->val.string.val, sub->val.string.len);
    }
    client_id = TextDatumGetCString(PG_GETARG_DATUM(1));
    batch_jsonb = PG_GETARG_JSONB_P(2);
  });
  if (client_id.empty() || client_id.size() > 200)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "client_id must be 1 to 200 characters");
  // Numbers kept as written: a value for a numeric or jsonb column arrives digit for digit.
  json batch = syncline::ExactFromJsonb(batch_jsonb);
  if (!batch.is_object() || !batch.contains("seq") || !batch["seq"].is_number_integer() ||
      batch["seq"].get<int64_t>() < 0)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "batch needs a non-negative integer \"seq\"", {},
                "A batch is {\"seq\": n, \"schema_version\": \"...\", \"ops\": [...]}.");
  int64_t seq = batch["seq"].get<int64_t>();
  std::string schema_version =
      batch.contains("schema_version") && syncline::IsJsonText(batch["schema_version"])
          ? batch["schema_version"].get<std::string>()
          : "";
  // PowerSync transaction ids grow but skip numbers; the native protocol's
  // seqs are contiguous from 1.
  bool allow_gaps = batch.contains("allow_gaps") && batch["allow_gaps"].is_boolean() &&
                    batch["allow_gaps"].get<bool>();
  if (subject.empty())
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "claims need a non-empty \"sub\"", {},
                "A client id belongs to the token subject that wrote its first batch.");

  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
  });
  // One batch of a client at a time, across every gateway: a transaction
  // advisory lock on the client id's hash (a collision merely serializes two
  // clients). Taking it writes nothing, unlike a row lock.
  std::optional<int64_t> last_seq;
  std::string owner;
  std::optional<json> previous;
  std::optional<int64_t> previous_checkpoint;
  syncline::PgGuard([&] {
    uint32 hash = DatumGetUInt32(hash_any(reinterpret_cast<const unsigned char *>(client_id.data()),
                                          static_cast<int>(client_id.size())));
    DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(syncline::kClientLockKey),
                        Int32GetDatum(static_cast<int32>(hash)));
  });
  // Batches are recorded in seq order: the newest record is the last seq, and only a seq at
  // or below it can be a retry of a recorded batch. Usually the batch is the next one (or a
  // retry of the last): the newest record at or after seq - 1 is then the newest of all, and
  // the index scan stops there instead of reading every record of the client on its page.
  // Only a new client, a gap (PowerSync transaction ids) or a hole in the seqs needs the
  // unbounded look. Recorded seqs are never negative: from seq 1 down, the first look was
  // already unbounded.
  std::optional<RecordedBatch> newest = NewestRecord(client_id, seq - 1);
  if (!newest && seq - 1 > 0) newest = NewestRecord(client_id, PG_INT64_MIN);
  if (newest) {
    last_seq = newest->seq;
    owner = newest->subject;
  }
  // Batches recorded before 0.2 have no subject: the next one binds it.
  if (newest && (owner.empty() || owner == subject) && seq <= *last_seq) {
    Jsonb *recorded_outcome = nullptr;  // in SPI's memory until its next statement
    syncline::PgGuard([&] {
      syncline::AsEngine([&] {
        Datum id = CStringGetTextDatum(client_id.c_str());
        // A retry: its recorded outcome.
        syncline::Exec(syncline::ResolvesWriteCheckpoints()
                           ? "SELECT outcome, syncline_internal.published_write_checkpoint("
                             "         write_checkpoint, txid) "
                             "  FROM syncline_internal.client_batches "
                             " WHERE client_id = $1 AND seq = $2"
                           : "SELECT outcome, write_checkpoint "
                             "  FROM syncline_internal.client_batches "
                             " WHERE client_id = $1 AND seq = $2",
                       {TEXTOID, INT8OID}, {id, Int64GetDatum(seq)});
        if (SPI_processed == 0) return;
        bool isnull;
        recorded_outcome =
            DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        Datum wc = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
        if (!isnull) previous_checkpoint = DatumGetInt64(wc);
      });
    });
    // Read as apply_writes reads a batch: the answer repeats the first one digit for digit.
    if (recorded_outcome != nullptr) previous = syncline::ExactFromJsonb(recorded_outcome);
  }
  auto answer = [](const json &outcome) {
    syncline::PgGuard([] { SPI_finish(); });
    return syncline::JsonbFrom(outcome);
  };
  if (last_seq && !owner.empty() && owner != subject) {
    // Someone else's client id: nothing of the owner's is touched, nothing
    // is recorded.
    return answer(json{{"status", "rejected"},
                       {"seq", seq},
                       {"code", "42501"},
                       {"message", "client id \"" + client_id +
                                       "\" belongs to another user; its batches were not touched"},
                       {"hint", "Each installation needs a client id of its own."}});
  }
  if (previous) {
    json outcome = *previous;
    outcome["duplicate"] = true;
    if (previous_checkpoint) outcome["write_checkpoint"] = *previous_checkpoint;
    return answer(outcome);
  }
  if (last_seq && seq <= *last_seq) {
    return answer(json{
        {"status", "rejected"},
        {"seq", seq},
        {"code", "seq_regressed"},
        {"message", "batch seq " + std::to_string(seq) + " is at or below this client's last seq " +
                        std::to_string(*last_seq) + " and is not known; it was not applied"},
        {"last_seq", *last_seq}});
  }
  // Contiguous seqs: a client's first batch is seq 1, each next one follows
  // its last, whichever gateway it comes through.
  int64_t expected = last_seq ? *last_seq + 1 : 1;
  if (!allow_gaps && seq != expected) {
    return answer(json{{"status", "out_of_order"},
                       {"seq", seq},
                       {"expected_seq", expected},
                       {"message", "batches of a client apply in seq order; upload seq " +
                                       std::to_string(expected) + " first"}});
  }

  json outcome;
  std::optional<syncline::Rejection> rejection;
  const json ops = batch.value("ops", json::array());
  if (!ops.is_array() || ops.empty()) {
    rejection =
        syncline::Rejection{"22023", "batch has no ops", "\"ops\" must be a non-empty array"};
  } else if (ops.size() > syncline::kMaxOpsPerBatch) {
    rejection = syncline::Rejection{
        "54000", "batch has " + std::to_string(ops.size()) + " ops; at most " +
                     std::to_string(syncline::kMaxOpsPerBatch) + " are applied at once"};
  } else {
    MemoryContext caller_context = CurrentMemoryContext;
    ResourceOwner caller_owner = CurrentResourceOwner;
    Oid role = syncline::WriteRole();
    syncline::PgGuard([] { BeginInternalSubTransaction(nullptr); });
    syncline::BatchApplier applier(schema_version, role);
    try {
      int nest_level = 0;
      Oid saved_user;
      int saved_context;
      syncline::PgGuard([&] {
        nest_level = NewGUCNestLevel();
        (void)set_config_option("syncline.claims", claims_text.c_str(), PGC_SUSET, PGC_S_SESSION,
                                GUC_ACTION_SAVE, true, 0, false);
        GetUserIdAndSecContext(&saved_user, &saved_context);
        SetUserIdAndSecContext(role, saved_context | SECURITY_LOCAL_USERID_CHANGE);
      });
      for (size_t i = 0; i < ops.size(); i++) {
        if (!ops[i].is_object())
          throw syncline::Rejection{
              "22023", "op " + std::to_string(i) + " is not an object", {}, static_cast<int>(i)};
        if (ops[i].contains("refused") && syncline::IsJsonText(ops[i]["refused"])) {
          // The caller could not pass this op on (a value jsonb cannot hold, such as U+0000,
          // or one nested too deep): the batch is refused here, so that is recorded under its
          // seq like any rejection. The caller's SQLSTATE is kept when it is one.
          std::string code = "22P05";
          if (ops[i].contains("code") && syncline::IsJsonText(ops[i]["code"])) {
            const std::string &c = ops[i]["code"].get_ref<const std::string &>();
            if (c.size() == 5 && std::all_of(c.begin(), c.end(), [](char ch) {
                  return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z');
                }))
              code = c;
          }
          throw syncline::Rejection{code, ops[i]["refused"].get<std::string>(),
                                    "fix the value on the client and write it in a new batch",
                                    static_cast<int>(i)};
        }
        applier.Apply(ops[i], static_cast<int>(i));
      }
      syncline::PgGuard([&] {
        SetUserIdAndSecContext(saved_user, saved_context);
        AtEOXact_GUC(true, nest_level);
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
      });
      outcome = json{{"status", "applied"}, {"seq", seq}, {"ops", ops.size()}};
    } catch (const syncline::Rejection &r) {
      rejection = r;
    } catch (const Error &e) {
      if (syncline::IsTransient(e.sqlstate())) {
        syncline::PgGuard([&] {
          RollbackAndReleaseCurrentSubTransaction();
          MemoryContextSwitchTo(caller_context);
          CurrentResourceOwner = caller_owner;
        });
        throw;
      }
      rejection = syncline::Rejection{syncline::SqlStateText(e.sqlstate()), e.message(),
                                      e.pg_error() && e.pg_error()->hint ? e.pg_error()->hint : "",
                                      applier.index()};
    }
    if (rejection) {
      syncline::PgGuard([&] {
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
      });
    }
  }
  if (rejection) {
    outcome = json{{"status", "rejected"},
                   {"seq", seq},
                   {"code", rejection->code},
                   {"message", rejection->message}};
    if (!rejection->hint.empty()) outcome["hint"] = rejection->hint;
    if (rejection->op_index >= 0) {
      outcome["op_index"] = rejection->op_index;
      const json &op = ops[rejection->op_index];
      if (op.is_object()) {
        if (op.contains("type")) outcome["type"] = op["type"];
        if (op.contains("id")) outcome["id"] = op["id"];
      }
    }
  }
  // One jsonb for the record and the answer (made in SPI's context, copied out at the end).
  Datum outcome_jsonb = syncline::JsonbFrom(outcome);
  Datum result = 0;
  bool recorded = RecordBatch(client_id, seq, subject, outcome_jsonb);
  syncline::PgGuard([&] {
    if (!recorded)
      syncline::AsEngine([&] {
        Datum id = CStringGetTextDatum(client_id.c_str());
        syncline::Exec(
            "INSERT INTO syncline_internal.client_batches (client_id, seq, subject, outcome) "
            "VALUES ($1, $2, $3, $4)",
            {TEXTOID, INT8OID, TEXTOID, JSONBOID},
            {id, Int64GetDatum(seq), CStringGetTextDatum(subject.c_str()), outcome_jsonb});
      });
    // The flush that takes this marker publishes the batch (its record's txid,
    // a column default, tells readers which flush: published_write_checkpoint).
    char seq_text[32];
    snprintf(seq_text, sizeof seq_text, "%lld", static_cast<long long>(seq));
    syncline::StageMarker(syncline::kStagedWriteMarker, client_id.c_str(), seq_text);
    result = SPI_datumTransfer(outcome_jsonb, false, -1);
    SPI_finish();
  });
  return result;
}

// Statement trigger on writable_tables and write_handlers: every backend's
// apply_writes cache of them is stale once this transaction commits.
SYNCLINE_FUNCTION(syncline_invalidate_write_catalog) {
  syncline::PgGuard([&] {
    if (!CALLED_AS_TRIGGER(fcinfo))
      syncline::Fail("invalidate_write_catalog must run as a trigger");
    auto *trigger = reinterpret_cast<TriggerData *>(fcinfo->context);
    CacheInvalidateRelcacheByRelid(RelationGetRelid(trigger->tg_relation));
  });
  return PointerGetDatum(nullptr);
}
