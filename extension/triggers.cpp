// Row, TRUNCATE and parameter-table triggers: turn writes into staged ops.
#include "pg_compat.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "utils/snapmgr.h"
}

#include <string>
#include <vector>

#include "rule_cache.hpp"
#include "staging.hpp"

namespace syncline {
namespace {

TriggerData *CheckTrigger(FunctionCallInfo fcinfo, const char *name) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    throw Error(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                std::string(name) + " may only be called as a trigger");
  return reinterpret_cast<TriggerData *>(fcinfo->context);
}

}  // namespace

// Emits the REMOVE ops for every row of `rel` in any bucket: used before
// TRUNCATE, and by nothing else.
static void StageRemovalOfAllRows(Relation rel, std::vector<RowOp> &ops) {
  const TableRules &rules = GetTableRules(rel);
  if (rules.queries.empty()) return;
  Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
  TableScanDesc scan = table_beginscan(rel, snapshot, 0, nullptr);
  TupleTableSlot *slot = table_slot_create(rel, nullptr);
  while (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
    ComputeRowOps(rules, slot, nullptr, ops);
    if (ops.size() >= 10000) {
      StageOps(ops);
      ops.clear();
    }
  }
  ExecDropSingleTupleTableSlot(slot);
  table_endscan(scan);
  UnregisterSnapshot(snapshot);
  StageOps(ops);
  ops.clear();
}

}  // namespace syncline

using syncline::RowOp;

SYNCLINE_FUNCTION(syncline_row_trigger) {
  TriggerData *trigger = syncline::CheckTrigger(fcinfo, "syncline_internal.row_trigger()");
  if (!TRIGGER_FIRED_FOR_ROW(trigger->tg_event) || !TRIGGER_FIRED_AFTER(trigger->tg_event))
    throw syncline::Error(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                          "syncline_internal.row_trigger() must fire AFTER ... FOR EACH ROW");
  static std::vector<RowOp> ops;
  ops.clear();
  syncline::PgGuard([&] {
    const syncline::TableRules &rules = syncline::GetTableRules(trigger->tg_relation);
    TupleTableSlot *old_row = nullptr, *new_row = nullptr;
    if (TRIGGER_FIRED_BY_INSERT(trigger->tg_event)) {
      new_row = trigger->tg_trigslot;
    } else if (TRIGGER_FIRED_BY_UPDATE(trigger->tg_event)) {
      old_row = trigger->tg_trigslot;
      new_row = trigger->tg_newslot;
    } else if (TRIGGER_FIRED_BY_DELETE(trigger->tg_event)) {
      old_row = trigger->tg_trigslot;
    }
    syncline::ComputeRowOps(rules, old_row, new_row, ops);
    syncline::StageOps(ops);
  });
  return PointerGetDatum(nullptr);
}

SYNCLINE_FUNCTION(syncline_truncate_trigger) {
  TriggerData *trigger = syncline::CheckTrigger(fcinfo, "syncline_internal.truncate_trigger()");
  if (!TRIGGER_FIRED_BY_TRUNCATE(trigger->tg_event) || !TRIGGER_FIRED_BEFORE(trigger->tg_event))
    throw syncline::Error(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                          "syncline_internal.truncate_trigger() must fire BEFORE TRUNCATE");
  std::vector<RowOp> ops;
  syncline::PgGuard([&] { syncline::StageRemovalOfAllRows(trigger->tg_relation, ops); });
  return PointerGetDatum(nullptr);
}

SYNCLINE_FUNCTION(syncline_parameter_trigger) {
  TriggerData *trigger = syncline::CheckTrigger(fcinfo, "syncline_internal.parameter_trigger()");
  syncline::PgGuard([&] {
    char relid[16];
    snprintf(relid, sizeof relid, "%u", RelationGetRelid(trigger->tg_relation));
    syncline::StageMarker(syncline::kStagedParameterChange, relid, nullptr);
  });
  return PointerGetDatum(nullptr);
}
