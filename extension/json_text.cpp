#include "json_text.hpp"

#include <cstdint>

namespace syncline {

void AppendJsonString(std::string &out, std::string_view value) {
  static const char kHex[] = "0123456789abcdef";
  out.push_back('"');
  // Runs of characters that need no escape (nearly all of them) are appended
  // whole, not one push_back each: this is on every synced text column.
  size_t run = 0;
  for (size_t i = 0; i < value.size(); i++) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(value.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
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
      default:
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xf]);
    }
  }
  out.append(value.data() + run, value.size() - run);
  out.push_back('"');
}

std::string Base64Encode(std::string_view bytes) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(kAlphabet[(n >> 6) & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = uint8_t(bytes[i]) << 16;
    if (rest == 2) n |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

namespace {

constexpr int64_t kMicrosPerDay = 86400LL * 1000000LL;
// Days from 1970-01-01 to 2000-01-01.
constexpr int64_t kPgEpochDays = 10957;

// Civil date from days since 1970-01-01 (proleptic Gregorian, astronomical years).
void CivilFromDays(int64_t z, int64_t *year, unsigned *month, unsigned *day) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *day = doy - (153 * mp + 2) / 5 + 1;
  *month = mp < 10 ? mp + 3 : mp - 9;
  *year = static_cast<int64_t>(yoe) + era * 400 + (*month <= 2);
}

// `value` (>= 0) in decimal, zero-padded to at least `width` digits. No
// snprintf: timestamps are encoded for every op of a table that has them.
void AppendPadded(std::string &out, uint64_t value, int width) {
  char buf[24];
  char *end = buf + sizeof buf;
  char *p = end;
  do {
    *--p = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (end - p < width) *--p = '0';
  out.append(p, static_cast<size_t>(end - p));
}

void AppendDays(std::string &out, int64_t days_since_2000) {
  int64_t year;
  unsigned month, day;
  CivilFromDays(days_since_2000 + kPgEpochDays, &year, &month, &day);
  // ISO 8601: four-digit years; others expanded, with a sign (%+05lld).
  if (year >= 0 && year <= 9999) {
    AppendPadded(out, static_cast<uint64_t>(year), 4);
  } else {
    out.push_back(year < 0 ? '-' : '+');
    AppendPadded(out, year < 0 ? 0 - static_cast<uint64_t>(year) : static_cast<uint64_t>(year), 4);
  }
  out.push_back('-');
  AppendPadded(out, month, 2);
  out.push_back('-');
  AppendPadded(out, day, 2);
}

}  // namespace

void AppendIsoDate(std::string &out, int32_t days_since_2000) { AppendDays(out, days_since_2000); }

void AppendIsoTime(std::string &out, int64_t micros) {
  const int64_t secs = micros / 1000000;
  int64_t frac = micros % 1000000;
  AppendPadded(out, static_cast<uint64_t>(secs / 3600), 2);
  out.push_back(':');
  AppendPadded(out, static_cast<uint64_t>(secs / 60 % 60), 2);
  out.push_back(':');
  AppendPadded(out, static_cast<uint64_t>(secs % 60), 2);
  if (frac != 0) {
    // Six digits, less the trailing zeros.
    int width = 6;
    while (frac % 10 == 0) {
      frac /= 10;
      width--;
    }
    out.push_back('.');
    AppendPadded(out, static_cast<uint64_t>(frac), width);
  }
}

void AppendIsoTimestamp(std::string &out, int64_t micros_since_2000, bool utc) {
  int64_t days = micros_since_2000 / kMicrosPerDay;
  int64_t rest = micros_since_2000 % kMicrosPerDay;
  if (rest < 0) {
    rest += kMicrosPerDay;
    days -= 1;
  }
  AppendDays(out, days);
  out.push_back('T');
  AppendIsoTime(out, rest);
  if (utc) out.push_back('Z');
}

}  // namespace syncline
