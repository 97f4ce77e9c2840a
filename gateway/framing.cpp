#include "gateway/framing.hpp"

namespace syncline::gateway {

FrameAssembler::Status FrameAssembler::Add(const void *data, size_t len, bool final_fragment,
                                           size_t remaining) {
  if (complete_) Reset();
  if (message_.size() + len + remaining > max_bytes_) {
    Reset();
    return Status::kTooBig;
  }
  message_.append(static_cast<const char *>(data), len);
  if (!final_fragment || remaining > 0) return Status::kIncomplete;
  complete_ = true;
  return Status::kComplete;
}

void FrameAssembler::Reset() {
  std::string().swap(message_);  // release the memory of a big message
  complete_ = false;
}

DecodeStatus DecodeClientMessage(const std::string &bytes, size_t max_bytes,
                                 syncline::v1::ClientMessage *out) {
  if (bytes.size() > max_bytes) return DecodeStatus::kTooBig;
  if (!out->ParseFromString(bytes)) return DecodeStatus::kMalformed;
  if (out->kind_case() == syncline::v1::ClientMessage::KIND_NOT_SET)
    return DecodeStatus::kUnknownKind;
  return DecodeStatus::kOk;
}

const char *DecodeStatusText(DecodeStatus status) {
  switch (status) {
    case DecodeStatus::kOk:
      return "ok";
    case DecodeStatus::kTooBig:
      return "message exceeds the size limit";
    case DecodeStatus::kMalformed:
      return "message is not a valid syncline.v1.ClientMessage protobuf";
    case DecodeStatus::kUnknownKind:
      return "message kind is not known to this server (empty or newer ClientMessage)";
  }
  return "unknown";
}

std::string EncodeWithHeadroom(const syncline::v1::ServerMessage &message, size_t headroom) {
  size_t size = message.ByteSizeLong();
  std::string buffer(headroom + size, '\0');
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t *>(&buffer[headroom]));
  return buffer;
}

void AppendBinaryFrame(std::string &out, const char *payload, size_t size) {
  out.push_back(static_cast<char>(0x82));  // FIN, binary
  if (size < 126) {
    out.push_back(static_cast<char>(size));
  } else if (size <= 0xffff) {
    out.push_back(static_cast<char>(126));
    out.push_back(static_cast<char>(size >> 8));
    out.push_back(static_cast<char>(size & 0xff));
  } else {
    out.push_back(static_cast<char>(127));
    for (int shift = 56; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((static_cast<uint64_t>(size) >> shift) & 0xff));
  }
  out.append(payload, size);
}

syncline::v1::ServerMessage MakeError(syncline::v1::Error::Code code, const std::string &text,
                                      bool retryable, uint32_t retry_after_ms,
                                      uint64_t request_id) {
  syncline::v1::ServerMessage m;
  m.set_request_id(request_id);
  auto *e = m.mutable_error();
  e->set_code(code);
  e->set_message(text);
  e->set_retryable(retryable);
  e->set_retry_after_ms(retry_after_ms);
  return m;
}

}  // namespace syncline::gateway
