#include "rule_cache.hpp"

extern "C" {
#include "utils/snapmgr.h"
#include "access/genam.h"
#include "catalog/index.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/relcache.h"
}

#include <memory>
#include <unordered_map>

#include "checksum.hpp"
#include "json_text.hpp"
#include "rules.hpp"

namespace syncline {
namespace {

std::unordered_map<Oid, std::unique_ptr<TableRules>> cache;

void InvalidateRules(Datum, Oid relid) {
  if (relid == InvalidOid) {
    for (auto &entry : cache) entry.second->valid = false;
    return;
  }
  auto it = cache.find(relid);
  if (it != cache.end()) it->second->valid = false;
}

}  // namespace

// Reads the stored data queries over `relid` and compiles them.
void Compile(Relation rel, TableRules *rules) {
  Oid relid = RelationGetRelid(rel);
  rules->relid = relid;
  rules->context =
      AllocSetContextCreate(CacheMemoryContext, "syncline rules", ALLOCSET_SMALL_SIZES);
  MemoryContext old_context = MemoryContextSwitchTo(rules->context);
  rules->econtext = CreateStandaloneExprContext();
  MemoryContextSwitchTo(old_context);

  Oid key_index = RelationGetPrimaryKeyIndex(rel);
  if (OidIsValid(key_index)) {
    Relation index = index_open(key_index, AccessShareLock);
    for (int i = 0; i < index->rd_index->indnkeyatts; i++) {
      AttrNumber attnum = index->rd_index->indkey.values[i];
      rules->key_attnums.push_back(attnum);
      rules->key_encoders.emplace_back();
      rules->key_encoders.back().Init(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid,
                                      rules->context);
    }
    index_close(index, AccessShareLock);
  }

  if (SPI_connect() != SPI_OK_CONNECT) Fail("SPI_connect failed");
  // The rules are read like a catalog: as last committed, not as of the
  // caller's snapshot. The flusher's transaction snapshot predates rules
  // declared while it waited for the flush lock; compiled from it, a new
  // bucket's initial copy produced nothing and the stale rules stayed cached.
  PushActiveSnapshot(GetLatestSnapshot());
  AsEngine([&] {
    Oid argtypes[1] = {REGCLASSOID};
    Datum args[1] = {ObjectIdGetDatum(relid)};
    int rc = SPI_execute_with_args(
        "SELECT d.bucket_name, d.position, d.object_type, d.query, b.parameter_names, "
        "       d.filter, d.key_columns, b.definer::oid "
        "  FROM syncline_internal.data_queries d "
        "  JOIN syncline_internal.bucket_definitions b ON b.name = d.bucket_name "
        " WHERE d.relation = $1 ORDER BY d.bucket_name, d.position",
        1, argtypes, args, nullptr, true, 0);
    if (rc != SPI_OK_SELECT) Fail("reading syncline data queries failed: %d", rc);
  });
  PopActiveSnapshot();

  std::vector<std::string> key_columns;
  for (AttrNumber attnum : rules->key_attnums)
    key_columns.push_back(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname));
  for (uint64 row = 0; row < SPI_processed; row++) {
    HeapTuple tuple = SPI_tuptable->vals[row];
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull;
    rules->queries.emplace_back();
    CompiledQuery &query = rules->queries.back();
    query.definition = TextDatumGetCString(SPI_getbinval(tuple, desc, 1, &isnull));
    query.position = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
    query.object_type = TextDatumGetCString(SPI_getbinval(tuple, desc, 3, &isnull));
    char *query_text = TextDatumGetCString(SPI_getbinval(tuple, desc, 4, &isnull));
    ArrayType *names = DatumGetArrayTypeP(SPI_getbinval(tuple, desc, 5, &isnull));
    Datum filter_datum = SPI_getbinval(tuple, desc, 6, &isnull);
    StoredDataQuery stored;
    stored.relid = relid;
    stored.filter = isnull ? nullptr : TextDatumGetCString(filter_datum);
    ArrayType *declared_keys = DatumGetArrayTypeP(SPI_getbinval(tuple, desc, 7, &isnull));
    Oid definer = DatumGetObjectId(SPI_getbinval(tuple, desc, 8, &isnull));
    Datum *name_datums;
    int name_count;
    deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT, &name_datums, nullptr, &name_count);
    std::vector<std::string> param_names;
    for (int i = 0; i < name_count; i++) param_names.push_back(TextDatumGetCString(name_datums[i]));
    deconstruct_array(declared_keys, TEXTOID, -1, false, TYPALIGN_INT, &name_datums, nullptr,
                      &name_count);
    std::vector<std::string> declared_key_columns;
    for (int i = 0; i < name_count; i++)
      declared_key_columns.push_back(TextDatumGetCString(name_datums[i]));

