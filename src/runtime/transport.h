// Framed messages over a stream socket or pipe, as the fork pool exchanges them:
// "PFTK", task index, status (0 ok, 1 error message), the sender's task and
// serialization seconds, payload length, payload (a serialized ciphertext or an error
// text), then the checksum trailer of ckks/checksum.h over all of it. Sends never raise SIGPIPE; a peer that vanished shows up as false / an error.
#pragma once
#include <cstdint>
#include <string>

#include "ckks/byte_stream.h"

namespace pfhe::runtime {

struct Frame {
  std::uint64_t task = 0;
  std::uint8_t status = 0;
  double task_seconds = 0, transfer_seconds = 0;
  ckks::Bytes payload;
};

// Throws std::runtime_error when the peer is gone or the stream is broken.
void send_frame(int fd, const Frame& frame);
// false on a clean end of stream before the first byte; throws on a truncated or
// malformed frame.
bool receive_frame(int fd, Frame& frame, std::size_t max_payload);

}  // namespace pfhe::runtime
