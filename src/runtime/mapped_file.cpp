#include "runtime/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/checksum.h"

namespace pfhe::runtime {

namespace {

// Checks the checksum trailer of the open file `fd` of `size` bytes, reading it with
// pread() in pieces: on this machine that streams a cached file at 6-7 GB/s, where
// faulting the same pages in through the mapping ran at 1.6 GB/s (docs/BENCHMARKS.md), and
// it leaves the mapping untouched (nothing resident before decoding).
void verify_file_checksum(int fd, std::size_t size, const std::string& path) {
  std::array<std::uint8_t, ckks::kTrailerSize> trailer{};
  if (size < trailer.size() || ::pread(fd, trailer.data(), trailer.size(), static_cast<off_t>(size - trailer.size())) !=
                                   static_cast<ssize_t>(trailer.size()))
    ckks::trailer_digest({}, path);  // throws: no trailer
  ckks::trailer_digest(trailer, path);  // refuses a file without one before hashing it
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<std::uint8_t> buffer(std::size_t{8} << 20);
  ckks::Checksum sum;
  for (std::size_t at = 0, content = size - trailer.size(); at < content;) {
    const ssize_t n = ::pread(fd, buffer.data(), std::min(buffer.size(), content - at), static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw ckks::SerializationError("cannot read " + path + (n < 0 ? std::string(": ") + std::strerror(errno) : ""));
    sum.update({buffer.data(), static_cast<std::size_t>(n)});
    at += static_cast<std::size_t>(n);
  }
  ckks::check_trailer(trailer, sum.digest(), path);
}

}  // namespace

MappedFile::MappedFile(const std::string& path)
    : MappedFile(path, [&path](int fd, std::size_t size) { verify_file_checksum(fd, size, path); }) {
  content_ = {data_, size_ - ckks::kTrailerSize};
  ::madvise(const_cast<std::uint8_t*>(data_), size_, MADV_SEQUENTIAL);  // decoding reads front to back
}

MappedFile::MappedFile(const std::string& path, const Verifier& verify) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ckks::SerializationError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ckks::SerializationError(path + " is not a regular file");
  }
  size_ = static_cast<std::size_t>(st.st_size);
  try {
    verify(fd, size_);
  } catch (...) {
    ::close(fd);
    throw;
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    ::close(fd);
    throw ckks::SerializationError("cannot map " + path + ": " + std::strerror(errno));
  }
  ::close(fd);  // the mapping stays valid
  data_ = static_cast<const std::uint8_t*>(p);
  content_ = {data_, size_};
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

void MappedFile::release(std::span<const std::uint8_t> used) const {
  if (used.data() < data_ || used.data() + used.size() > data_ + size_)
    throw std::logic_error("MappedFile::release: range outside the mapping");
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(used.data());
  const std::uintptr_t first = (begin + page - 1) / page * page, last = (begin + used.size()) / page * page;
  // Advice only: a failure leaves the pages resident, which is what happens without it.
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace pfhe::runtime
