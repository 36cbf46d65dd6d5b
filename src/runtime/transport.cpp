#include "runtime/transport.h"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "ckks/checksum.h"

namespace pfhe::runtime {

namespace {

constexpr char kMagic[4] = {'P', 'F', 'T', 'K'};
constexpr std::size_t kHeader = 4 + 8 + 1 + 8 + 8 + 8;

void write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    // send() with MSG_NOSIGNAL on sockets; write() on anything else (pipes).
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == ENOTSOCK) k = ::write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) throw std::runtime_error(std::string("transport: peer is gone (") + std::strerror(errno) + ")");
    p += k;
    n -= static_cast<std::size_t>(k);
  }
}

// Bytes read before end of stream.
std::size_t read_all(int fd, std::uint8_t* p, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t k = ::read(fd, p + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) throw std::runtime_error(std::string("transport: read failed (") + std::strerror(errno) + ")");
    if (k == 0) break;
    got += static_cast<std::size_t>(k);
  }
  return got;
}

}  // namespace

void send_frame(int fd, const Frame& frame) {
  ckks::ByteWriter w;
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(kMagic), 4);
  w.put<std::uint64_t>(frame.task);
  w.put<std::uint8_t>(frame.status);
  w.put<double>(frame.task_seconds);
  w.put<double>(frame.transfer_seconds);
  w.put<std::uint64_t>(frame.payload.size());
  ckks::Checksum sum;
  sum.update(w.bytes());
  sum.update(frame.payload);
  const auto trailer = ckks::make_trailer(sum.digest());
  write_all(fd, w.bytes().data(), w.bytes().size());
  write_all(fd, frame.payload.data(), frame.payload.size());
  write_all(fd, trailer.data(), trailer.size());
}

bool receive_frame(int fd, Frame& frame, std::size_t max_payload) {
  std::uint8_t header[kHeader];
  const std::size_t got = read_all(fd, header, kHeader);
  if (got == 0) return false;
  if (got < kHeader) throw std::runtime_error("transport: stream ended inside a frame header");
  ckks::ByteReader r({header, kHeader});
  char magic[4];
  r.get_bytes(reinterpret_cast<std::uint8_t*>(magic), 4, "frame");
  if (std::memcmp(magic, kMagic, 4) != 0) throw std::runtime_error("transport: bad frame magic");
  frame.task = r.get<std::uint64_t>("frame");
  frame.status = r.get<std::uint8_t>("frame");
  frame.task_seconds = r.get<double>("frame");
  frame.transfer_seconds = r.get<double>("frame");
  const auto length = r.get<std::uint64_t>("frame");
  if (frame.status > 1 || length > max_payload) throw std::runtime_error("transport: malformed frame header");
  frame.payload.resize(length);
  std::array<std::uint8_t, ckks::kTrailerSize> trailer{};
  if (read_all(fd, frame.payload.data(), length) != length || read_all(fd, trailer.data(), trailer.size()) != trailer.size())
    throw std::runtime_error("transport: stream ended inside a frame");
  ckks::Checksum sum;
  sum.update({header, kHeader});
  sum.update(frame.payload);
  try {
    ckks::check_trailer(trailer, sum.digest(), "transport frame of task " + std::to_string(frame.task));
  } catch (const ckks::SerializationError& e) {
    throw std::runtime_error(e.what());
  }
  return true;
}

}  // namespace pfhe::runtime
