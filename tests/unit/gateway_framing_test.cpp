// Protocol framing: fragment reassembly under a size cap, decoding of client
// messages (malformed, unknown kinds) and encoding with LWS_PRE headroom.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gateway/framing.hpp"

namespace {

using syncline::gateway::AppendBinaryFrame;
using syncline::gateway::DecodeClientMessage;
using syncline::gateway::DecodeStatus;
using syncline::gateway::EncodeWithHeadroom;
using syncline::gateway::FrameAssembler;
using syncline::gateway::MakeError;
namespace pb = syncline::v1;

TEST(FrameAssembler, JoinsFragmentsOfOneMessage) {
  FrameAssembler a(100);
  EXPECT_EQ(a.Add("abc", 3, false, 0), FrameAssembler::Status::kIncomplete);
  EXPECT_EQ(a.Add("def", 3, true, 0), FrameAssembler::Status::kComplete);
  EXPECT_EQ(a.message(), "abcdef");
  // The next message starts empty.
  EXPECT_EQ(a.Add("x", 1, true, 0), FrameAssembler::Status::kComplete);
  EXPECT_EQ(a.message(), "x");
}

TEST(FrameAssembler, WaitsForAnnouncedRemainderOfAFrame) {
  FrameAssembler a(100);
  // A final frame delivered in two pieces: lws reports what is still to come.
  EXPECT_EQ(a.Add("12345", 5, true, 5), FrameAssembler::Status::kIncomplete);
  EXPECT_EQ(a.Add("67890", 5, true, 0), FrameAssembler::Status::kComplete);
  EXPECT_EQ(a.message(), "1234567890");
}

TEST(FrameAssembler, AcceptsExactlyTheCap) {
  FrameAssembler a(10);
  std::string ten(10, 'z');
  EXPECT_EQ(a.Add(ten.data(), ten.size(), true, 0), FrameAssembler::Status::kComplete);
}

TEST(FrameAssembler, RefusesAsSoonAsTheAnnouncedLengthIsOverTheCap) {
  FrameAssembler a(10);
  // Only 4 bytes arrived, but the header announced 20 more: refuse now.
  EXPECT_EQ(a.Add("abcd", 4, true, 20), FrameAssembler::Status::kTooBig);
  EXPECT_TRUE(a.message().empty());
}

TEST(FrameAssembler, RefusesWhenFragmentsAddUpOverTheCap) {
  FrameAssembler a(10);
  std::string six(6, 'a');
  EXPECT_EQ(a.Add(six.data(), 6, false, 0), FrameAssembler::Status::kIncomplete);
  EXPECT_EQ(a.Add(six.data(), 6, false, 0), FrameAssembler::Status::kTooBig);
}

TEST(Decode, ParsesAHello) {
  pb::ClientMessage m;
  m.set_request_id(7);
  m.mutable_hello()->set_protocol_version(1);
  m.mutable_hello()->set_token("t");
  pb::ClientMessage out;
  ASSERT_EQ(DecodeClientMessage(m.SerializeAsString(), 1024, &out), DecodeStatus::kOk);
  EXPECT_EQ(out.request_id(), 7u);
  EXPECT_EQ(out.hello().token(), "t");
  EXPECT_TRUE(out.hello().has_token());
}

TEST(Decode, MalformedBytesAreReportedNotThrown) {
  pb::ClientMessage out;
  // Field 10 (hello) as length-delimited with a length running past the end.
  std::string bad = "\x52\x7f\x01";
  EXPECT_EQ(DecodeClientMessage(bad, 1024, &out), DecodeStatus::kMalformed);
  std::string garbage = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  EXPECT_EQ(DecodeClientMessage(garbage, 1024, &out), DecodeStatus::kMalformed);
}

TEST(Decode, EmptyOrUnknownKindIsUnknownKind) {
  pb::ClientMessage out;
  EXPECT_EQ(DecodeClientMessage("", 1024, &out), DecodeStatus::kUnknownKind);
  // Field 99 (a kind from a newer client), varint 1; only request_id is known.
  std::string newer = std::string("\x08\x05", 2) + std::string("\x98\x06\x01", 3);
  EXPECT_EQ(DecodeClientMessage(newer, 1024, &out), DecodeStatus::kUnknownKind);
  EXPECT_EQ(out.request_id(), 5u);
}

TEST(Decode, SizeIsCheckedBeforeParsing) {
  pb::ClientMessage m;
  m.mutable_hello()->set_token(std::string(2000, 'x'));
  pb::ClientMessage out;
  EXPECT_EQ(DecodeClientMessage(m.SerializeAsString(), 1000, &out), DecodeStatus::kTooBig);
}

TEST(Decode, UnknownFieldsInsideKnownMessagesAreKept) {
  pb::ClientMessage m;
  m.mutable_ping();
  std::string bytes = m.SerializeAsString();
  bytes += std::string("\xa0\x1f\x2a", 3);  // field 500, varint 42
  pb::ClientMessage out;
  ASSERT_EQ(DecodeClientMessage(bytes, 1024, &out), DecodeStatus::kOk);
  EXPECT_TRUE(out.has_ping());
  EXPECT_EQ(out.SerializeAsString().size(), bytes.size());  // round-trips the unknown field
}

TEST(Encode, LeavesHeadroomAndRoundTrips) {
  pb::ServerMessage m = MakeError(pb::Error::SLOW_CONSUMER, "behind", true, 1000, 9);
  std::string buf = EncodeWithHeadroom(m, 16);
  ASSERT_GT(buf.size(), 16u);
  EXPECT_EQ(buf.substr(0, 16), std::string(16, '\0'));
  pb::ServerMessage back;
  ASSERT_TRUE(back.ParseFromString(buf.substr(16)));
  EXPECT_EQ(back.request_id(), 9u);
  EXPECT_EQ(back.error().code(), pb::Error::SLOW_CONSUMER);
  EXPECT_TRUE(back.error().retryable());
  EXPECT_EQ(back.error().retry_after_ms(), 1000u);
}

TEST(Encode, BucketDataCarriesUnsignedChecksums) {
  pb::ServerMessage m;
  auto *op = m.mutable_bucket_data()->add_ops();
  op->set_checksum(4294967295u);
  op->set_op(pb::OplogEntry::PUT);
  pb::ServerMessage back;
  ASSERT_TRUE(back.ParseFromString(EncodeWithHeadroom(m, 0)));
  EXPECT_EQ(back.bucket_data().ops(0).checksum(), 4294967295u);
}

}  // namespace

// RFC 6455 5.2: 7-bit, 16-bit and 64-bit payload lengths, FIN + binary, no mask.
TEST(AppendBinaryFrame, UsesTheShortestLengthEncoding) {
  struct Case {
    size_t size;
    std::vector<uint8_t> header;
  };
  const Case cases[] = {
      {0, {0x82, 0}},
      {125, {0x82, 125}},
      {126, {0x82, 126, 0x00, 0x7e}},
      {65535, {0x82, 126, 0xff, 0xff}},
      {65536, {0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
  };
  for (const Case &c : cases) {
    std::string payload(c.size, 'p');
    std::string out = "x";  // appends after what is there
    AppendBinaryFrame(out, payload.data(), payload.size());
    ASSERT_EQ(out.size(), 1 + c.header.size() + c.size) << c.size;
    EXPECT_EQ(out[0], 'x');
    for (size_t i = 0; i < c.header.size(); i++)
      EXPECT_EQ(static_cast<uint8_t>(out[1 + i]), c.header[i]) << c.size << " byte " << i;
    EXPECT_EQ(out.substr(1 + c.header.size()), payload) << c.size;
  }
}