    std::string where =
        "data query " + std::to_string(query.position) + " of bucket \"" + query.definition + "\"";
    if (declared_key_columns != key_columns) {
      auto list = [](const std::vector<std::string> &columns) {
        std::string out = "(";
        for (size_t i = 0; i < columns.size(); i++) out += (i ? ", " : "") + columns[i];
        return out + ")";
      };
      throw Error(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                  std::string("the primary key of table \"") + RelationGetRelationName(rel) +
                      "\" is used by sync rule \"" + query.definition + "\"",
                  "Rows are identified by " + list(declared_key_columns) + "; the key would be " +
                      (key_columns.empty() ? std::string("gone") : list(key_columns)) + ".",
                  "Drop the bucket first (syncline.drop_bucket), change the key, then declare it "
                  "again.")
          .AddContext(where);
    }
    // Parsed as the declarer, who was allowed to name everything in it; the
    // conditions are the canonical text, resolved under the pinned search_path.
    DataQueryShape shape;
    try {
      RunAs(definer, [&] { shape = ParseDataQuery(query_text, param_names, &stored); });
    } catch (Error &e) {
      e.InQuery(query_text).AddContext(where);
      throw;
    }
    query.param_attnums = shape.param_attnums;
    for (AttrNumber attnum : shape.param_attnums) {
      query.param_encoders.emplace_back();
      query.param_encoders.back().Init(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid,
                                       rules->context);
    }
    ListCell *lc;
    foreach (lc, shape.analyzed->targetList) {
      TargetEntry *tle = lfirst_node(TargetEntry, lc);
      if (tle->resjunk) continue;
      Var *var = castNode(Var, tle->expr);
      query.columns.push_back(OutputColumn{var->varattno, {}, {}});
      OutputColumn &column = query.columns.back();
      AppendJsonString(column.key, tle->resname);
      column.key.push_back(':');
      column.encoder.Init(var->vartype, rules->context);
    }
    Node *quals = shape.analyzed->jointree->quals;
    if (quals != nullptr) {
      old_context = MemoryContextSwitchTo(rules->context);
      Expr *planned = expression_planner(static_cast<Expr *>(copyObjectImpl(quals)));
      query.filter = ExecInitExpr(planned, nullptr);
      MemoryContextSwitchTo(old_context);
    }
  }
  SPI_finish();
}

namespace {

bool Passes(const TableRules &rules, const CompiledQuery &query, TupleTableSlot *slot) {
  if (query.filter == nullptr) return true;
  rules.econtext->ecxt_scantuple = slot;
  bool isnull;
  Datum result = ExecEvalExprSwitchContext(query.filter, rules.econtext, &isnull);
  ResetExprContext(rules.econtext);
  return !isnull && DatumGetBool(result);
}

// The bucket instance of a row; false when a parameter column is NULL (as
// in SQL, NULL = bucket.x is never true, so the row is in no instance).
bool BucketIdOf(const CompiledQuery &query, TupleTableSlot *slot, std::string &out) {
  out.assign(query.definition);
  out.push_back('[');
  for (size_t i = 0; i < query.param_attnums.size(); i++) {
    if (i > 0) out.push_back(',');
    bool isnull;
    Datum value = slot_getattr(slot, query.param_attnums[i], &isnull);
    if (isnull) return false;
    query.param_encoders[i].AppendJson(out, value, isnull);
  }
  out.push_back(']');
  return true;
}

void ObjectIdOf(const TableRules &rules, TupleTableSlot *slot, std::string &out) {
  out.clear();
  if (rules.key_attnums.size() == 1) {
    bool isnull;
    Datum value = slot_getattr(slot, rules.key_attnums[0], &isnull);
    rules.key_encoders[0].AppendText(out, value, isnull);
    return;
  }
  out.push_back('[');
  for (size_t i = 0; i < rules.key_attnums.size(); i++) {
    if (i > 0) out.push_back(',');
    bool isnull;
    Datum value = slot_getattr(slot, rules.key_attnums[i], &isnull);
    rules.key_encoders[i].AppendJson(out, value, isnull);
  }
  out.push_back(']');
}

void DataOf(const CompiledQuery &query, TupleTableSlot *slot, std::string &out) {
  out.assign("{");
  for (size_t i = 0; i < query.columns.size(); i++) {
    if (i > 0) out.push_back(',');
    const OutputColumn &column = query.columns[i];
    out += column.key;
    bool isnull;
    Datum value = slot_getattr(slot, column.attnum, &isnull);
    column.encoder.AppendJson(out, value, isnull);
  }
  out.push_back('}');
}

}  // namespace

