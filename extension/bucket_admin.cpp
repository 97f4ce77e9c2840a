// syncline.create_bucket / syncline.drop_bucket: validate rules, record them,
// and install the triggers that feed the op log; and the DDL hooks that keep
// rules and triggers consistent with the schema (check_rules, attach_trigger).
#include "pg_compat.hpp"

extern "C" {
#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
}

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "datum_json.hpp"
#include "flush.hpp"
#include "rule_cache.hpp"
#include "rules.hpp"
#include "spi_util.hpp"
#include "staging.hpp"

namespace syncline {

// Op ids after a restore start this far above the restored counter, past any
// op id the original database can have handed out after the dump.
constexpr int64 kRestoreOpIdGap = int64{1} << 40;

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

// Runs one of Syncline's own statements (call inside AsEngine). An error comes
// out as syncline::Error, so the caller's C++ objects are destroyed.
void Exec(const char *sql, std::vector<Oid> types, std::vector<Datum> args, int expected,
          const char *nulls = nullptr) {
  PgGuard([&] {
    int rc = SPI_execute_with_args(sql, static_cast<int>(types.size()), types.data(), args.data(),
                                   nulls, false, 0);
    if (rc != expected) Fail("syncline: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
  });
}

std::vector<Oid> OidColumn() {
  std::vector<Oid> out;
  for (uint64 i = 0; i < SPI_processed; i++) {
    bool isnull;
    out.push_back(
        DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
  }
  return out;
}

Datum TextArray(const std::vector<std::string> &values) {
  Datum *datums = static_cast<Datum *>(palloc(sizeof(Datum) * (values.size() + 1)));
  for (size_t i = 0; i < values.size(); i++) datums[i] = CStringGetTextDatum(values[i].c_str());
  return PointerGetDatum(
      construct_array(datums, static_cast<int>(values.size()), TEXTOID, -1, false, TYPALIGN_INT));
}

// Takes the ops of bucket `name` out of the staged chunk rows (a chunk holds
// one transaction's ops for every bucket): rewritten without them, or
// deleted when nothing is left. Call inside AsEngine, holding the flush lock.
// The chunk rows are read through a cursor, kChunksPerFetch at a time: a
// bulk load can leave millions of staged ops, more than belong in memory at
// once. The cursor's snapshot does not see the rows rewritten meanwhile.
void DropStagedChunkOps(const std::string &name) {
  constexpr long kChunksPerFetch = 64;
  const std::string prefix = name + "[";
  Portal cursor = nullptr;
  PgGuard([&] {
    cursor = SPI_cursor_open_with_args(
        nullptr, "SELECT ctid, chunk FROM syncline_internal.pending WHERE op = 20", 0, nullptr,
        nullptr, nullptr, false, 0);
  });
  std::string kept;
  for (;;) {
    SPITupleTable *rows = nullptr;
    uint64 count = 0;
    PgGuard([&] {
      SPI_cursor_fetch(cursor, true, kChunksPerFetch);
      rows = SPI_tuptable;
      count = SPI_processed;
    });
    if (count == 0) break;
    for (uint64 i = 0; i < count; i++) {
      ItemPointerData tid;
      std::string_view chunk;
      struct varlena *detoasted = nullptr;  // freed below when it is a copy
      bool isnull;
      HeapTuple tuple = rows->vals[i];
      ItemPointerCopy(
          reinterpret_cast<ItemPointer>(SPI_getbinval(tuple, rows->tupdesc, 1, &isnull)), &tid);
      Datum value = SPI_getbinval(tuple, rows->tupdesc, 2, &isnull);
      if (!isnull) chunk = VarlenaBytes(value, &detoasted);
      kept.clear();
      bool dropped = false;
      if (!chunk.empty()) {
        ChunkReader reader(chunk);
        RowOp op;
        while (reader.Next(op)) {
          if (op.bucket.compare(0, prefix.size(), prefix) == 0) {
            dropped = true;
            continue;
          }
          AppendToChunk(kept, op);
        }
      }
      if (dropped) {
        Datum tid_arg = PointerGetDatum(&tid);
        if (kept.empty()) {
          Exec("DELETE FROM syncline_internal.pending WHERE ctid = $1", {TIDOID}, {tid_arg},
               SPI_OK_DELETE);
        } else {
          bytea *rewritten = static_cast<bytea *>(palloc(VARHDRSZ + kept.size()));
          SET_VARSIZE(rewritten, VARHDRSZ + kept.size());
          memcpy(VARDATA(rewritten), kept.data(), kept.size());
          Exec("UPDATE syncline_internal.pending SET chunk = $2 WHERE ctid = $1",
               {TIDOID, BYTEAOID}, {tid_arg, PointerGetDatum(rewritten)}, SPI_OK_UPDATE);
          pfree(rewritten);
        }
      }
      if (detoasted != nullptr) pfree(detoasted);
    }
    PgGuard([&] { SPI_freetuptable(rows); });
  }
  PgGuard([&] { SPI_cursor_close(cursor); });
}

// The triggers Syncline puts on user tables.
struct TriggerKind {
  const char *name;
  const char *function;
  bool row;
  int16 timing;
  int16 events;
};
const TriggerKind kRowKind = {kRowTrigger, "row_trigger", true, TRIGGER_TYPE_AFTER,
                              TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE};
const TriggerKind kTruncateKind = {kTruncateTrigger, "truncate_trigger", false, TRIGGER_TYPE_BEFORE,
                                   TRIGGER_TYPE_TRUNCATE};
const TriggerKind kParameterKind = {
    kParameterTrigger, "parameter_trigger", true, TRIGGER_TYPE_AFTER,
    TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE};
const TriggerKind kParameterTruncateKind = {kParameterTruncateTrigger, "parameter_trigger", false,
                                            TRIGGER_TYPE_AFTER, TRIGGER_TYPE_TRUNCATE};

Oid TriggerFunction(const char *function) {
  Oid funcoid = InvalidOid;
  // Looked up as the engine: declarers need EXECUTE on the function, not the
  // right to look into syncline_internal.
  AsEngine([&] {
    List *name =
        list_make2(makeString(pstrdup("syncline_internal")), makeString(pstrdup(function)));
    funcoid = LookupFuncName(name, 0, nullptr, false);
  });
  return funcoid;
}

void RecordExtensionDependency(Oid trigger_oid) {
  ObjectAddress trigger, extension;
  ObjectAddressSet(trigger, TriggerRelationId, trigger_oid);
  ObjectAddressSet(extension, ExtensionRelationId, get_extension_oid("syncline", false));
  recordDependencyOn(&trigger, &extension, DEPENDENCY_AUTO);
}

// Creates one of Syncline's triggers on `relid` unless it exists, as the
// calling user (CREATE TRIGGER's own checks: the TRIGGER privilege on the
// table, EXECUTE on the function). It fires ALWAYS, also under
// session_replication_role = replica (logical replication subscribers,
// pg_restore --disable-triggers), so no write escapes the op log; it goes
// away with the extension.
void EnsureTrigger(Oid relid, const TriggerKind &kind) {
  if (OidIsValid(get_trigger_oid(relid, kind.name, true))) return;
  CreateTrigStmt *stmt = makeNode(CreateTrigStmt);
  stmt->trigname = pstrdup(kind.name);
  stmt->relation =
      makeRangeVar(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid), -1);
  stmt->funcname =
      list_make2(makeString(pstrdup("syncline_internal")), makeString(pstrdup(kind.function)));
  stmt->row = kind.row;
  stmt->timing = kind.timing;
  stmt->events = kind.events;
  ObjectAddress address = CreateTriggerFiringOn(
      stmt, "syncline.create_bucket()", relid, InvalidOid, InvalidOid, InvalidOid,
      TriggerFunction(kind.function), InvalidOid, nullptr, false, false, TRIGGER_FIRES_ALWAYS);
  RecordExtensionDependency(address.objectId);
  CommandCounterIncrement();
}

// Removes one of Syncline's triggers no rule needs any more. No privilege is
// checked beyond syncline_admin: the trigger is Syncline's, whoever declared
// the rule that created it.
void DropTrigger(Oid relid, const char *name) {
  Oid trigger_oid = get_trigger_oid(relid, name, true);
  if (!OidIsValid(trigger_oid)) return;
  ObjectAddress address;
  ObjectAddressSet(address, TriggerRelationId, trigger_oid);
  performDeletion(&address, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
}

// The caller may read `relid` and put triggers on it: checked at every
// declaration (a trigger some earlier declaration created is no licence).
void CheckTablePrivileges(Oid relid, bool needs_select) {
  std::string table = get_rel_name(relid);
  if (needs_select && pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
    throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied for table " + table, {},
                "The role that declares a bucket must be allowed to SELECT the tables it syncs.");
  if (pg_class_aclcheck(relid, GetUserId(), ACL_TRIGGER) != ACLCHECK_OK)
    throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                "permission denied to sync table " + table + ": TRIGGER privilege required", {},
                "Syncline follows changes with triggers: the declarer must own the table or hold "
                "GRANT TRIGGER ON " +
                    table + ".");
}

// "<system identifier>:<database oid>": tells a restored op id counter from
// the original one.
std::string DatabaseIdentity() {
  return std::to_string(GetSystemIdentifier()) + ":" + std::to_string(MyDatabaseId);
}

}  // namespace

// Adds (or restarts) the initial copy of every data query over `relid`;
// `reset` starts each bucket instance the copy finds with a CLEAR.
void ScheduleInitialCopies(Oid relid, bool reset) {
  Relation rel = relation_open(relid, AccessShareLock);
  int64 blocks = RelationGetNumberOfBlocks(rel);
  relation_close(rel, AccessShareLock);
  AsEngine([&] {
    Exec(
        "INSERT INTO syncline_internal.snapshot_jobs "
        "  (bucket_name, position, next_block, end_block, reset) "
        "SELECT d.bucket_name, d.position, 0, $2, $3 FROM syncline_internal.data_queries d "
        " WHERE d.relation = $1 "
        "ON CONFLICT (bucket_name, position) DO UPDATE "
        "  SET next_block = 0, end_block = excluded.end_block, reset = excluded.reset",
        {REGCLASSOID, INT8OID, BOOLOID},
        {ObjectIdGetDatum(relid), Int64GetDatum(blocks), BoolGetDatum(reset)}, SPI_OK_INSERT);
  });
}

std::string CurrentDatabaseIdentity() { return DatabaseIdentity(); }

}  // namespace syncline

