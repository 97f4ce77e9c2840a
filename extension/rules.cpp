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
}

#include <algorithm>
#include <set>

#include "datum_json.hpp"
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

DataQueryShape ParseDataQuery(const char *text, const std::vector<std::string> &param_names,
                              Oid fixed_relid) {
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
    if (OidIsValid(fixed_relid)) {
      rv->schemaname = get_namespace_name(get_rel_namespace(fixed_relid));
      rv->relname = get_rel_name(fixed_relid);
      if (rv->relname == nullptr) Invalid("a synced table was dropped");
      shape.relid = fixed_relid;
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
      if (attnum == InvalidAttrNumber)
        throw Error(ERRCODE_UNDEFINED_COLUMN, std::string("column \"") + column +
                                                  "\" does not exist in table \"" +
                                                  get_rel_name(shape.relid) + "\"");
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

    // Analyze the row-local part with Postgres' own analyzer.
    SelectStmt *local = makeNode(SelectStmt);
    local->targetList = select->targetList;
    local->fromClause = select->fromClause;
    local->whereClause = row_local == NIL ? nullptr
                         : list_length(row_local) == 1
                             ? static_cast<Node *>(linitial(row_local))
                             : reinterpret_cast<Node *>(makeBoolExpr(AND_EXPR, row_local, -1));
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
    shape.analyzed = query;
    error_context_stack = outer_context;
  });
  return shape;
}

}  // namespace syncline
