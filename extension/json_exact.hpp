// JSON documents whose numbers keep their exact text through nlohmann::json.
//
// nlohmann::json holds a number that is not a 64-bit integer as a double, so a client's
// 12345678901234567.891 became 12345678901234568 and 1.10 became 1.1 on the way from the
// client to a numeric or jsonb column. ParseJsonExact keeps such a number as a string of
// its exact text behind a marker that no parsed string can start with (0xFF 0xFE is never
// valid UTF-8, and the parser refuses invalid UTF-8); DumpJsonExact writes it back as the
// number it was. Integers that fit 64 bits stay ordinary numbers.
//
// Header-only, no Postgres header: used by the extension (apply_writes), the gateway (the
// batches it builds) and the unit tests.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace syncline {

inline constexpr std::string_view kExactNumberMark = "\xFF\xFE";

// The exact text of a number ParseJsonExact kept as a string, or an empty view.
inline std::string_view ExactNumberText(const nlohmann::json &value) {
  if (!value.is_string()) return {};
  const std::string &s = value.get_ref<const std::string &>();
  if (s.size() <= kExactNumberMark.size() || s.compare(0, 2, kExactNumberMark) != 0) return {};
  return std::string_view(s).substr(kExactNumberMark.size());
}

// A string the JSON text held, not a number ParseJsonExact kept as text: what a field that
// must be a string (a type name, an id, a client id) is checked with.
inline bool IsJsonText(const nlohmann::json &value) {
  return value.is_string() && ExactNumberText(value).empty();
}

namespace json_exact_detail {

// nlohmann's SAX interface, building the same document its own parser builds (a repeated
// key keeps the last value), except for numbers that are not 64-bit integers.
class ExactDomBuilder {
 public:
  using json = nlohmann::json;
  explicit ExactDomBuilder(json &root) : root_(root) {}

  bool null() { return Add(nullptr); }
  bool boolean(bool v) { return Add(v); }
  bool number_integer(json::number_integer_t v) { return Add(v); }
  bool number_unsigned(json::number_unsigned_t v) { return Add(v); }
  bool number_float(json::number_float_t, const json::string_t &text) {
    std::string marked(kExactNumberMark);
    marked += text;
    return Add(std::move(marked));
  }
  bool string(json::string_t &v) { return Add(std::move(v)); }
  bool binary(json::binary_t &) { return false; }
  bool start_object(std::size_t) { return Open(json::object()); }
  bool key(json::string_t &k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    open_.pop_back();
    return true;
  }
  bool start_array(std::size_t) { return Open(json::array()); }
  bool end_array() {
    open_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception &) {
    return false;
  }

 private:
  json *Place(json v) {
    if (open_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json &top = *open_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json &slot = top[key_];
    slot = std::move(v);
    return &slot;
  }
  bool Add(json v) {
    Place(std::move(v));
    return true;
  }
  bool Open(json container) {
    open_.push_back(Place(std::move(container)));
    return true;
  }

  json &root_;
  std::vector<json *> open_;  // the containers being filled, innermost last
  std::string key_;
};

}  // namespace json_exact_detail

// Parses `text` (one JSON value, nothing after it but whitespace). False when it is not
// valid JSON; `out` is then unspecified.
inline bool ParseJsonExact(std::string_view text, nlohmann::json *out) {
  *out = nullptr;
  json_exact_detail::ExactDomBuilder builder(*out);
  return nlohmann::json::sax_parse(text.begin(), text.end(), &builder,
                                   nlohmann::json::input_format_t::json, /*strict=*/true);
}

namespace json_exact_detail {

// A JSON string literal: quotes, backslashes and control characters escaped, every other byte
// as it is (what nlohmann's dump writes for UTF-8 text).
inline void AppendString(std::string &out, const std::string &text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t run = 0;
  for (size_t i = 0; i < text.size(); i++) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text, run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
    }
  }
  out.append(text, run, std::string::npos);
  out.push_back('"');
}

}  // namespace json_exact_detail

// Appends `value` as JSON text, numbers kept by ParseJsonExact written as they were read.
inline void DumpJsonExact(const nlohmann::json &value, std::string &out) {
  if (value.is_object()) {
    out.push_back('{');
    bool first = true;
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!first) out.push_back(',');
      first = false;
      json_exact_detail::AppendString(out, it.key());
      out.push_back(':');
      DumpJsonExact(it.value(), out);
    }
    out.push_back('}');
  } else if (value.is_array()) {
    out.push_back('[');
    bool first = true;
    for (const auto &item : value) {
      if (!first) out.push_back(',');
      first = false;
      DumpJsonExact(item, out);
    }
    out.push_back(']');
  } else if (value.is_string()) {
    std::string_view number = ExactNumberText(value);
    if (!number.empty())
      out += number;
    else
      json_exact_detail::AppendString(out, value.get_ref<const std::string &>());
  } else {
    out += value.dump();  // other numbers, booleans, null
  }
}

inline std::string DumpJsonExact(const nlohmann::json &value) {
  std::string out;
  DumpJsonExact(value, out);
  return out;
}

}  // namespace syncline