using syncline::Error;

SYNCLINE_FUNCTION(syncline_create_bucket) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
    throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "bucket name and data queries must not be NULL");
  std::string name;
  std::optional<std::string> parameter_query;
  std::vector<std::string> data_queries;
  syncline::ParameterQueryShape params;
  std::vector<syncline::DataQueryShape> shapes;
  std::vector<std::vector<std::string>> key_columns;

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
  });
  syncline::CheckBucketName(name);
  if (data_queries.empty())
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                "bucket \"" + name + "\" needs at least one data query", {},
                "data => ARRAY['SELECT * FROM <table> WHERE <column> = bucket.<parameter>']");

  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
  });
  bool exists = false;
  syncline::PgGuard([&] {
    syncline::AsEngine([&] {
      syncline::Exec("SELECT 1 FROM syncline_internal.bucket_definitions WHERE name = $1",
                     {TEXTOID}, {CStringGetTextDatum(name.c_str())}, SPI_OK_SELECT);
      exists = SPI_processed > 0;
    });
  });
  if (exists)
    throw Error(ERRCODE_DUPLICATE_OBJECT, "bucket \"" + name + "\" already exists", {},
                "Drop it first with syncline.drop_bucket('" + name + "').");

  // Names resolve with the caller's search_path, as the caller: once, here.
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
      shapes.push_back(syncline::ParseDataQuery(data_queries[i].c_str(), params.names, nullptr));
      syncline::DataQueryShape &shape = shapes.back();
      for (size_t j = 0; j + 1 < shapes.size(); j++)
        if (shapes[j].object_type == shape.object_type)
          throw Error(ERRCODE_DUPLICATE_OBJECT,
                      "two data queries produce object type \"" + shape.object_type + "\"", {},
                      "Give one of them an alias: SELECT ... FROM " + shape.object_type +
                          " AS other_name.");
      key_columns.push_back(syncline::PrimaryKeyColumns(shape.relid));
      // Inside the guard no C++ object that owns memory is alive while Postgres is called
      // (an ERROR would longjmp over its destructor): names are fetched first, as palloc'd
      // text, and only then made into the message of the exception thrown.
      syncline::PgGuard([&] {
        syncline::CheckTablePrivileges(shape.relid, true);
        if (key_columns.back().empty()) {
          const char *table = get_rel_name(shape.relid);
          if (table == nullptr) syncline::Fail("cache lookup failed for relation %u", shape.relid);
          throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                      std::string("table \"") + table + "\" has no primary key", {},
                      std::string("Syncline identifies rows by their primary key: ALTER TABLE ") +
                          table + " ADD PRIMARY KEY (...).");
        }
        for (size_t p = 0; p < params.names.size(); p++) {
          syncline::ValueEncoder column, parameter;  // trivially destructible
          Oid column_type = get_atttype(shape.relid, shape.param_attnums[p]);
          column.Init(column_type, CurrentMemoryContext);
          parameter.Init(params.types[p], CurrentMemoryContext);
          if (strcmp(column.JsonKind(), parameter.JsonKind()) == 0) continue;
          const char *parameter_type = format_type_be(params.types[p]);
          const char *column_name = get_attname(shape.relid, shape.param_attnums[p], false);
          const char *column_type_name = format_type_be(column_type);
          throw Error(ERRCODE_DATATYPE_MISMATCH,
                      "bucket parameter \"" + params.names[p] + "\" is " + parameter_type +
                          " but column \"" + column_name + "\" is " + column_type_name,
                      {},
                      std::string("Cast the parameter in the parameter query (SELECT x::") +
                          column_type_name + " AS " + params.names[p] + ") so bucket ids match.");
        }
      });
    } catch (Error &e) {
      e.InQuery(data_queries[i].c_str()).AddContext(where);
      throw;
    }
  }
  syncline::PgGuard([&] {
    for (Oid table : params.tables) syncline::CheckTablePrivileges(table, false);
  });

  syncline::PgGuard([&] {
    // Wait out every transaction that is writing a synced table and keep new
    // writers out until this commits: afterwards every writer compiles the
    // new rules, and every row written before is in the initial copy or was
    // committed before it starts. (A writer that started earlier would stage
    // ops with the old rules and the copy would not see its row yet.)
    // Sorted, so two declarations over the same tables cannot deadlock.
    std::set<Oid> data_tables;
    for (const auto &shape : shapes) data_tables.insert(shape.relid);
    // Given up on (a cancel, lock_timeout, a deadlock): a C++ exception, so
    // the containers here are destroyed, not jumped over.
    syncline::PgGuard([&] {
      for (Oid relid : data_tables) LockRelationOid(relid, ShareRowExclusiveLock);
    });

    std::vector<std::string> type_names;
    for (Oid type : params.types) type_names.push_back(format_type_be_qualified(type));
    Oid definer = GetUserId();
    syncline::AsEngine([&] {
      syncline::Exec(
          "INSERT INTO syncline_internal.bucket_definitions "
          "  (name, parameter_query, parameter_query_source, parameter_names, parameter_types, "
          "   definer) "
          "VALUES ($1, $2, $3, $4, $5::regtype[], $6)",
          {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, REGROLEOID},
          {CStringGetTextDatum(name.c_str()),
           parameter_query ? CStringGetTextDatum(params.canonical.c_str()) : Datum(0),
           parameter_query ? CStringGetTextDatum(parameter_query->c_str()) : Datum(0),
           syncline::TextArray(params.names), syncline::TextArray(type_names),
           ObjectIdGetDatum(definer)},
          SPI_OK_INSERT, parameter_query ? "      " : " nn   ");
      for (size_t i = 0; i < shapes.size(); i++) {
        const std::string &filter = shapes[i].canonical_filter;
        syncline::Exec(
            "INSERT INTO syncline_internal.data_queries "
            "  (bucket_name, position, relation, object_type, query, filter, key_columns) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            {TEXTOID, INT4OID, REGCLASSOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID},
            {CStringGetTextDatum(name.c_str()), Int32GetDatum(static_cast<int32>(i + 1)),
             ObjectIdGetDatum(shapes[i].relid), CStringGetTextDatum(shapes[i].object_type.c_str()),
             CStringGetTextDatum(data_queries[i].c_str()),
             filter.empty() ? Datum(0) : CStringGetTextDatum(filter.c_str()),
             syncline::TextArray(key_columns[i])},
            SPI_OK_INSERT, filter.empty() ? "     n " : "       ");
      }
      for (Oid table : params.tables) {
        syncline::Exec(
            "INSERT INTO syncline_internal.parameter_tables (bucket_name, relation) "
            "VALUES ($1, $2)",
            {TEXTOID, REGCLASSOID}, {CStringGetTextDatum(name.c_str()), ObjectIdGetDatum(table)},
            SPI_OK_INSERT);
      }
    });
    // Raw Postgres calls from here on (CreateTrigger may refuse the caller):
    // an error comes out as a C++ exception past data_tables and type_names.
    syncline::PgGuard([&] {
      // Triggers, as the caller.
      for (Oid relid : data_tables) {
        syncline::EnsureTrigger(relid, syncline::kRowKind);
        syncline::EnsureTrigger(relid, syncline::kTruncateKind);
        CacheInvalidateRelcacheByRelid(relid);
      }
      // Rows already in the tables reach clients through an initial copy that
      // the flusher makes in block ranges, without blocking writers.
      for (size_t i = 0; i < shapes.size(); i++) {
        Relation rel = relation_open(shapes[i].relid, AccessShareLock);
        int64 blocks = RelationGetNumberOfBlocks(rel);
        relation_close(rel, AccessShareLock);
        if (blocks == 0) continue;
        syncline::AsEngine([&] {
          syncline::Exec(
              "INSERT INTO syncline_internal.snapshot_jobs "
              "  (bucket_name, position, next_block, end_block) VALUES ($1, $2, 0, $3)",
              {TEXTOID, INT4OID, INT8OID},
              {CStringGetTextDatum(name.c_str()), Int32GetDatum(static_cast<int32>(i + 1)),
               Int64GetDatum(blocks)},
              SPI_OK_INSERT);
        });
      }
      for (Oid table : params.tables) {
        syncline::EnsureTrigger(table, syncline::kParameterKind);
        syncline::EnsureTrigger(table, syncline::kParameterTruncateKind);
      }
      syncline::StageMarker(syncline::kStagedRulesChanged, name.c_str(), nullptr);
    });
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
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    std::vector<Oid> data_tables, parameter_tables;
    std::vector<Oid> remaining_data, remaining_parameter;
    syncline::AsEngine([&] {
      Datum arg = CStringGetTextDatum(name.c_str());
      syncline::Exec(
          "SELECT DISTINCT relation::oid FROM syncline_internal.data_queries "
          " WHERE bucket_name = $1",
          {TEXTOID}, {arg}, SPI_OK_SELECT);
      data_tables = syncline::OidColumn();
      syncline::Exec(
          "SELECT relation::oid FROM syncline_internal.parameter_tables WHERE bucket_name = $1",
          {TEXTOID}, {arg}, SPI_OK_SELECT);
      parameter_tables = syncline::OidColumn();
      // Nothing of this bucket may be left anywhere once this commits, or a
      // bucket declared later under the same name would publish ops made by
      // this definition's rules (rows its query may not select). So: wait
      // out the transactions writing its tables (their ops are staged when
      // they commit) and keep new ones out until this commits, as
      // create_bucket does; then take the flush lock, so that no flush is
      // publishing its ops meanwhile.
      std::set<Oid> locked(data_tables.begin(), data_tables.end());
      // A cancel, lock_timeout or deadlock while waiting comes out as a C++
      // exception: the containers around are destroyed, not jumped over.
      syncline::PgGuard([&] {
        for (Oid relid : locked) LockRelationOid(relid, ShareRowExclusiveLock);
      });
      syncline::TakeFlushLock();
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
      syncline::DropStagedChunkOps(name);
      syncline::Exec("SELECT DISTINCT relation::oid FROM syncline_internal.data_queries", {}, {},
                     SPI_OK_SELECT);
      remaining_data = syncline::OidColumn();
      syncline::Exec("SELECT DISTINCT relation::oid FROM syncline_internal.parameter_tables", {},
                     {}, SPI_OK_SELECT);
      remaining_parameter = syncline::OidColumn();
    });
    if (!found) return;
    auto contains = [](const std::vector<Oid> &v, Oid x) {
      return std::find(v.begin(), v.end(), x) != v.end();
    };
    // Raw Postgres calls (dropping triggers): an error comes out as a C++
    // exception past the table lists.
    syncline::PgGuard([&] {
      for (Oid relid : data_tables) {
        if (get_rel_name(relid) == nullptr) continue;
        if (!contains(remaining_data, relid)) {
          syncline::DropTrigger(relid, syncline::kRowTrigger);
          syncline::DropTrigger(relid, syncline::kTruncateTrigger);
        }
        CacheInvalidateRelcacheByRelid(relid);
      }
      for (Oid relid : parameter_tables) {
        if (get_rel_name(relid) != nullptr && !contains(remaining_parameter, relid)) {
          syncline::DropTrigger(relid, syncline::kParameterTrigger);
          syncline::DropTrigger(relid, syncline::kParameterTruncateTrigger);
        }
      }
      syncline::StageMarker(syncline::kStagedRulesChanged, name.c_str(), nullptr);
    });
    SPI_finish();
  });
  if (!found)
    throw Error(ERRCODE_UNDEFINED_OBJECT, "bucket \"" + name + "\" does not exist", {},
                "syncline_internal.bucket_definitions lists the declared buckets.");
  PG_RETURN_VOID();
}

