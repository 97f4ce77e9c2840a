// JSON documents whose numbers keep their exact text through nlohmann::json.
//
// nlohmann::json holds a number that is not a 64-bit integer as a double, so a client's
// 12345678901234567.891 became 12345678901234568 and 1.10 became 1.1 on the way from the
// client to a numeric or jsonb column. ParseJsonExact keeps such a number as a string of
// its exact text behind a marker that no parsed string can start with (0xFF 0xFE is never
// valid UTF-8, and the parser refuses invalid UTF-8); DumpJsonExact writes it back as the
// number it was. Integers that fit 64 bits stay ordinary numbers.
//
// No Postgres header: used by the extension (apply_writes), the gateway (the batches it
// builds) and the unit tests, each linking json_text.cpp for the string escaper.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json_text.hpp"

namespace syncline {

inline constexpr std::string_view kExactNumberMark = "\xFF\xFE";

// The exact text of a number ParseJsonExact kept as a string, or an empty view.
inline std::string_view ExactNumberText(const nlohmann::json &value) {
  if (!value.is_string()) return {};
  const std::string &s = value.get_ref<const std::string &>();
  if (s.size() <= kExactNumberMark.size() ||
      s.compare(0, kExactNumberMark.size(), kExactNumberMark) != 0)
    return {};
  return std::string_view(s).substr(kExactNumberMark.size());
}

// A number kept as its exact text (`text` is a JSON number, as written).
inline nlohmann::json ExactNumber(std::string_view text) {
  std::string marked(kExactNumberMark);
  marked += text;
  return marked;
}

// A string the JSON text held, not a number ParseJsonExact kept as text: what a field that
// must be a string (a type name, an id, a client id) is checked with.
inline bool IsJsonText(const nlohmann::json &value) {
  return value.is_string() && ExactNumberText(value).empty();
}

// Builds a document from a stream of values, keys and container starts and ends, the way
// nlohmann's own parser does (a repeated key keeps the last value). The SAX reader below and
// apply_writes' jsonb walk feed it.
class JsonDocumentBuilder {
 public:
  using json = nlohmann::json;
  explicit JsonDocumentBuilder(json &root) : root_(root) {}

  void Value(json v) { Place(std::move(v)); }
  void Key(std::string k) { key_ = std::move(k); }
  void Open(json container) { open_.push_back(Place(std::move(container))); }
  void Close() { open_.pop_back(); }

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

  json &root_;
  std::vector<json *> open_;  // the containers being filled, innermost last
  std::string key_;
};

namespace json_exact_detail {

// nlohmann's SAX interface: the document nlohmann builds, except for numbers that are not
// 64-bit integers.
class ExactSax {
 public:
  using json = nlohmann::json;
  explicit ExactSax(json &root) : builder_(root) {}

  bool null() { return Add(nullptr); }
  bool boolean(bool v) { return Add(v); }
  bool number_integer(json::number_integer_t v) { return Add(v); }
  bool number_unsigned(json::number_unsigned_t v) { return Add(v); }
  bool number_float(json::number_float_t, const json::string_t &text) {
    return Add(ExactNumber(text));
  }
  bool string(json::string_t &v) { return Add(std::move(v)); }
  bool binary(json::binary_t &) { return false; }
  bool start_object(std::size_t) {
    builder_.Open(json::object());
    return true;
  }
  bool key(json::string_t &k) {
    builder_.Key(std::move(k));
    return true;
  }
  bool end_object() {
    builder_.Close();
    return true;
  }
  bool start_array(std::size_t) {
    builder_.Open(json::array());
    return true;
  }
  bool end_array() {
    builder_.Close();
    return true;
  }
  bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception &) {
    return false;
  }

 private:
  bool Add(json v) {
    builder_.Value(std::move(v));
    return true;
  }

  JsonDocumentBuilder builder_;
};

}  // namespace json_exact_detail

// Parses `text` (one JSON value, nothing after it but whitespace); a discarded value when it
// is not valid JSON, as nlohmann::json::parse(text, nullptr, false) answers.
inline nlohmann::json ParseJsonExact(std::string_view text) {
  nlohmann::json out;
  json_exact_detail::ExactSax builder(out);
  if (!nlohmann::json::sax_parse(text.begin(), text.end(), &builder,
                                 nlohmann::json::input_format_t::json, /*strict=*/true))
    out = nlohmann::json::value_t::discarded;
  return out;
}

// Appends `value` as JSON text, numbers kept by ParseJsonExact written as they were read.
inline void DumpJsonExact(const nlohmann::json &value, std::string &out) {
  if (value.is_object()) {
    out.push_back('{');
    bool first = true;
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!first) out.push_back(',');
      first = false;
      AppendJsonString(out, it.key());
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
      AppendJsonString(out, value.get_ref<const std::string &>());
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
