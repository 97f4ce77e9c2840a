// What PostgreSQL's text and jsonb can hold (see pg_text.hpp).
#include "gateway/pg_text.hpp"

#include <utility>
#include <vector>

#include "extension/json_exact.hpp"

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

std::string ClientIdProblem(const std::string &client_id) {
  if (client_id.find('\0') != std::string::npos) return "must not contain U+0000";
  if (client_id.size() > kMaxClientIdBytes)
    return "must be at most " + std::to_string(kMaxClientIdBytes) + " bytes";
  return "";
}

nlohmann::json RefusedOp(const std::string &op, const std::string &why,
                         const std::string &sqlstate) {
  return {{"op", op}, {"refused", why}, {"code", sqlstate}};
}

nlohmann::json RefusalOf(const nlohmann::json &value, const std::string &op,
                         const std::string &what) {
  JsonScan scan = ScanJson(value);
  if (scan.depth > kMaxClientJsonDepth)
    return RefusedOp(op,
                     what + " is nested more than " + std::to_string(kMaxClientJsonDepth) +
                         " levels deep; the gateway takes no deeper values",
                     "54001");
  if (scan.nul)
    return RefusedOp(op, what +
                             " holds U+0000 (NUL), which PostgreSQL text cannot store; "
                             "remove it from the values");
  return nullptr;
}

std::string DumpForMessage(const nlohmann::json &value, size_t max_chars) {
  if (ScanJson(value).depth > kMaxClientJsonDepth)
    return "(a value nested more than " + std::to_string(kMaxClientJsonDepth) + " levels deep)";
  return DumpJsonExact(value).substr(0, max_chars);
}

}  // namespace syncline::gateway
