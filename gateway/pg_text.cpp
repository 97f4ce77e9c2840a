// What PostgreSQL's text and jsonb can hold (see pg_text.hpp).
#include "gateway/pg_text.hpp"

#include <utility>
#include <vector>

namespace syncline::gateway {

JsonScan ScanJson(const nlohmann::json &value) {
  using json = nlohmann::json;
  JsonScan scan;
  std::vector<std::pair<const json *, size_t>> todo = {{&value, 1}};
  while (!todo.empty()) {
    auto [v, depth] = todo.back();
    todo.pop_back();
    if (depth > scan.depth) scan.depth = depth;
    if (depth > kMaxClientJsonDepth) continue;  // too deep already: no need to look further
    switch (v->type()) {
      case json::value_t::string:
        scan.nul |= v->get_ref<const std::string &>().find('\0') != std::string::npos;
        break;
      case json::value_t::array:
        for (const auto &item : *v) todo.emplace_back(&item, depth + 1);
        break;
      case json::value_t::object:
        for (auto it = v->begin(); it != v->end(); ++it) {
          scan.nul |= it.key().find('\0') != std::string::npos;
          todo.emplace_back(&it.value(), depth + 1);
        }
        break;
      default:
        break;
    }
  }
  return scan;
}

bool JsonHoldsNul(const nlohmann::json &value) { return ScanJson(value).nul; }

std::string DumpForMessage(const nlohmann::json &value, size_t max_chars) {
  if (ScanJson(value).depth > kMaxClientJsonDepth)
    return "(a value nested more than " + std::to_string(kMaxClientJsonDepth) + " levels deep)";
  return value.dump().substr(0, max_chars);
}

}  // namespace syncline::gateway
