#include "spi_util.hpp"

extern "C" {
#include "access/detoast.h"
}

#include <unordered_map>

namespace syncline {

int ExecPrepared(const char *sql, int nargs, Oid *types, Datum *args, const char *nulls) {
  static std::unordered_map<const char *, SPIPlanPtr> plans;
  auto it = plans.find(sql);
  if (it == plans.end()) {
    // Generic plans: these statements run thousands of times a second and
    // planning each call would cost more than executing it.
    SPIPlanPtr plan = nullptr;
    PgGuard([&] {
      plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
      if (plan == nullptr)
        Fail("preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
      SPI_keepplan(plan);
    });
    it = plans.emplace(sql, plan).first;
  }
  int rc = 0;
  PgGuard([&] {
    rc = SPI_execute_plan(it->second, args, nulls, false, 0);
    if (rc < 0) Fail("\"%s\" failed: %s", sql, SPI_result_code_string(rc));
  });
  return rc;
}

std::string_view VarlenaBytes(Datum value, struct varlena **copy) {
  struct varlena *bytes = reinterpret_cast<struct varlena *>(DatumGetPointer(value));
  if (copy != nullptr) *copy = nullptr;
  if (VARATT_IS_COMPRESSED(bytes) || VARATT_IS_EXTERNAL(bytes)) {
    PgGuard([&] { bytes = detoast_attr(bytes); });
    if (copy != nullptr) *copy = bytes;
  }
  return std::string_view(VARDATA_ANY(bytes), VARSIZE_ANY_EXHDR(bytes));
}

Datum TextDatumOf(std::string_view bytes) {
  Datum text = 0;
  PgGuard([&] {
    text = PointerGetDatum(cstring_to_text_with_len(bytes.data(), static_cast<int>(bytes.size())));
  });
  return text;
}

}  // namespace syncline
