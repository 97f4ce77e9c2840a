// syncline.checkpoint(claims): the bucket instances a user gets, with their
// running checksum and op count, all read in one snapshot.
#include "pg_compat.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
}

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "datum_json.hpp"
#include "json_text.hpp"
#include "rule_cache.hpp"
#include "flush.hpp"
#include "spi_util.hpp"

namespace syncline {
extern int max_buckets_per_user;
namespace {

struct Definition {
  std::string name;
  std::optional<std::string> parameter_query;  // canonical text
  Oid definer = InvalidOid;
};

// Runs one definition's parameter query as its definer (restricted security
// context, pinned search_path); appends instance ids.
void AddInstances(const Definition &def, std::vector<std::string> &ids) {
  if (!def.parameter_query) {
    ids.push_back(def.name + "[]");
    return;
  }
  RunAs(def.definer, [&] {
    int rc = SPI_execute(def.parameter_query->c_str(), true, max_buckets_per_user + 1);
    if (rc != SPI_OK_SELECT)
      Fail("parameter query of bucket \"%s\" is not a SELECT", def.name.c_str());
  });
  TupleDesc desc = SPI_tuptable->tupdesc;
  std::vector<ValueEncoder> encoders(desc->natts);
  std::string id;
  // Type output functions may raise: as a C++ exception, past these locals.
  PgGuard([&] {
    for (int i = 0; i < desc->natts; i++)
      encoders[i].Init(TupleDescAttr(desc, i)->atttypid, CurrentMemoryContext);
    for (uint64 row = 0; row < SPI_processed; row++) {
      id.assign(def.name);
      id.push_back('[');
      bool has_null = false;
      for (int i = 0; i < desc->natts && !has_null; i++) {
        if (i > 0) id.push_back(',');
        bool isnull;
        Datum value = SPI_getbinval(SPI_tuptable->vals[row], desc, i + 1, &isnull);
        has_null = isnull;  // NULL = column is never true: no rows, no instance
        encoders[i].AppendJson(id, value, isnull);
      }
      id.push_back(']');
      if (!has_null) ids.push_back(id);
    }
  });
}

}  // namespace
}  // namespace syncline

