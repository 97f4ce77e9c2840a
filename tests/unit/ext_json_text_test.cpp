// Unit tests for the JSON text helpers shared by extension, gateway and client.
#include <gtest/gtest.h>

#include "json_text.hpp"

namespace syncline {
namespace {

std::string Str(std::string_view in) {
  std::string out;
  AppendJsonString(out, in);
  return out;
}

TEST(JsonString, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(Str("plain"), "\"plain\"");
  EXPECT_EQ(Str("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(Str("l1\nl2\tx\r"), "\"l1\\nl2\\tx\\r\"");
  EXPECT_EQ(Str(std::string_view("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(Str(std::string_view("nul\0x", 5)), "\"nul\\u0000x\"");
}

TEST(JsonString, EscapesAtEitherEndAndBetweenRuns) {
  EXPECT_EQ(Str(""), "\"\"");
  EXPECT_EQ(Str("\"x"), "\"\\\"x\"");
  EXPECT_EQ(Str("x\\"), "\"x\\\\\"");
  EXPECT_EQ(Str("\n\n"), "\"\\n\\n\"");
  EXPECT_EQ(Str("ab\tcd\"ef\\gh\x02ij"), "\"ab\\tcd\\\"ef\\\\gh\\u0002ij\"");
  EXPECT_EQ(Str("\x7f~ "), "\"\x7f~ \"");  // DEL and the rest of ASCII need no escape
  std::string long_text(1000, 'a');
  long_text[500] = '"';
  EXPECT_EQ(Str(long_text), "\"" + std::string(500, 'a') + "\\\"" + std::string(499, 'a') + "\"");
}

TEST(JsonString, KeepsUtf8AsIs) { EXPECT_EQ(Str("Übung 💪"), "\"Übung 💪\""); }

TEST(Base64, MatchesRfc4648Vectors) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64Encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(std::string("\xff\x00\xfe", 3)), "/wD+");
}

std::string Date(int32_t days) {
  std::string out;
  AppendIsoDate(out, days);
  return out;
}

std::string Timestamp(int64_t micros, bool utc) {
  std::string out;
  AppendIsoTimestamp(out, micros, utc);
  return out;
}

TEST(IsoDates, CountsFrom2000) {
  EXPECT_EQ(Date(0), "2000-01-01");
  EXPECT_EQ(Date(59), "2000-02-29");  // leap year
  EXPECT_EQ(Date(366), "2001-01-01");
  EXPECT_EQ(Date(-1), "1999-12-31");
  EXPECT_EQ(Date(-10957), "1970-01-01");
  EXPECT_EQ(Date(8766), "2024-01-01");
}

TEST(IsoDates, ExpandedYearsOutsideFourDigits) {
  // Astronomical years (ISO 8601): 1 BC is year 0000, 2 BC is -0001.
  EXPECT_EQ(Date(-730120), "0000-12-31");
  EXPECT_EQ(Date(-730486), "-0001-12-31");
  EXPECT_EQ(Date(2922306), "+10001-01-01");
}

TEST(IsoTimestamps, FractionsWithoutTrailingZeros) {
  EXPECT_EQ(Timestamp(0, true), "2000-01-01T00:00:00Z");
  EXPECT_EQ(Timestamp(1500000, false), "2000-01-01T00:00:01.5");
  EXPECT_EQ(Timestamp(123456, true), "2000-01-01T00:00:00.123456Z");
  EXPECT_EQ(Timestamp(-1, true), "1999-12-31T23:59:59.999999Z");
  // 2024-01-02 01:04:05.123 UTC
  EXPECT_EQ(Timestamp((8767LL * 86400 + 3845) * 1000000 + 123000, true),
            "2024-01-02T01:04:05.123Z");
}

TEST(IsoTimes, HoursMinutesSeconds) {
  std::string out;
  AppendIsoTime(out, (13 * 3600 + 5 * 60 + 9) * 1000000LL + 10);
  EXPECT_EQ(out, "13:05:09.00001");
  out.clear();
  AppendIsoTime(out, 24 * 3600 * 1000000LL);
  EXPECT_EQ(out, "24:00:00");
  out.clear();
  AppendIsoTime(out, 9 * 1000000LL + 100000);
  EXPECT_EQ(out, "00:00:09.1");
}

}  // namespace
}  // namespace syncline
