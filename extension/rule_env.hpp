// Implementation of WithRuleEnvironment (see rule_cache.hpp).
#pragma once

extern "C" {
#include "utils/guc.h"
}

namespace syncline {

template <typename Fn>
void WithRuleEnvironment(const char *search_path, Oid role, Fn &&fn) {
  Oid saved_user;
  int saved_context;
  GetUserIdAndSecContext(&saved_user, &saved_context);
  int nest_level = NewGUCNestLevel();
  if (search_path != nullptr)
    (void)set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
  if (OidIsValid(role)) SetUserIdAndSecContext(role, saved_context | SECURITY_LOCAL_USERID_CHANGE);
  fn();
  if (OidIsValid(role)) SetUserIdAndSecContext(saved_user, saved_context);
  AtEOXact_GUC(true, nest_level);
}

// Runs `fn` as the bootstrap superuser: Syncline's internal tables are not
// granted to anyone. Use inside PgGuard.
template <typename Fn>
void AsOwner(Fn &&fn) {
  WithRuleEnvironment(nullptr, BOOTSTRAP_SUPERUSERID, fn);
}

}  // namespace syncline
