// Row, TRUNCATE and parameter-table triggers: turn writes into staged ops.
#include "pg_compat.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "utils/datum.h"
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

namespace syncline {
namespace {

// Tables of parameter queries this transaction has already staged a marker
// for, with the subtransaction that staged it: one marker per table and
// transaction is enough, unless the subtransaction that wrote it rolled back.
std::vector<std::pair<Oid, SubTransactionId>> marked_tables;

void ForgetMarkersAtEnd(XactEvent event, void *) {
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
      event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
      event == XACT_EVENT_PREPARE)
    marked_tables.clear();
}

void ForgetMarkersOfSubtransaction(SubXactEvent event, SubTransactionId subid,
                                   SubTransactionId parent, void *) {
  for (auto it = marked_tables.begin(); it != marked_tables.end();) {
    if (it->second != subid) {
      ++it;
    } else if (event == SUBXACT_EVENT_ABORT_SUB) {
      it = marked_tables.erase(it);
    } else {
      if (event == SUBXACT_EVENT_COMMIT_SUB) it->second = parent;
      ++it;
    }
  }
}

bool AlreadyMarked(Oid relid) {
  static bool registered = false;
  if (!registered) {
    RegisterXactCallback(ForgetMarkersAtEnd, nullptr);
    RegisterSubXactCallback(ForgetMarkersOfSubtransaction, nullptr);
    registered = true;
  }
  for (const auto &entry : marked_tables)
    if (entry.first == relid) return true;
  return false;
}

// True when an UPDATE left every column as it was.
bool SameRow(TupleTableSlot *old_row, TupleTableSlot *new_row) {
  TupleDesc desc = old_row->tts_tupleDescriptor;
  slot_getallattrs(old_row);
  slot_getallattrs(new_row);
  for (int i = 0; i < desc->natts; i++) {
    Form_pg_attribute attr = TupleDescAttr(desc, i);
    if (attr->attisdropped) continue;
    if (old_row->tts_isnull[i] != new_row->tts_isnull[i]) return false;
    if (old_row->tts_isnull[i]) continue;
    if (!datumIsEqual(old_row->tts_values[i], new_row->tts_values[i], attr->attbyval, attr->attlen))
      return false;
  }
  return true;
}

}  // namespace
}  // namespace syncline

// A change to a table some parameter query reads: one marker per table and
// transaction tells the flusher (and through it the gateways) to re-run the
// parameter queries of the definitions that read it. Statements that changed
// no row, and updates that changed nothing, stage nothing.
SYNCLINE_FUNCTION(syncline_parameter_trigger) {
  TriggerData *trigger = syncline::CheckTrigger(fcinfo, "syncline_internal.parameter_trigger()");
  syncline::PgGuard([&] {
    Oid relid = RelationGetRelid(trigger->tg_relation);
    if (syncline::AlreadyMarked(relid)) return;
    if (TRIGGER_FIRED_FOR_ROW(trigger->tg_event) && TRIGGER_FIRED_BY_UPDATE(trigger->tg_event) &&
        syncline::SameRow(trigger->tg_trigslot, trigger->tg_newslot))
      return;
    char relid_text[16];
    snprintf(relid_text, sizeof relid_text, "%u", relid);
    syncline::StageMarker(syncline::kStagedParameterChange, relid_text, nullptr);
    syncline::marked_tables.emplace_back(relid, GetCurrentSubTransactionId());
  });
  return TRIGGER_FIRED_FOR_ROW(trigger->tg_event) ? PointerGetDatum(trigger->tg_trigtuple)
                                                  : PointerGetDatum(nullptr);
}