SYNCLINE_FUNCTION(syncline_checkpoint) {
  if (PG_ARGISNULL(0))
    throw syncline::Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "claims must not be NULL", {},
                          "Pass the verified token claims, or '{}' for none.");
  std::vector<syncline::Definition> definitions;
  std::vector<std::string> ids;
  std::string json;
  Datum result = 0;
  syncline::PgGuard([&] {
    Jsonb *claims = PG_GETARG_JSONB_P(0);
    char *claims_text = JsonbToCString(nullptr, &claims->root, VARSIZE(claims));
    int nest_level = NewGUCNestLevel();
    (void)set_config_option("syncline.claims", claims_text, PGC_SUSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    if (SPI_connect() != SPI_OK_CONNECT) syncline::Fail("SPI_connect failed");
    // read_only: every query below runs in this call's one snapshot.
    int rc = SPI_execute(
        "SELECT name, parameter_query, definer::oid "
        "  FROM syncline_internal.bucket_definitions ORDER BY name",
        true, 0);
    if (rc != SPI_OK_SELECT) syncline::Fail("reading bucket definitions failed");
    for (uint64 row = 0; row < SPI_processed; row++) {
      HeapTuple tuple = SPI_tuptable->vals[row];
      TupleDesc desc = SPI_tuptable->tupdesc;
      bool isnull;
      syncline::Definition def;
      def.name = syncline::VarlenaBytes(SPI_getbinval(tuple, desc, 1, &isnull));
      Datum query = SPI_getbinval(tuple, desc, 2, &isnull);
      if (!isnull) def.parameter_query = syncline::VarlenaBytes(query);
      def.definer = DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull));
      definitions.push_back(std::move(def));
    }
    for (const syncline::Definition &def : definitions) {
      try {
        syncline::PgGuard([&] { syncline::AddInstances(def, ids); });
      } catch (syncline::Error &e) {
        e.AddContext("parameter query of bucket \"" + def.name + "\"");
        throw;
      }
      if (ids.size() > static_cast<size_t>(syncline::max_buckets_per_user))
        throw syncline::Error(
            ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "these claims give access to more than " +
                std::to_string(syncline::max_buckets_per_user) + " bucket instances",
            {}, "Raise syncline.max_buckets_per_user, or group rows into fewer buckets.");
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());

    Datum *id_datums = static_cast<Datum *>(palloc(sizeof(Datum) * (ids.size() + 1)));
    for (size_t i = 0; i < ids.size(); i++)
      id_datums[i] = PointerGetDatum(cstring_to_text_with_len(ids[i].data(), ids[i].size()));
    ArrayType *id_array =
        construct_array(id_datums, static_cast<int>(ids.size()), TEXTOID, -1, false, TYPALIGN_INT);
    Oid types[1] = {TEXTARRAYOID};
    Datum args[1] = {PointerGetDatum(id_array)};
    rc = SPI_execute_with_args(
        "SELECT coalesce((SELECT last_op_id FROM syncline_internal.state), 0), s.bucket, "
        "       s.checksum, "
        "       s.count, s.last_op_id "
        "  FROM (SELECT 1) one LEFT JOIN syncline_internal.bucket_state s "
        "    ON s.bucket = ANY($1) ORDER BY s.bucket",
        1, types, args, nullptr, true, 0);
    if (rc != SPI_OK_SELECT) syncline::Fail("reading bucket state failed");
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull;
    int64 last_op_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], desc, 1, &isnull));
    json.assign("{\"last_op_id\":");
    json += std::to_string(last_op_id);
    json += ",\"buckets\":[";
    // Merge the sorted ids with the sorted state rows; absent state = empty bucket.
    uint64 row = 0;
    for (size_t i = 0; i < ids.size(); i++) {
      int64 checksum = 0, count = 0, bucket_last = 0;
      while (row < SPI_processed) {
        Datum bucket = SPI_getbinval(SPI_tuptable->vals[row], desc, 2, &isnull);
        if (isnull) {
          row++;
          continue;
        }
        std::string_view name = syncline::VarlenaBytes(bucket);
        if (name < ids[i]) {
          row++;
          continue;
        }
        if (name == ids[i]) {
          checksum = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], desc, 3, &isnull));
          count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], desc, 4, &isnull));
          bucket_last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], desc, 5, &isnull));
          row++;
        }
        break;
      }
      if (i > 0) json.push_back(',');
      json += "{\"bucket\":";
      syncline::AppendJsonString(json, ids[i]);
      json += ",\"checksum\":" + std::to_string(checksum) + ",\"count\":" + std::to_string(count) +
              ",\"last_op_id\":" + std::to_string(bucket_last) + "}";
    }
    json += "]";
    // checkpoint(claims, client_id): the write checkpoint of that client's
    // newest published batch (if the client belongs to the claims' subject)
    // in this same snapshot, so it never names an op id past last_op_id.
    if (PG_NARGS() > 1 && !PG_ARGISNULL(1)) {
      static const char *kWriteCheckpointSql =
          "SELECT n.w FROM (SELECT syncline_internal.published_write_checkpoint("
          "                          b.write_checkpoint, b.txid) AS w "
          "                   FROM syncline_internal.client_batches b "
          "                  WHERE b.client_id = $1 AND b.subject IN ($2, '') "
          "                  ORDER BY b.seq DESC) n "
          " WHERE n.w IS NOT NULL LIMIT 1";
      // 0.2's SQL (until ALTER EXTENSION syncline UPDATE): stamped records only.
      static const char *kStampedWriteCheckpointSql =
          "SELECT b.write_checkpoint FROM syncline_internal.client_batches b "
          " WHERE b.client_id = $1 AND b.write_checkpoint IS NOT NULL "
          "   AND b.subject IN ($2, '') "
          " ORDER BY b.seq DESC LIMIT 1";
      Oid wc_types[2] = {TEXTOID, TEXTOID};
      const char *subject = nullptr;
      {
        JsonbValue key;
        key.type = jbvString;
        key.val.string.val = const_cast<char *>("sub");
        key.val.string.len = 3;
        Jsonb *claims = PG_GETARG_JSONB_P(0);
        JsonbValue *sub = findJsonbValueFromContainer(&claims->root, JB_FOBJECT, &key);
        if (sub != nullptr && sub->type == jbvString)
          subject = pnstrdup(sub->val.string.val, sub->val.string.len);
      }
      int64 write_checkpoint = 0;
      if (subject != nullptr && *subject != '\0') {
        Datum wc_args[2] = {PG_GETARG_DATUM(1), CStringGetTextDatum(subject)};
        rc = SPI_execute_with_args(
            syncline::ResolvesWriteCheckpoints() ? kWriteCheckpointSql : kStampedWriteCheckpointSql,
            2, wc_types, wc_args, nullptr, true, 1);
        if (rc != SPI_OK_SELECT) syncline::Fail("reading the write checkpoint failed");
        if (SPI_processed == 1)
          write_checkpoint = DatumGetInt64(
              SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
      }
      json += ",\"write_checkpoint\":" + std::to_string(write_checkpoint);
    }
    json += "}";
    SPI_finish();
    AtEOXact_GUC(true, nest_level);
    result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json.c_str()));
  });
  return result;
}
