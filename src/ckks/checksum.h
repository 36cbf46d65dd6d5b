// Integrity of pfhe's files and messages: XXH3-64 (Debian's libxxhash) over the bytes,
// kept in a 16-byte trailer, the ASCII magic "PFHE-XH3" then the u64 digest
// (little-endian) of every byte before the trailer. Validation of a loaded object catches
// malformed input but not a flipped bit inside a key or a coefficient that is still below
// its prime; the checksum catches those, so corruption is a clear error instead of wrong
// numbers. XXH3 is not a MAC: it guards against accidents (disk, copy, transfer), not an
// attacker, who could recompute it (docs/FORMAT.md).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ckks/byte_stream.h"

namespace pfhe::ckks {

inline constexpr std::size_t kTrailerSize = 16;

// A running XXH3-64 over bytes given in pieces; digest() equals checksum() of their
// concatenation.
class Checksum {
 public:
  Checksum();
  ~Checksum();
  Checksum(const Checksum&) = delete;
  Checksum& operator=(const Checksum&) = delete;
  void update(std::span<const std::uint8_t> bytes);
  std::uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::uint64_t checksum(std::span<const std::uint8_t> bytes);
// A digest as 16 hex digits (error messages, text formats that carry a checksum).
std::string checksum_hex(std::uint64_t digest);

std::array<std::uint8_t, kTrailerSize> make_trailer(std::uint64_t digest);
void append_trailer(Bytes& bytes);

// The digest a trailer stores. Throws SerializationError naming `what` (a path, a message
// kind) when `trailer` is not one: the data is truncated, or was not written by a pfhe
// with checksums.
std::uint64_t trailer_digest(std::span<const std::uint8_t> trailer, const std::string& what);
// Checks a trailer read separately (a stream, a file read in pieces) against the digest of
// the bytes before it; a mismatch (corrupt data) throws SerializationError naming `what`.
void check_trailer(std::span<const std::uint8_t> trailer, std::uint64_t computed, const std::string& what);

// Checks the trailer at the end of `bytes` and returns the bytes before it (errors as
// above).
std::span<const std::uint8_t> verify_trailer(std::span<const std::uint8_t> bytes, const std::string& what);

}  // namespace pfhe::ckks