const TableRules &GetTableRules(Relation rel) {
  static bool callback_registered = false;
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(InvalidateRules, 0);
    callback_registered = true;
  }
  Oid relid = RelationGetRelid(rel);
  auto it = cache.find(relid);
  if (it != cache.end() && it->second->valid && it->second->complete) return *it->second;
  if (it != cache.end()) {
    if (it->second->context) MemoryContextDelete(it->second->context);
    cache.erase(it);
  }
  auto rules = std::make_unique<TableRules>();
  TableRules *raw = rules.get();
  cache.emplace(relid, std::move(rules));
  // Until Compile returns the entry is incomplete, however it is left: by a
  // C++ exception or by a Postgres error that longjmps past this frame (an
  // out-of-memory error in a catalog call). A half-compiled entry, say one
  // without its data queries because reading them timed out, would make
  // every later write to the table in this session produce no ops.
  try {
    Compile(rel, raw);
  } catch (...) {
    raw->valid = false;
    throw;
  }
  raw->complete = true;
  return *raw;
}

void ComputeRowOps(const TableRules &rules, TupleTableSlot *old_row, TupleTableSlot *new_row,
                   std::vector<RowOp> &out, const char *only_definition, int only_position) {
  // Scratch strings reused across rows: no allocation per row once warm.
  static std::string old_bucket, new_bucket, old_id, new_id, old_data, new_data;
  bool have_old_id = false, have_new_id = false;
  for (const CompiledQuery &query : rules.queries) {
    if (only_definition != nullptr &&
        (query.definition != only_definition || query.position != only_position))
      continue;
    bool old_in = old_row != nullptr && BucketIdOf(query, old_row, old_bucket) &&
                  Passes(rules, query, old_row);
    bool new_in = new_row != nullptr && BucketIdOf(query, new_row, new_bucket) &&
                  Passes(rules, query, new_row);
    if (!old_in && !new_in) continue;
    if (old_in && !have_old_id) {
      ObjectIdOf(rules, old_row, old_id);
      have_old_id = true;
    }
    if (new_in && !have_new_id) {
      ObjectIdOf(rules, new_row, new_id);
      have_new_id = true;
    }
    bool same_place = old_in && new_in && old_bucket == new_bucket && old_id == new_id;
    if (old_in && !same_place) {
      out.push_back(RowOp{kStagedRemove,
                          old_bucket,
                          query.object_type,
                          old_id,
                          {},
                          RemoveChecksum(query.object_type, old_id)});
    }
    if (new_in) {
      DataOf(query, new_row, new_data);
      if (same_place) {
        DataOf(query, old_row, old_data);
        if (old_data == new_data) continue;  // nothing a client would see changed
      }
      out.push_back(RowOp{kStagedPut, new_bucket, query.object_type, new_id, new_data,
                          PutChecksum(query.object_type, new_id, new_data)});
    }
  }
}

}  // namespace syncline

// syncline_internal.check_rules(table): compiles every data query over the
// table as it is now; an error (a dropped or retyped column) says which rule.
SYNCLINE_FUNCTION(syncline_check_rules) {
  Oid relid = PG_GETARG_OID(0);
  syncline::TableRules rules;
  try {
    syncline::PgGuard([&] {
      Relation rel = table_open(relid, AccessShareLock);
      syncline::Compile(rel, &rules);
      table_close(rel, AccessShareLock);
    });
  } catch (...) {
    if (rules.context) MemoryContextDelete(rules.context);
    throw;
  }
  MemoryContextDelete(rules.context);
  PG_RETURN_VOID();
}
