// syncline.create_bucket / syncline.drop_bucket: validate rules, record them,
// and install the triggers that feed the op log.
#include "pg_compat.hpp"

extern "C" {
#include "access/relation.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_trigger_d.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "parser/parser.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
}

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "datum_json.hpp"
#include "rule_cache.hpp"
#include "rules.hpp"
#include "staging.hpp"

namespace syncline {
namespace {

void CheckAdmin(const char *action) {
  Oid admin = get_role_oid("syncline_admin", true);
  if (superuser() || (OidIsValid(admin) && has_privs_of_role(GetUserId(), admin))) return;
  throw Error(
      ERRCODE_INSUFFICIENT_PRIVILEGE, std::string("permission denied to ") + action,
      "Only superusers and members of syncline_admin may declare or drop sync rules.",
      std::string("GRANT syncline_admin TO ") + GetUserNameFromId(GetUserId(), false) + ";");
}

void CheckBucketName(const std::string &name) {
  bool ok = !name.empty() && name.size() <= 63 && (isalpha(name[0]) || name[0] == '_');
  for (char c : name) ok = ok && (isalnum(static_cast<unsigned char>(c)) || c == '_');
  if (!ok)
    throw Error(ERRCODE_INVALID_NAME, "invalid bucket name \"" + name + "\"", {},
                "Bucket names are 1-63 letters, digits and underscores, starting with a letter "
                "or underscore.");
}

void Exec(const char *sql, std::vector<Oid> types, std::vector<Datum> args, int expected,
          const char *nulls = nullptr) {
  int rc = SPI_execute_with_args(sql, static_cast<int>(types.size()), types.data(), args.data(),
                                 nulls, false, 0);
  if (rc != expected) elog(ERROR, "syncline: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

std::string QualifiedName(Oid relid) {
  return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
                                    get_rel_name(relid));
}

// Creates trigger `name` on `relid` unless it exists, as the calling user (who
// must own the table), and makes it go away with the extension.
void EnsureTrigger(Oid relid, const char *name, const char *timing, const char *level,
                   const char *function) {
  if (OidIsValid(get_trigger_oid(relid, name, true))) return;
  std::string sql = std::string("CREATE TRIGGER ") + quote_identifier(name) + " " + timing +
                    " ON " + QualifiedName(relid) + " " + level +
                    " EXECUTE FUNCTION syncline_internal." + function + "()";
  int rc = SPI_execute(sql.c_str(), false, 0);
  if (rc != SPI_OK_UTILITY) elog(ERROR, "creating trigger %s failed", name);
  ObjectAddress trigger, extension;
  ObjectAddressSet(trigger, TriggerRelationId, get_trigger_oid(relid, name, false));
  ObjectAddressSet(extension, ExtensionRelationId, get_extension_oid("syncline", false));
  recordDependencyOn(&trigger, &extension, DEPENDENCY_AUTO);
}

void DropTrigger(Oid relid, const char *name) {
  if (!OidIsValid(get_trigger_oid(relid, name, true))) return;
  std::string sql =
      std::string("DROP TRIGGER ") + quote_identifier(name) + " ON " + QualifiedName(relid);
  int rc = SPI_execute(sql.c_str(), false, 0);
  if (rc != SPI_OK_UTILITY) elog(ERROR, "dropping trigger %s failed", name);
}

Datum TextArray(const std::vector<std::string> &values) {
  Datum *datums = static_cast<Datum *>(palloc(sizeof(Datum) * (values.size() + 1)));
  for (size_t i = 0; i < values.size(); i++) datums[i] = CStringGetTextDatum(values[i].c_str());
  return PointerGetDatum(
      construct_array(datums, static_cast<int>(values.size()), TEXTOID, -1, false, TYPALIGN_INT));
}

struct ParameterQuery {
  std::vector<std::string> names;
  std::vector<Oid> types;
  std::vector<Oid> tables;  // ordinary tables it reads
};

ParameterQuery AnalyzeParameterQuery(const std::string &bucket, const char *query) {
  ParameterQuery result;
  PgGuard([&] {
    List *parsed = raw_parser(query, RAW_PARSE_DEFAULT);
    if (list_length(parsed) != 1 || !IsA(linitial_node(RawStmt, parsed)->stmt, SelectStmt))
      throw Error(ERRCODE_INVALID_OBJECT_DEFINITION,
                  "a parameter query must be a single SELECT statement");
    SPIPlanPtr plan = SPI_prepare(query, 0, nullptr);
    if (plan == nullptr) elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
    CachedPlanSource *source = linitial_node(CachedPlanSource, SPI_plan_get_plan_sources(plan));
    TupleDesc desc = source->resultDesc;
    if (desc == nullptr || desc->natts == 0)
      throw Error(ERRCODE_INVALID_OBJECT_DEFINITION,
                  "the parameter query of bucket \"" + bucket + "\" returns no columns", {},
                  "Each column is a bucket parameter; use parameters => NULL for one global "
                  "bucket.");
    for (int i = 0; i < desc->natts; i++) {
      std::string name = NameStr(TupleDescAttr(desc, i)->attname);
      if (name == "?column?")
        throw Error(ERRCODE_INVALID_OBJECT_DEFINITION,
                    "parameter query column " + std::to_string(i + 1) + " has no name", {},
                    "Name every column: SELECT ... AS <parameter>.");
      if (std::find(result.names.begin(), result.names.end(), name) != result.names.end())
        throw Error(ERRCODE_DUPLICATE_COLUMN,
                    "parameter query returns column \"" + name + "\" twice");
      result.names.push_back(name);
      result.types.push_back(TupleDescAttr(desc, i)->atttypid);
    }
    Oid internal = get_namespace_oid("syncline_internal", false);
    ListCell *lc;
    foreach (lc, source->relationOids) {
      Oid relid = lfirst_oid(lc);
      if (get_rel_relkind(relid) != RELKIND_RELATION) continue;
      Oid nsp = get_rel_namespace(relid);
      if (nsp == internal || nsp == PG_CATALOG_NAMESPACE) continue;
      if (std::find(result.tables.begin(), result.tables.end(), relid) == result.tables.end())
        result.tables.push_back(relid);
    }
    // Run it once (no claims, read-only) so missing privileges show now, not
    // at the first sync.
    int rc = SPI_execute_plan(plan, nullptr, nullptr, true, 1);
    if (rc != SPI_OK_SELECT) elog(ERROR, "running the parameter query failed: %d", rc);
    SPI_freeplan(plan);
  });
  return result;
}

}  // namespace
}  // namespace syncline

using syncline::Error;

SYNCLINE_FUNCTION(syncline_create_bucket) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
    throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "bucket name and data queries must not be NULL");
  std::string name;
  std::optional<std::string> parameter_query;
  std::vector<std::string> data_queries;
  std::string search_path;
  syncline::ParameterQuery params;
  std::vector<syncline::DataQueryShape> shapes;

  syncline::PgGuard([&] {
    syncline::CheckAdmin("declare sync rules");
    name = TextDatumGetCString(PG_GETARG_DATUM(0));
    if (!PG_ARGISNULL(1)) parameter_query = TextDatumGetCString(PG_GETARG_DATUM(1));
    ArrayType *array = PG_GETARG_ARRAYTYPE_P(2);
    Datum *items;
    bool *nulls;
    int count;
    deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &items, &nulls, &count);
    for (int i = 0; i < count; i++) {
      if (nulls[i]) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "a data query is NULL");
      data_queries.push_back(TextDatumGetCString(items[i]));
    }
    search_path = GetConfigOption("search_path", false, false);
  });
  syncline::CheckBucketName(name);
  if (data_queries.empty())
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                "bucket \"" + name + "\" needs at least one data query", {},
                "data => ARRAY['SELECT * FROM <table> WHERE <column> = bucket.<parameter>']");

  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  });
  bool exists = false;
  syncline::PgGuard([&] {
    syncline::AsOwner([&] {
      syncline::Exec("SELECT 1 FROM syncline_internal.bucket_definitions WHERE name = $1",
                     {TEXTOID}, {CStringGetTextDatum(name.c_str())}, SPI_OK_SELECT);
      exists = SPI_processed > 0;
    });
  });
  if (exists)
    throw Error(ERRCODE_DUPLICATE_OBJECT, "bucket \"" + name + "\" already exists", {},
                "Drop it first with syncline.drop_bucket('" + name + "').");

  if (parameter_query) {
    try {
      params = syncline::AnalyzeParameterQuery(name, parameter_query->c_str());
    } catch (Error &e) {
      e.InQuery(parameter_query->c_str()).AddContext("parameter query of bucket \"" + name + "\"");
      throw;
    }
  }

  for (size_t i = 0; i < data_queries.size(); i++) {
    std::string where = "data query " + std::to_string(i + 1) + " of bucket \"" + name + "\"";
    try {
      shapes.push_back(syncline::ParseDataQuery(data_queries[i].c_str(), params.names, InvalidOid));
      syncline::DataQueryShape &shape = shapes.back();
      for (size_t j = 0; j + 1 < shapes.size(); j++)
        if (shapes[j].object_type == shape.object_type)
          throw Error(ERRCODE_DUPLICATE_OBJECT,
                      "two data queries produce object type \"" + shape.object_type + "\"", {},
                      "Give one of them an alias: SELECT ... FROM " + shape.object_type +
                          " AS other_name.");
      syncline::PgGuard([&] {
        Relation rel = relation_open(shape.relid, AccessShareLock);
        bool has_key = OidIsValid(RelationGetPrimaryKeyIndex(rel));
        std::string table = RelationGetRelationName(rel);
        relation_close(rel, AccessShareLock);
        // Rules publish rows on the declarer's authority: they must be able to read them.
        if (pg_class_aclcheck(shape.relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
          throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied for table " + table, {},
                      "The role that declares a bucket must be allowed to SELECT the tables "
                      "it syncs.");
        if (!has_key)
          throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                      "table \"" + table + "\" has no primary key", {},
                      "Syncline identifies rows by their primary key: ALTER TABLE " + table +
                          " ADD PRIMARY KEY (...).");
        for (size_t p = 0; p < params.names.size(); p++) {
          syncline::ValueEncoder column, parameter;
          Oid column_type = get_atttype(shape.relid, shape.param_attnums[p]);
          column.Init(column_type, CurrentMemoryContext);
          parameter.Init(params.types[p], CurrentMemoryContext);
          if (strcmp(column.JsonKind(), parameter.JsonKind()) != 0)
            throw Error(ERRCODE_DATATYPE_MISMATCH,
                        "bucket parameter \"" + params.names[p] + "\" is " +
                            format_type_be(params.types[p]) + " but column \"" +
                            get_attname(shape.relid, shape.param_attnums[p], false) + "\" is " +
                            format_type_be(column_type),
                        {},
                        "Cast the parameter in the parameter query (SELECT x::" +
                            std::string(format_type_be(column_type)) + " AS " + params.names[p] +
                            ") so bucket ids match.");
        }
      });
    } catch (Error &e) {
      e.InQuery(data_queries[i].c_str()).AddContext(where);
      throw;
    }
  }

  syncline::PgGuard([&] {
    std::vector<std::string> type_names;
    for (Oid type : params.types) type_names.push_back(format_type_be(type));
    syncline::AsOwner([&] {
      syncline::Exec(
          "INSERT INTO syncline_internal.bucket_definitions "
          "  (name, parameter_query, parameter_names, parameter_types, definer, search_path) "
          "VALUES ($1, $2, $3, $4::regtype[], $5, $6)",
          {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, OIDOID, TEXTOID},
          {CStringGetTextDatum(name.c_str()),
           parameter_query ? CStringGetTextDatum(parameter_query->c_str()) : Datum(0),
           syncline::TextArray(params.names), syncline::TextArray(type_names),
           ObjectIdGetDatum(GetUserId()), CStringGetTextDatum(search_path.c_str())},
          SPI_OK_INSERT, parameter_query ? "      " : " n    ");
      for (size_t i = 0; i < shapes.size(); i++) {
        syncline::Exec(
            "INSERT INTO syncline_internal.data_queries "
            "  (bucket_name, position, table_oid, object_type, query) VALUES ($1, $2, $3, $4, $5)",
            {TEXTOID, INT4OID, OIDOID, TEXTOID, TEXTOID},
            {CStringGetTextDatum(name.c_str()), Int32GetDatum(static_cast<int32>(i + 1)),
             ObjectIdGetDatum(shapes[i].relid), CStringGetTextDatum(shapes[i].object_type.c_str()),
             CStringGetTextDatum(data_queries[i].c_str())},
            SPI_OK_INSERT);
      }
      for (Oid table : params.tables) {
        syncline::Exec(
            "INSERT INTO syncline_internal.parameter_tables (bucket_name, table_oid) "
            "VALUES ($1, $2)",
            {TEXTOID, OIDOID}, {CStringGetTextDatum(name.c_str()), ObjectIdGetDatum(table)},
            SPI_OK_INSERT);
      }
    });
    // Triggers, as the caller: creating them needs ownership of the table.
    std::set<Oid> done;
    for (size_t i = 0; i < shapes.size(); i++) {
      Oid relid = shapes[i].relid;
      if (done.insert(relid).second) {
        syncline::EnsureTrigger(relid, syncline::kRowTrigger, "AFTER INSERT OR UPDATE OR DELETE",
                                "FOR EACH ROW", "row_trigger");
        syncline::EnsureTrigger(relid, syncline::kTruncateTrigger, "BEFORE TRUNCATE",
                                "FOR EACH STATEMENT", "truncate_trigger");
        CacheInvalidateRelcacheByRelid(relid);
      }
      // Rows already in the table reach clients through an initial copy that
      // the flusher makes in block ranges, without blocking writers.
      Relation rel = relation_open(relid, AccessShareLock);
      int64 blocks = RelationGetNumberOfBlocks(rel);
      relation_close(rel, AccessShareLock);
      if (blocks > 0) {
        syncline::AsOwner([&] {
          syncline::Exec(
              "INSERT INTO syncline_internal.snapshot_jobs "
              "  (bucket_name, position, next_block, end_block) VALUES ($1, $2, 0, $3)",
              {TEXTOID, INT4OID, INT8OID},
              {CStringGetTextDatum(name.c_str()), Int32GetDatum(static_cast<int32>(i + 1)),
               Int64GetDatum(blocks)},
              SPI_OK_INSERT);
        });
      }
    }
    for (Oid table : params.tables)
      syncline::EnsureTrigger(table, syncline::kParameterTrigger,
                              "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", "FOR EACH STATEMENT",
                              "parameter_trigger");
    syncline::StageMarker(syncline::kStagedRulesChanged, name.c_str(), nullptr);
    SPI_finish();
  });
  PG_RETURN_VOID();
}

