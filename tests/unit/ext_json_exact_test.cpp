// Unit tests for JSON whose numbers keep their exact text (json_exact.hpp): what a client
// writes into a numeric or jsonb column must arrive digit for digit.
#include <gtest/gtest.h>

#include "json_exact.hpp"

namespace syncline {
namespace {

using json = nlohmann::json;

std::string RoundTrip(std::string_view text) {
  json value = ParseJsonExact(text);
  EXPECT_FALSE(value.is_discarded()) << text;
  return DumpJsonExact(value);
}

TEST(JsonExact, NumbersKeepTheirText) {
  // What nlohmann::json alone turns into 12345678901234568, 1.1, 1.2345678901234568e+29.
  EXPECT_EQ(RoundTrip("12345678901234567.891"), "12345678901234567.891");
  EXPECT_EQ(RoundTrip("1.10"), "1.10");
  EXPECT_EQ(RoundTrip("123456789012345678901234567890"), "123456789012345678901234567890");
  EXPECT_EQ(RoundTrip("-0.000000000000000000001"), "-0.000000000000000000001");
  EXPECT_EQ(RoundTrip("1E+5"), "1E+5");
  EXPECT_EQ(RoundTrip(R"({"a":[1.10,{"b":2.50}],"c":-3})"), R"({"a":[1.10,{"b":2.50}],"c":-3})");
}

TEST(JsonExact, IntegersStayNumbers) {
  json value = ParseJsonExact(R"({"i": -9223372036854775808, "u": 18446744073709551615})");
  ASSERT_FALSE(value.is_discarded());
  EXPECT_TRUE(value["i"].is_number_integer());
  EXPECT_EQ(value["i"].get<int64_t>(), INT64_MIN);
  EXPECT_TRUE(value["u"].is_number_unsigned());
  EXPECT_EQ(DumpJsonExact(value), R"({"i":-9223372036854775808,"u":18446744073709551615})");
}

TEST(JsonExact, KeptNumbersAreMarkedStringsNoParsedStringCanBe) {
  json value = ParseJsonExact(R"([2.5, "2.5", "\u00ff\u00fe2.5"])");
  ASSERT_FALSE(value.is_discarded());
  EXPECT_EQ(ExactNumberText(value[0]), "2.5");
  EXPECT_EQ(ExactNumberText(value[1]), "");
  EXPECT_EQ(ExactNumberText(value[2]), "");  // U+00FF U+00FE is UTF-8 C3 BF C3 BE, not FF FE
  EXPECT_EQ(DumpJsonExact(value), "[2.5,\"2.5\",\"\u00ff\u00fe2.5\"]");
  // Bytes FF FE are not UTF-8: the parser refuses them in a string.
  EXPECT_TRUE(ParseJsonExact("[\"\xFF\xFE"
                             "2.5\"]")
                  .is_discarded());
}

TEST(JsonExact, DocumentsAsNlohmannBuildsThem) {
  std::string text =
      R"({"b": [true, false, null, "x\n\"y"], "a": {"z": 1, "y": {}}, "a2": [], "k": 1, "k": 2})";
  json exact = ParseJsonExact(text);
  ASSERT_FALSE(exact.is_discarded());
  EXPECT_EQ(exact, json::parse(text));
  EXPECT_EQ(DumpJsonExact(exact), json::parse(text).dump());
}

TEST(JsonExact, StringsEscapedAsNlohmannEscapesThem) {
  std::string text =
      "quote\" backslash\\ nl\n cr\r tab\t bs\b ff\f ctl\x01\x1f del\x7f \u00e9\u20ac";
  json value = {{"k\"\n", text}, {"plain", "abc"}, {"", ""}};
  EXPECT_EQ(DumpJsonExact(value), value.dump());
}

TEST(JsonExact, RefusesWhatIsNotOneJsonValue) {
  for (const char *bad : {"", "{", "[1,]", "{\"a\" 1}", "1 2", "nul", "\"abc", "01", "1.", ".5"})
    EXPECT_TRUE(ParseJsonExact(bad).is_discarded()) << bad;
  // nlohmann's parser still refuses a number past a double's range, exact text or not.
  EXPECT_TRUE(ParseJsonExact("1e400").is_discarded());
}

}  // namespace
}  // namespace syncline