// syncline_internal.attach_trigger(trigger oid), from the DDL event trigger
// after CREATE TRIGGER / ALTER TRIGGER: a trigger of Syncline's created by a
// plain statement (pg_restore recreating a dumped database does exactly this)
// gets Syncline's guarantees: it fires ALWAYS, goes away with the extension,
// keeps its name, and a row trigger rebuilds the op log of its table from the
// rows it holds (after a restore the op log is empty: see the install script).
SYNCLINE_FUNCTION(syncline_attach_trigger) {
  Oid trigger_oid = PG_GETARG_OID(0);
  std::string identity;  // out here: Postgres may raise an ERROR (a lock timeout) in the guard
  syncline::PgGuard([&] {
    if (IsBinaryUpgrade) return;  // pg_upgrade keeps the op log as it is
    Relation triggers = table_open(TriggerRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(trigger_oid));
    SysScanDesc scan = systable_beginscan(triggers, TriggerOidIndexId, true, nullptr, 1, &key);
    HeapTuple tuple = systable_getnext(scan);
    if (!HeapTupleIsValid(tuple)) {
      systable_endscan(scan);
      table_close(triggers, AccessShareLock);
      return;
    }
    auto *form = reinterpret_cast<Form_pg_trigger>(GETSTRUCT(tuple));
    Oid relid = form->tgrelid;
    Oid function = form->tgfoid;
    NameData name = form->tgname;  // plain data: no destructor for an ERROR to skip
    bool row = TRIGGER_FOR_ROW(form->tgtype);
    char enabled = form->tgenabled;
    systable_endscan(scan);
    table_close(triggers, AccessShareLock);

    const syncline::TriggerKind *kind = nullptr;
    for (const syncline::TriggerKind *k :
         {&syncline::kRowKind, &syncline::kTruncateKind, &syncline::kParameterKind,
          &syncline::kParameterTruncateKind}) {
      if (function == syncline::TriggerFunction(k->function) && k->row == row) kind = k;
    }
    if (kind == nullptr) return;  // not one of Syncline's
    if (strcmp(NameStr(name), kind->name) != 0) {
      const char *table = get_rel_name(relid);  // before any C++ object of the message
      if (table == nullptr) syncline::Fail("cache lookup failed for relation %u", relid);
      throw Error(ERRCODE_INVALID_OBJECT_DEFINITION,
                  "Syncline's trigger on table " + std::string(table) + " must be named \"" +
                      kind->name + "\", not \"" + NameStr(name) + "\"",
                  {}, "Syncline finds and removes its triggers by name.");
    }
    Relation rel = table_open(relid, ShareRowExclusiveLock);
    if (enabled != TRIGGER_FIRES_ALWAYS)
      EnableDisableTrigger(rel, kind->name, TRIGGER_FIRES_ALWAYS, false, ShareRowExclusiveLock);
    table_close(rel, NoLock);
    syncline::RecordExtensionDependency(trigger_oid);
    CacheInvalidateRelcacheByRelid(relid);
    if (kind != &syncline::kRowKind) return;

    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    // A restored op id counter (it names another database) jumps past
    // everything the original may have handed out since the dump, and the
    // rebuilt buckets start with a CLEAR, so clients that synced against the
    // original drop what they hold and converge without a checksum failure.
    identity = syncline::DatabaseIdentity();
    bool resolves = syncline::ResolvesWriteCheckpoints();
    syncline::AsEngine([&] {
      syncline::Exec(
          "UPDATE syncline_internal.state SET last_op_id = last_op_id + $1, origin = $2 "
          " WHERE origin IS DISTINCT FROM $2",
          {INT8OID, TEXTOID},
          {Int64GetDatum(syncline::kRestoreOpIdGap), CStringGetTextDatum(identity.c_str())},
          SPI_OK_UPDATE);
      if (SPI_processed > 0 && resolves) {
        // The restored records and the last flush's snapshot name transaction
        // ids of the original database (of another cluster, maybe): every
        // batch not yet known published gets this transaction's, and is
        // published by the first flush that sees it committed. Their staged
        // markers were not dumped; the rebuild republishes their rows.
        syncline::Exec("UPDATE syncline_internal.state SET flushed_snapshot = NULL", {}, {},
                       SPI_OK_UPDATE);
        syncline::Exec(
            "UPDATE syncline_internal.client_batches SET txid = pg_catalog.pg_current_xact_id() "
            " WHERE write_checkpoint IS NULL",
            {}, {}, SPI_OK_UPDATE);
      }
    });
    syncline::ScheduleInitialCopies(relid, true);
    SPI_finish();
    syncline::WakeFlusherAtCommit();
  });
  PG_RETURN_VOID();
}