SYNCLINE_FUNCTION(syncline_drop_bucket) {
  if (PG_ARGISNULL(0)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "bucket name must not be NULL");
  std::string name;
  bool found = false;
  syncline::PgGuard([&] {
    syncline::CheckAdmin("drop sync rules");
    name = TextDatumGetCString(PG_GETARG_DATUM(0));
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    std::vector<Oid> data_tables, parameter_tables;
    std::vector<Oid> remaining_data, remaining_parameter;
    syncline::AsOwner([&] {
      Datum arg = CStringGetTextDatum(name.c_str());
      syncline::Exec(
          "SELECT DISTINCT table_oid FROM syncline_internal.data_queries WHERE bucket_name = $1",
          {TEXTOID}, {arg}, SPI_OK_SELECT);
      for (uint64 i = 0; i < SPI_processed; i++) {
        bool isnull;
        data_tables.push_back(DatumGetObjectId(
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
      }
      syncline::Exec(
          "SELECT table_oid FROM syncline_internal.parameter_tables WHERE bucket_name = $1",
          {TEXTOID}, {arg}, SPI_OK_SELECT);
      for (uint64 i = 0; i < SPI_processed; i++) {
        bool isnull;
        parameter_tables.push_back(DatumGetObjectId(
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
      }
      syncline::Exec("DELETE FROM syncline_internal.bucket_definitions WHERE name = $1", {TEXTOID},
                     {arg}, SPI_OK_DELETE);
      found = SPI_processed > 0;
      if (!found) return;
      // Bucket ids are name[...]: '[' sorts just before '\' in the C collation.
      const char *range = " WHERE bucket >= $1 || '[' AND bucket < $1 || '\\'";
      for (const char *table : {"ops", "bucket_state", "pending"}) {
        std::string sql = std::string("DELETE FROM syncline_internal.") + table + range;
        syncline::Exec(sql.c_str(), {TEXTOID}, {arg}, SPI_OK_DELETE);
      }
      syncline::Exec("SELECT DISTINCT table_oid FROM syncline_internal.data_queries", {}, {},
                     SPI_OK_SELECT);
      for (uint64 i = 0; i < SPI_processed; i++) {
        bool isnull;
        remaining_data.push_back(DatumGetObjectId(
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
      }
      syncline::Exec("SELECT DISTINCT table_oid FROM syncline_internal.parameter_tables", {}, {},
                     SPI_OK_SELECT);
      for (uint64 i = 0; i < SPI_processed; i++) {
        bool isnull;
        remaining_parameter.push_back(DatumGetObjectId(
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
      }
    });
    if (!found) return;
    auto contains = [](const std::vector<Oid> &v, Oid x) {
      return std::find(v.begin(), v.end(), x) != v.end();
    };
    for (Oid relid : data_tables) {
      if (get_rel_name(relid) == nullptr) continue;
      if (!contains(remaining_data, relid)) {
        syncline::DropTrigger(relid, syncline::kRowTrigger);
        syncline::DropTrigger(relid, syncline::kTruncateTrigger);
      }
      CacheInvalidateRelcacheByRelid(relid);
    }
    for (Oid relid : parameter_tables) {
      if (get_rel_name(relid) != nullptr && !contains(remaining_parameter, relid))
        syncline::DropTrigger(relid, syncline::kParameterTrigger);
    }
    syncline::StageMarker(syncline::kStagedRulesChanged, name.c_str(), nullptr);
    SPI_finish();
  });
  if (!found)
    throw Error(ERRCODE_UNDEFINED_OBJECT, "bucket \"" + name + "\" does not exist", {},
                "syncline_internal.bucket_definitions lists the declared buckets.");
  PG_RETURN_VOID();
}
