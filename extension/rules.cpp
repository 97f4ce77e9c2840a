#include "rules.hpp"

extern "C" {
#include "access/relation.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "access/genam.h"
#include "access/transam.h"
#include "catalog/index.h"
#include "executor/spi.h"
#include "utils/guc.h"
}

#include <algorithm>
#include <set>

#include "datum_json.hpp"
#include "rule_cache.hpp"
#include "staging.hpp"

namespace syncline {
namespace {

bool IsBucketRef(Node *node, const char **param) {
  if (node == nullptr || !IsA(node, ColumnRef)) return false;
  List *fields = castNode(ColumnRef, node)->fields;
  if (list_length(fields) != 2 || !IsA(linitial(fields), String) || !IsA(lsecond(fields), String))
    return false;
  if (strcmp(strVal(linitial(fields)), "bucket") != 0) return false;
  if (param) *param = strVal(lsecond(fields));
  return true;
}

bool ContainsBucketRefWalker(Node *node, void *context) {
  if (node == nullptr) return false;
  if (IsBucketRef(node, nullptr)) return true;
  return raw_expression_tree_walker(node, reinterpret_cast<bool (*)()>(ContainsBucketRefWalker),
                                    context);
}

bool ContainsSubLinkWalker(Node *node, void *context) {
  if (node == nullptr) return false;
  if (IsA(node, SubLink)) return true;
  return raw_expression_tree_walker(node, reinterpret_cast<bool (*)()>(ContainsSubLinkWalker),
                                    context);
}

// Splits a raw WHERE clause into its top-level AND conjuncts.
void FlattenAnd(Node *node, List **out) {
  if (node && IsA(node, BoolExpr) && castNode(BoolExpr, node)->boolop == AND_EXPR) {
    ListCell *lc;
    foreach (lc, castNode(BoolExpr, node)->args) FlattenAnd(static_cast<Node *>(lfirst(lc)), out);
  } else if (node) {
    *out = lappend(*out, node);
  }
}

// The column named by a (possibly qualified) raw column reference, or NULL.
const char *ColumnName(Node *node) {
  if (!node || !IsA(node, ColumnRef)) return nullptr;
  List *fields = castNode(ColumnRef, node)->fields;
  Node *last = static_cast<Node *>(llast(fields));
  if (!IsA(last, String) || list_length(fields) > 2) return nullptr;
  return strVal(last);
}

[[noreturn]] void Invalid(const std::string &message, const std::string &hint = {}) {
  throw Error(ERRCODE_INVALID_OBJECT_DEFINITION, message, {}, hint);
}

}  // namespace

Error &Error::AddContext(const std::string &context) {
  if (pg_error_ != nullptr) {
    pg_error_->context = pg_error_->context
                             ? psprintf("%s\n%s", pg_error_->context, context.c_str())
                             : pstrdup(context.c_str());
  } else {
    context_ = context_.empty() ? context : context_ + "\n" + context;
  }
  return *this;
}

Error &Error::InQuery(const char *query) {
  if (pg_error_ != nullptr && pg_error_->cursorpos > 0 && pg_error_->internalquery == nullptr) {
    pg_error_->internalpos = pg_error_->cursorpos;
    pg_error_->internalquery = pstrdup(query);
    pg_error_->cursorpos = 0;
  }
  return *this;
}

namespace {

// True for a function that is not part of PostgreSQL itself.
bool IsUserFunction(Oid funcid, void *) { return funcid >= FirstNormalObjectId; }

// Finds the first construct in an analyzed condition that could run code
// someone other than PostgreSQL wrote: a user-defined function or operator
// (or the input/output function of a user type behind a cast), or a cast to
// a domain, whose constraints may call anything.
bool UserCodeWalker(Node *node, void *context) {
  if (node == nullptr) return false;
  if (check_functions_in_node(node, IsUserFunction, nullptr)) {
    *static_cast<Node **>(context) = node;
    return true;
  }
  if (IsA(node, CoerceToDomain)) {
    *static_cast<Node **>(context) = node;
    return true;
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(UserCodeWalker), context);
}

// Runs `fn` with search_path set to pg_catalog alone, so that deparsed names
// come out schema-qualified unless they are PostgreSQL's own.
template <typename Fn>
void WithCatalogOnlySearchPath(Fn &&fn) {
  WithSearchPath("pg_catalog", fn);
}

}  // namespace

DataQueryShape ParseDataQuery(const char *text, const std::vector<std::string> &param_names,
                              const StoredDataQuery *stored) {
  DataQueryShape shape;
  shape.param_attnums.assign(param_names.size(), InvalidAttrNumber);
  PgGuard([&] {
    // Error positions refer to `text`; outer context callbacks (SPI, PL/pgSQL)
    // would re-point them at the calling statement. PG_TRY restores the stack.
    ErrorContextCallback *outer_context = error_context_stack;
    error_context_stack = nullptr;
    List *parsed = raw_parser(text, RAW_PARSE_DEFAULT);
    if (list_length(parsed) != 1 || !IsA(linitial_node(RawStmt, parsed)->stmt, SelectStmt))
      Invalid("a data query must be a single SELECT statement");
    RawStmt *raw = linitial_node(RawStmt, parsed);
    SelectStmt *select = castNode(SelectStmt, raw->stmt);
    if (select->op != SETOP_NONE || select->valuesLists || select->withClause ||
        select->distinctClause || select->groupClause || select->havingClause ||
        select->windowClause || select->sortClause || select->limitCount || select->limitOffset ||
        select->lockingClause || select->intoClause)
      Invalid("a data query is SELECT <columns> FROM <table> [WHERE <conditions>]",
              "UNION, WITH, DISTINCT, GROUP BY, ORDER BY, LIMIT and FOR UPDATE are not allowed "
              "in data queries.");
    if (list_length(select->fromClause) != 1 || !IsA(linitial(select->fromClause), RangeVar))
      Invalid("a data query must select from exactly one table",
              "Joins and subqueries belong in the bucket's parameter query; a data query maps "
              "each row to buckets from the row alone.");
    RangeVar *rv = linitial_node(RangeVar, select->fromClause);
    if (stored != nullptr) {
      rv->relname = get_rel_name(stored->relid);
      if (rv->relname == nullptr) Invalid("a synced table was dropped");
      rv->schemaname = get_namespace_name(get_rel_namespace(stored->relid));
      shape.relid = stored->relid;
    } else {
      shape.relid = RangeVarGetRelid(rv, AccessShareLock, true);
      if (!OidIsValid(shape.relid))
        throw Error(ERRCODE_UNDEFINED_TABLE,
                    std::string("relation \"") + (rv->schemaname ? rv->schemaname : "") +
                        (rv->schemaname ? "." : "") + rv->relname + "\" does not exist");
      char kind = get_rel_relkind(shape.relid);
      if (kind != RELKIND_RELATION)
        Invalid(std::string("\"") + rv->relname + "\" is not a table",
                "Data queries select from ordinary tables (not views, foreign or partitioned "
                "tables).");
      // From here on the name means this table: resolve it no second time.
      rv->schemaname = get_namespace_name(get_rel_namespace(shape.relid));
    }
    shape.object_type = rv->alias ? rv->alias->aliasname : rv->relname;

    // WHERE: `column = bucket.<param>` for every parameter, plus row-local conditions.
    List *conjuncts = NIL;
    List *row_local = NIL;
    FlattenAnd(select->whereClause, &conjuncts);
    ListCell *lc;
    foreach (lc, conjuncts) {
      Node *conjunct = static_cast<Node *>(lfirst(lc));
      if (ContainsSubLinkWalker(conjunct, nullptr))
        throw Error(ERRCODE_FEATURE_NOT_SUPPORTED, "subqueries are not allowed in data queries", {},
                    "Put joins and subqueries in the bucket's parameter query.");
      if (!ContainsBucketRefWalker(conjunct, nullptr)) {
        row_local = lappend(row_local, conjunct);
        continue;
      }
      const char *param = nullptr;
      const char *column = nullptr;
      if (IsA(conjunct, A_Expr)) {
        A_Expr *expr = castNode(A_Expr, conjunct);
        if (expr->kind == AEXPR_OP && list_length(expr->name) == 1 &&
            strcmp(strVal(linitial(expr->name)), "=") == 0) {
          if (IsBucketRef(expr->rexpr, &param)) {
            column = ColumnName(expr->lexpr);
          } else if (IsBucketRef(expr->lexpr, &param)) {
            column = ColumnName(expr->rexpr);
          }
        }
      }
      if (param == nullptr || column == nullptr)
        Invalid(
            "bucket parameters may only appear as \"<column> = bucket.<parameter>\" joined "
            "by AND at the top level of WHERE");
      auto it = std::find(param_names.begin(), param_names.end(), std::string(param));
      if (it == param_names.end()) {
        std::string known;
        for (const auto &name : param_names) known += (known.empty() ? "" : ", ") + name;
        throw Error(ERRCODE_UNDEFINED_COLUMN,
                    std::string("bucket parameter \"") + param + "\" is not defined", {},
                    known.empty() ? "This bucket has no parameters (parameters => NULL)."
                                  : "The parameter query returns: " + known + ".");
      }
      AttrNumber attnum = get_attnum(shape.relid, column);
      if (attnum == InvalidAttrNumber) {
        const char *table = get_rel_name(shape.relid);  // before any C++ object of the message
        throw Error(ERRCODE_UNDEFINED_COLUMN, std::string("column \"") + column +
                                                  "\" does not exist in table \"" +
                                                  (table ? table : "?") + "\"");
      }
      size_t index = it - param_names.begin();
      if (shape.param_attnums[index] != InvalidAttrNumber)
        Invalid(std::string("bucket parameter \"") + param + "\" is bound twice");
      shape.param_attnums[index] = attnum;
    }
    for (size_t i = 0; i < param_names.size(); i++) {
      if (shape.param_attnums[i] == InvalidAttrNumber)
        Invalid("bucket parameter \"" + param_names[i] + "\" is not used by the data query",
                "Every data query must compare a column with each parameter: WHERE <column> = "
                "bucket." +
                    param_names[i] + ".");
    }

    // The row-local conditions: as written when declaring, the stored
    // canonical text when compiling.
    Node *where = nullptr;
    if (stored != nullptr && !stored->from_declared_text) {
      if (stored->filter != nullptr) {
        std::string wrapper = std::string("SELECT WHERE ") + stored->filter;
        List *filter_parsed = raw_parser(wrapper.c_str(), RAW_PARSE_DEFAULT);
        where = castNode(SelectStmt, linitial_node(RawStmt, filter_parsed)->stmt)->whereClause;
      }
    } else if (row_local != NIL) {
      where = list_length(row_local) == 1
                  ? static_cast<Node *>(linitial(row_local))
                  : reinterpret_cast<Node *>(makeBoolExpr(AND_EXPR, row_local, -1));
    }

    // Analyze with Postgres' own analyzer.
    SelectStmt *local = makeNode(SelectStmt);
    local->targetList = select->targetList;
    local->fromClause = select->fromClause;
    local->whereClause = where;
    RawStmt *local_raw = makeNode(RawStmt);
    local_raw->stmt = reinterpret_cast<Node *>(local);
    local_raw->stmt_location = 0;
    local_raw->stmt_len = 0;
    Query *query = parse_analyze_fixedparams(local_raw, text, nullptr, 0, nullptr);
    if (query->hasAggs || query->hasWindowFuncs || query->hasTargetSRFs || query->hasSubLinks)
      Invalid(
          "a data query selects plain columns of one row: no aggregates, window functions, "
          "set-returning functions or subqueries");
    std::set<std::string> names;
    foreach (lc, query->targetList) {
      TargetEntry *tle = lfirst_node(TargetEntry, lc);
      if (tle->resjunk) continue;
      if (!IsA(tle->expr, Var))
        throw Error(ERRCODE_FEATURE_NOT_SUPPORTED,
                    std::string("data query column \"") + (tle->resname ? tle->resname : "?") +
                        "\" is an expression",
                    {},
                    "Select plain columns (renaming with AS is fine); compute values in the "
                    "client or in a generated column.");
      if (!names.insert(tle->resname).second)
        Invalid(std::string("data query selects column name \"") + tle->resname + "\" twice");
    }
    Node *quals = query->jointree->quals;
    if (quals && contain_mutable_functions(quals))
      Invalid("data query conditions may only use immutable functions and operators",
              "A row's buckets must follow from the row alone: now(), random() or lookups in "
              "other tables cannot be re-evaluated when the row changes.");
    Node *user_code = nullptr;
    if (quals && UserCodeWalker(quals, &user_code))
      throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                  "data query conditions may only use PostgreSQL's built-in functions, operators "
                  "and types",
                  IsA(user_code, CoerceToDomain) ? "The condition casts to a domain."
                                                 : "The condition calls a user-defined function.",
                  "Conditions run for every writer of the table and in the background, on no "
                  "role's behalf; compute the value in a generated column and compare that.");
    if ((stored == nullptr || stored->from_declared_text) && quals != nullptr) {
      WithCatalogOnlySearchPath([&] {
        List *context = deparse_context_for(shape.object_type.c_str(), shape.relid);
        shape.canonical_filter = deparse_expression(quals, context, false, false);
      });
    }
    shape.analyzed = query;
    error_context_stack = outer_context;
  });
  return shape;
}