// syncline_internal.check_parameter_queries(relid): after DDL, every stored
// parameter query (those reading `relid`, or all when it is NULL) must still
// be valid SQL for its declarer; if not, the DDL is refused and names the
// rule, as a view's dependencies would be.
SYNCLINE_FUNCTION(syncline_check_parameter_queries) {
  std::optional<Oid> relid;
  if (!PG_ARGISNULL(0)) relid = PG_GETARG_OID(0);
  struct Rule {
    std::string name, query;
    Oid definer;
  };
  std::vector<Rule> rules;
  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    syncline::AsEngine([&] {
      syncline::Exec(
          "SELECT b.name, b.parameter_query, b.definer::oid "
          "  FROM syncline_internal.bucket_definitions b "
          " WHERE b.parameter_query IS NOT NULL AND ($1 IS NULL OR EXISTS ("
          "   SELECT FROM syncline_internal.parameter_tables p "
          "    WHERE p.bucket_name = b.name AND p.relation = $1)) ORDER BY b.name",
          {REGCLASSOID}, {relid ? ObjectIdGetDatum(*relid) : Datum(0)}, SPI_OK_SELECT,
          relid ? " " : "n");
      for (uint64 i = 0; i < SPI_processed; i++) {
        // Every Postgres call first, then the C++ objects (see PgGuard).
        bool isnull;
        char *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
        char *query = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
        Oid definer = DatumGetObjectId(
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
        rules.push_back({name, query, definer});
      }
    });
  });
  for (const Rule &rule : rules) {
    try {
      syncline::PgGuard([&] {
        syncline::RunAs(rule.definer, [&] {
          SPIPlanPtr plan = SPI_prepare(rule.query.c_str(), 0, nullptr);
          if (plan == nullptr)
            syncline::Fail("SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
          SPI_freeplan(plan);
        });
      });
    } catch (Error &e) {
      throw Error(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                  "the parameter query of sync rule \"" + rule.name + "\" depends on it",
                  std::string("Without it the query fails: ") + e.message(),
                  "Drop the bucket first: SELECT syncline.drop_bucket('" + rule.name + "');");
    }
  }
  syncline::PgGuard([] { SPI_finish(); });
  PG_RETURN_VOID();
}

