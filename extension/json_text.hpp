// JSON text helpers shared by the extension, the gateway and the client.
// No Postgres header here: this file is linked into the GoogleTest binary.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace syncline {

// Appends `value` as a JSON string literal (quotes included, RFC 8259 escapes).
void AppendJsonString(std::string &out, std::string_view value);

// Standard base64 (RFC 4648, with padding); bytea values are sent this way.
std::string Base64Encode(std::string_view bytes);

// ISO 8601 forms of Postgres' internal date/time values (days or microseconds
// since 2000-01-01), independent of the session's DateStyle and TimeZone.
// Fractional seconds are printed without trailing zeros.
void AppendIsoDate(std::string &out, int32_t days_since_2000);
void AppendIsoTime(std::string &out, int64_t micros_since_midnight);
// `utc` appends "Z" (timestamptz, always rendered in UTC).
void AppendIsoTimestamp(std::string &out, int64_t micros_since_2000, bool utc);

}  // namespace syncline