ParameterQueryShape AnalyzeParameterQuery(const std::string &bucket, const char *query) {
  ParameterQueryShape result;
  PgGuard([&] {
    List *parsed = raw_parser(query, RAW_PARSE_DEFAULT);
    if (list_length(parsed) != 1 || !IsA(linitial_node(RawStmt, parsed)->stmt, SelectStmt))
      throw Error(ERRCODE_INVALID_OBJECT_DEFINITION,
                  "a parameter query must be a single SELECT statement");
    Query *analyzed =
        parse_analyze_fixedparams(linitial_node(RawStmt, parsed), query, nullptr, 0, nullptr);
    if (analyzed->utilityStmt != nullptr || analyzed->commandType != CMD_SELECT ||
        analyzed->rowMarks != NIL || analyzed->hasModifyingCTE)
      throw Error(ERRCODE_INVALID_OBJECT_DEFINITION, "a parameter query must be a read-only SELECT",
                  {}, "No FOR UPDATE and no data-modifying WITH.");
    WithCatalogOnlySearchPath([&] { result.canonical = pg_get_querydef(analyzed, false); });
    // Without the deparser's leading and trailing white space (string
    // literals inside are left exactly as they are).
    size_t first = result.canonical.find_first_not_of(" \n");
    size_t last = result.canonical.find_last_not_of(" \n;");
    result.canonical =
        first == std::string::npos ? "" : result.canonical.substr(first, last - first + 1);

    SPIPlanPtr plan = SPI_prepare(query, 0, nullptr);
    if (plan == nullptr) Fail("SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
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
    if (rc != SPI_OK_SELECT) Fail("running the parameter query failed: %d", rc);
    SPI_freeplan(plan);
  });
  return result;
}

std::vector<std::string> PrimaryKeyColumns(Oid relid) {
  std::vector<std::string> columns;
  PgGuard([&] {
    Relation rel = relation_open(relid, AccessShareLock);
    Oid key_index = RelationGetPrimaryKeyIndex(rel);
    if (OidIsValid(key_index)) {
      Relation index = index_open(key_index, AccessShareLock);
      for (int i = 0; i < index->rd_index->indnkeyatts; i++) {
        AttrNumber attnum = index->rd_index->indkey.values[i];
        columns.push_back(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname));
      }
      index_close(index, AccessShareLock);
    }
    relation_close(rel, AccessShareLock);
  });
  return columns;
}

}  // namespace syncline
