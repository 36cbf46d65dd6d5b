// A read-only memory mapping of a whole file. Loading the compiled model and the
// evaluation keys through it keeps the file's bytes in the page cache (shared by every
// process that maps the same file, and reclaimable) instead of a private copy next to the
// decoded objects, which would double the peak memory of loading. The file's checksum
// trailer (ckks/checksum.h) is verified once, before it is mapped (read in pieces, so the
// check makes nothing resident); bytes() is the content before the trailer.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "ckks/byte_stream.h"

namespace pfhe::runtime {

class MappedFile final : public ckks::Backing {
 public:
  explicit MappedFile(const std::string& path);  // throws ckks::SerializationError naming the path
  // A file whose format carries its own checks instead of the trailer (the key cache,
  // runtime/key_cache.h: sections with their own digests, verified in parallel):
  // `verify(fd, size)` runs on the open file before it is mapped and throws to refuse it;
  // bytes() is then the whole file, read in any order (no sequential read-ahead advice).
  using Verifier = std::function<void(int fd, std::size_t size)>;
  MappedFile(const std::string& path, const Verifier& verify);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::uint8_t> bytes() const { return content_; }
  // Drops this process's pages of a range that has been read and will not be read again
  // (the whole pages inside it; the file stays in the page cache): resident memory falls
  // while a large file is decoded. Reading the range again would fault it back in.
  void release(std::span<const std::uint8_t> used) const override;

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::span<const std::uint8_t> content_;
};

// Maps the file at `path` and decodes it with `decode(bytes, mapping)`, where `mapping`
// keeps the file mapped for as long as a decoded object holds it (objects that use the
// file's bytes in place); SerializationErrors come back prefixed with the path.
template <typename Decode>
auto load_mapped_in_place(const std::string& path, Decode&& decode) {
  const auto file = std::make_shared<const MappedFile>(path);  // its errors name the path
  try {
    return decode(file->bytes(), std::shared_ptr<const ckks::Backing>(file));
  } catch (const ckks::SerializationError& e) {
    throw ckks::SerializationError(path + ": " + e.what());
  }
}

// The same for decoders that copy what they keep: the file is unmapped afterwards.
template <typename Decode>
auto load_mapped(const std::string& path, Decode&& decode) {
  return load_mapped_in_place(path, [&](std::span<const std::uint8_t> bytes, const std::shared_ptr<const ckks::Backing>&) {
    return decode(bytes);
  });
}

}  // namespace pfhe::runtime
