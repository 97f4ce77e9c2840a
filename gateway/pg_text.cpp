// What PostgreSQL's text and jsonb can hold (see pg_text.hpp).
#include "gateway/pg_text.hpp"

#include <string>

namespace syncline::gateway {

bool JsonHoldsNul(const nlohmann::json &value) {
  using json = nlohmann::json;
  switch (value.type()) {
    case json::value_t::string:
      return value.get_ref<const std::string &>().find('\0') != std::string::npos;
    case json::value_t::array:
      for (const auto &v : value)
        if (JsonHoldsNul(v)) return true;
      return false;
    case json::value_t::object:
      for (const auto &[k, v] : value.items())
        if (k.find('\0') != std::string::npos || JsonHoldsNul(v)) return true;
      return false;
    default:
      return false;
  }
}

}  // namespace syncline::gateway