// syncline_internal.upgrade_rules_0_2(), run once by ALTER EXTENSION syncline
// UPDATE from 0.1: every stored rule is resolved again as its declarer under
// the search_path it was declared with (what 0.1 did at every use) and stored
// in canonical, schema-qualified form; the triggers get 0.2's shape (ALWAYS,
// row-level parameter triggers that skip no-op statements, a dependency on
// the extension). A rule 0.2 refuses (a filter calling a user-defined
// function) stops the upgrade with an error that names it.
SYNCLINE_FUNCTION(syncline_upgrade_rules_0_2) {
  struct Query {
    std::string bucket, text;
    int32 position;
    Oid relid;
  };
  struct Definition {
    std::string name, parameter_query, search_path;
    std::vector<std::string> parameter_names;
    Oid definer;
    std::vector<Query> queries;
  };
  std::vector<Definition> definitions;
  std::vector<Oid> data_tables, parameter_tables;
  syncline::PgGuard([&] {
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    syncline::AsEngine([&] {
      syncline::Exec(
          "SELECT name, parameter_query, coalesce(search_path, ''), definer::oid, "
          "       array_to_string(parameter_names, ',') "
          "  FROM syncline_internal.bucket_definitions ORDER BY name",
          {}, {}, SPI_OK_SELECT);
      for (uint64 i = 0; i < SPI_processed; i++) {
        HeapTuple row = SPI_tuptable->vals[i];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool isnull;
        // Every Postgres call first, then the C++ objects (see PgGuard).
        char *name = SPI_getvalue(row, desc, 1);
        char *query = SPI_getvalue(row, desc, 2);
        char *search_path = SPI_getvalue(row, desc, 3);
        Oid definer = DatumGetObjectId(SPI_getbinval(row, desc, 4, &isnull));
        char *names_text = SPI_getvalue(row, desc, 5);
        Definition def;
        def.name = name;
        def.parameter_query = query ? query : "";
        def.search_path = search_path;
        def.definer = definer;
        std::string names = names_text ? names_text : "";
        for (size_t start = 0; !names.empty() && start <= names.size();) {
          size_t comma = names.find(',', start);
          if (comma == std::string::npos) comma = names.size();
          def.parameter_names.push_back(names.substr(start, comma - start));
          start = comma + 1;
        }
        definitions.push_back(std::move(def));
      }
      syncline::Exec(
          "SELECT bucket_name, position, relation::oid, query FROM syncline_internal.data_queries "
          " ORDER BY bucket_name, position",
          {}, {}, SPI_OK_SELECT);
      for (uint64 i = 0; i < SPI_processed; i++) {
        HeapTuple row = SPI_tuptable->vals[i];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool isnull;
        char *bucket = SPI_getvalue(row, desc, 1);
        char *text = SPI_getvalue(row, desc, 4);
        int32 position = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
        Oid relid = DatumGetObjectId(SPI_getbinval(row, desc, 3, &isnull));
        Query q{bucket, text, position, relid};
        for (Definition &def : definitions)
          if (def.name == q.bucket) def.queries.push_back(q);
        if (std::find(data_tables.begin(), data_tables.end(), q.relid) == data_tables.end())
          data_tables.push_back(q.relid);
      }
      syncline::Exec("SELECT DISTINCT relation::oid FROM syncline_internal.parameter_tables", {},
                     {}, SPI_OK_SELECT);
      parameter_tables = syncline::OidColumn();
    });
  });

  for (const Definition &def : definitions) {
    std::string canonical;
    if (!def.parameter_query.empty()) {
      try {
        syncline::RunAs(def.definer, [&] {
          syncline::WithSearchPath(def.search_path.c_str(), [&] {
            canonical =
                syncline::AnalyzeParameterQuery(def.name, def.parameter_query.c_str()).canonical;
          });
        });
      } catch (Error &e) {
        e.AddContext("upgrading the parameter query of bucket \"" + def.name + "\"");
        throw;
      }
    }
    syncline::PgGuard([&] {
      syncline::AsEngine([&] {
        syncline::Exec(
            "UPDATE syncline_internal.bucket_definitions "
            "   SET parameter_query_source = parameter_query, parameter_query = $2 "
            " WHERE name = $1",
            {TEXTOID, TEXTOID},
            {CStringGetTextDatum(def.name.c_str()),
             canonical.empty() ? Datum(0) : CStringGetTextDatum(canonical.c_str())},
            SPI_OK_UPDATE, canonical.empty() ? " n" : "  ");
      });
    });
    for (const Query &q : def.queries) {
      syncline::DataQueryShape shape;
      syncline::StoredDataQuery stored;
      stored.relid = q.relid;
      stored.from_declared_text = true;
      try {
        syncline::RunAs(def.definer, [&] {
          syncline::WithSearchPath(def.search_path.c_str(), [&] {
            shape = syncline::ParseDataQuery(q.text.c_str(), def.parameter_names, &stored);
          });
        });
      } catch (Error &e) {
        e.InQuery(q.text.c_str())
            .AddContext("upgrading data query " + std::to_string(q.position) + " of bucket \"" +
                        def.name + "\"");
        throw;
      }
      std::vector<std::string> keys = syncline::PrimaryKeyColumns(q.relid);
      syncline::PgGuard([&] {
        syncline::AsEngine([&] {
          const std::string &filter = shape.canonical_filter;
          syncline::Exec(
              "UPDATE syncline_internal.data_queries SET filter = $3, key_columns = $4 "
              " WHERE bucket_name = $1 AND position = $2",
              {TEXTOID, INT4OID, TEXTOID, TEXTARRAYOID},
              {CStringGetTextDatum(q.bucket.c_str()), Int32GetDatum(q.position),
               filter.empty() ? Datum(0) : CStringGetTextDatum(filter.c_str()),
               syncline::TextArray(keys)},
              SPI_OK_UPDATE, filter.empty() ? "  n " : "    ");
        });
      });
    }
  }

  syncline::PgGuard([&] {
    for (Oid relid : data_tables) {
      Relation rel = table_open(relid, ShareRowExclusiveLock);
      for (const char *name : {syncline::kRowTrigger, syncline::kTruncateTrigger}) {
        Oid trigger_oid = get_trigger_oid(relid, name, true);
        if (!OidIsValid(trigger_oid)) continue;
        EnableDisableTrigger(rel, name, TRIGGER_FIRES_ALWAYS, false, ShareRowExclusiveLock);
      }
      table_close(rel, NoLock);
      CacheInvalidateRelcacheByRelid(relid);
    }
    // 0.1's parameter trigger fired once per statement, changed or not.
    for (Oid relid : parameter_tables) {
      syncline::DropTrigger(relid, syncline::kParameterTrigger);
      CommandCounterIncrement();
      syncline::EnsureTrigger(relid, syncline::kParameterKind);
      syncline::EnsureTrigger(relid, syncline::kParameterTruncateKind);
    }
    SPI_finish();
  });
  PG_RETURN_VOID();
}
