// Little-endian byte streams with bounds checks, shared by every pfhe binary format
// (docs/FORMAT.md, the compiled model file). Reading past the end, or polynomials with
// wrong shapes or unreduced coefficients, raise SerializationError naming `what`.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ckks/keys.h"
#include "ring/ring.h"

namespace pfhe::ckks {

class SerializationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using Bytes = std::vector<std::uint8_t>;

// What keeps bytes that loaded objects use in place alive (a file mapping, or bytes held in
// memory). release() says a range has been read and is not needed again soon: a file
// mapping drops those pages from the process (they stay in the page cache and fault back
// in if read again), so that data used once per inference (just-in-time diagonals) is not
// resident all at once; bytes held in memory are kept (the default). release() may be
// called from several threads at once (keys are decoded in parallel).
class Backing {
 public:
  virtual ~Backing() = default;
  virtual void release(std::span<const std::uint8_t> used) const { (void)used; }
};

// Bytes held in memory as a backing (tests, the fuzzer, callers without a file).
struct HeldBytes final : Backing {
  explicit HeldBytes(Bytes b) : bytes(std::move(b)) {}
  Bytes bytes;
};

class ByteWriter {
 public:
  using Sink = std::function<void(std::span<const std::uint8_t>)>;
  ByteWriter() = default;
  // A streaming writer: its bytes go to `sink` in pieces of about `piece` bytes (checked
  // after each polynomial or blob, the large writes), and the rest on flush(), so a
  // multi-GB output (a compiled lane group) is never one buffer. `sink` must outlive the
  // writer (held by pointer: a std::function member makes GCC 12 report false
  // -Wstringop-overflow on every vector insert here).
  explicit ByteWriter(const Sink& sink, std::size_t piece = std::size_t{64} << 20) : sink_(&sink), piece_(piece) {}

  // Room for `bytes` more without reallocating (a writer whose final size is known).
  void reserve(std::size_t bytes) { out_.reserve(out_.size() + bytes); }

  template <typename T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void put_bytes(const std::uint8_t* p, std::size_t n) { out_.insert(out_.end(), p, p + n); }
  // A length-prefixed nested object (u64 size, then the bytes).
  void put_blob(std::span<const std::uint8_t> b) {
    put<std::uint64_t>(b.size());
    put_bytes(b.data(), b.size());
    flush_full_piece();
  }
  void put_poly(const ring::Poly& p) {
    put<std::uint32_t>(static_cast<std::uint32_t>(p.limbs()));
    put_bytes(reinterpret_cast<const std::uint8_t*>(p.words().data()), p.byte_size());
    flush_full_piece();
  }
  void put_qp(const QPPoly& p) {
    put_poly(p.q);
    put_poly(p.p);
  }
  // Zero bytes up to a multiple of `alignment` (relative to the start of this writer).
  void align(std::size_t alignment) {
    while (size() % alignment != 0) put<std::uint8_t>(0);
  }
  // Grows capacity ahead of large writes (avoids repeated reallocation of big outputs); a
  // streaming writer never holds more than about one piece.
  void reserve_more(std::size_t n) { out_.reserve(out_.size() + (sink_ ? std::min(n, piece_) : n)); }
  std::size_t size() const { return flushed_ + out_.size(); }  // bytes written so far
  // Everything written, for a writer without a sink.
  Bytes& bytes() {
    if (sink_) throw std::logic_error("ByteWriter::bytes: a streaming writer hands its bytes to its sink");
    return out_;
  }
  // Hands what is buffered to the sink (streaming writers; call once the object is complete).
  void flush() {
    if (!sink_ || out_.empty()) return;
    (*sink_)(out_);
    flushed_ += out_.size();
    out_.clear();
  }

 private:
  void flush_full_piece() {
    if (sink_ && out_.size() >= piece_) flush();
  }

  Bytes out_;
  const Sink* sink_ = nullptr;
  std::size_t piece_ = 0, flushed_ = 0;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::uint8_t> in) : in_(in) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void get_bytes(std::uint8_t* out, std::size_t n, const char* what) {
    need(n, what);
    std::memcpy(out, in_.data() + pos_, n);
    pos_ += n;
  }
  // Skips the zero padding ByteWriter::align wrote (anything else is corrupt input).
  void align(std::size_t alignment, const char* what) {
    while (pos_ % alignment != 0) {
      if (get<std::uint8_t>(what) != 0) throw SerializationError(std::string(what) + ": non-zero padding");
    }
  }
  // The next n bytes in place (no copy); they live as long as the reader's input.
  std::span<const std::uint8_t> get_view(std::size_t n, const char* what) {
    need(n, what);
    const auto b = in_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  std::span<const std::uint8_t> get_blob(const char* what) {
    return get_view(get<std::uint64_t>(what), what);
  }
  // A count that must not exceed `limit` (guards allocations driven by input).
  std::size_t get_count(const char* what, std::size_t limit) {
    const auto n = get<std::uint64_t>(what);
    if (n > limit) throw SerializationError(std::string(what) + ": count " + std::to_string(n) + " out of range");
    return n;
  }
  // A polynomial over `ring` with exactly `limbs` limbs (NTT form), every coefficient checked.
  ring::Poly get_poly(const ring::Ring& ring, std::size_t limbs, const char* what) {
    const auto stored = get<std::uint32_t>(what);
    if (stored != limbs)
      throw SerializationError(std::string(what) + ": " + std::to_string(stored) + " limbs stored, " +
                               std::to_string(limbs) + " expected");
    ring::Poly p = ring.make_output(limbs);
    get_bytes(reinterpret_cast<std::uint8_t*>(p.words().data()), p.byte_size(), what);
    if (!ring.is_reduced(p))
      throw SerializationError(std::string(what) + ": a coefficient is not reduced modulo its prime");
    return p;
  }
  // A 4-character magic and a u32 version of a file kind (`what`: "bundle", ...).
  void expect_magic_and_version(const char (&magic)[4], std::uint32_t version, const char* what) {
    char got[4];
    get_bytes(reinterpret_cast<std::uint8_t*>(got), 4, what);
    if (std::memcmp(got, magic, 4) != 0) throw SerializationError(std::string("not a pfhe ") + what + " (bad magic)");
    const auto v = get<std::uint32_t>(what);
    if (v != version) throw SerializationError("unsupported " + std::string(what) + " version " + std::to_string(v));
  }
  // Where reading has got to (the next unread byte of the input).
  const std::uint8_t* position() const { return in_.data() + pos_; }
  bool at_end() const { return pos_ == in_.size(); }
  void expect_end(const char* what) const {
    if (pos_ != in_.size())
      throw SerializationError(std::string(what) + ": " + std::to_string(in_.size() - pos_) + " trailing bytes");
  }

 private:
  void need(std::size_t n, const char* what) const {
    if (in_.size() - pos_ < n) throw SerializationError(std::string(what) + ": truncated input");
  }
  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
};

}  // namespace pfhe::ckks
