#include "ckks/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

namespace pfhe::ckks {

namespace {

constexpr char kTrailerMagic[8] = {'P', 'F', 'H', 'E', '-', 'X', 'H', '3'};

}  // namespace

struct Checksum::State {
  XXH3_state_t* xxh = nullptr;
};

Checksum::Checksum() : state_(std::make_unique<State>()) {
  state_->xxh = XXH3_createState();
  if (!state_->xxh) throw std::bad_alloc();
  XXH3_64bits_reset(state_->xxh);
}

Checksum::~Checksum() { XXH3_freeState(state_->xxh); }

void Checksum::update(std::span<const std::uint8_t> bytes) { XXH3_64bits_update(state_->xxh, bytes.data(), bytes.size()); }

std::uint64_t Checksum::digest() const { return XXH3_64bits_digest(state_->xxh); }

std::uint64_t checksum(std::span<const std::uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

std::string checksum_hex(std::uint64_t digest) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(digest));
  return buf;
}

std::array<std::uint8_t, kTrailerSize> make_trailer(std::uint64_t digest) {
  std::array<std::uint8_t, kTrailerSize> t{};
  std::memcpy(t.data(), kTrailerMagic, 8);
  for (int i = 0; i < 8; ++i) t[8 + i] = static_cast<std::uint8_t>(digest >> (8 * i));
  return t;
}

void append_trailer(Bytes& bytes) {
  const auto t = make_trailer(checksum(bytes));
  bytes.insert(bytes.end(), t.begin(), t.end());
}

std::uint64_t trailer_digest(std::span<const std::uint8_t> trailer, const std::string& what) {
  if (trailer.size() != kTrailerSize || std::memcmp(trailer.data(), kTrailerMagic, 8) != 0)
    throw SerializationError(what + ": not a pfhe file, or truncated (no pfhe checksum at its end; files written "
                                    "by a pfhe before checksums must be made again)");
  std::uint64_t stored = 0;
  for (int i = 0; i < 8; ++i) stored |= std::uint64_t{trailer[8 + i]} << (8 * i);
  return stored;
}

void check_trailer(std::span<const std::uint8_t> trailer, std::uint64_t computed, const std::string& what) {
  const std::uint64_t stored = trailer_digest(trailer, what);
  if (computed != stored)
    throw SerializationError(what + ": checksum mismatch (stored " + checksum_hex(stored) + ", computed " + checksum_hex(computed) +
                             "): the data is corrupt");
}

std::span<const std::uint8_t> verify_trailer(std::span<const std::uint8_t> bytes, const std::string& what) {
  if (bytes.size() < kTrailerSize) trailer_digest({}, what);  // throws
  const auto content = bytes.first(bytes.size() - kTrailerSize);
  check_trailer(bytes.last(kTrailerSize), checksum(content), what);
  return content;
}

}  // namespace pfhe::ckks
