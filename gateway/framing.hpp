// Protocol framing: reassembling websocket fragments under a size cap, and
// turning bytes into ClientMessage / ServerMessage into bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "proto/syncline.pb.h"

namespace syncline::gateway {

// Websocket close codes the gateway uses (documented in proto/README.md).
enum CloseCode : uint16_t {
  kCloseGoingAway = 1001,        // shutdown; reconnect after retry_after_ms
  kCloseUnsupportedData = 1003,  // text frame
  kCloseTooBig = 1009,           // message over --max-message-bytes
  kCloseInternal = 1011,
  kCloseTooManyConnections = 4029,  // over --max-connections; retry later
  kCloseProtocol = 4000,            // message before Hello, bad version
  kCloseUnauthenticated = 4001,     // token missing / forged / expired / refused
  kCloseTokenExpired = 4002,        // token expired while connected, no refresh
  kCloseSlowConsumer = 4008,        // fell too far behind
};

// Collects the fragments of one websocket message, refusing it as soon as it
// is known to exceed the cap (before any of it is parsed).
class FrameAssembler {
 public:
  enum class Status { kIncomplete, kComplete, kTooBig };

  explicit FrameAssembler(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Adds one received fragment. `remaining` is how many bytes of the current
  // frame the peer has announced but not yet delivered (0 if unknown).
  // On kComplete, message() holds the whole message until the next Add.
  Status Add(const void *data, size_t len, bool final_fragment, size_t remaining);

  const std::string &message() const { return message_; }
  size_t max_bytes() const { return max_bytes_; }
  void Reset();

 private:
  size_t max_bytes_;
  std::string message_;
  bool complete_ = false;
};

enum class DecodeStatus { kOk, kTooBig, kMalformed, kUnknownKind };

// Parses one client message; kUnknownKind when it parses but carries no kind
// this server knows (e.g. a newer client's message). Never throws.
DecodeStatus DecodeClientMessage(const std::string &bytes, size_t max_bytes,
                                 syncline::v1::ClientMessage *out);

// Human-readable text for a decode failure, for Error.message.
const char *DecodeStatusText(DecodeStatus status);

// Serializes a server message into a buffer that has `headroom` spare bytes in
// front (LWS_PRE for libwebsockets), so it can be written without a copy.
std::string EncodeWithHeadroom(const syncline::v1::ServerMessage &message, size_t headroom);

// Appends `payload` as one complete, unmasked binary websocket frame (RFC 6455
// 5.2, server to client). The live fan-out frames a change's messages once and
// sends the same bytes to every client holding it, in one write each.
void AppendBinaryFrame(std::string &out, const char *payload, size_t size);

// Builds an Error server message.
syncline::v1::ServerMessage MakeError(syncline::v1::Error::Code code, const std::string &text,
                                      bool retryable, uint32_t retry_after_ms = 0,
                                      uint64_t request_id = 0);

}  // namespace syncline::gateway
