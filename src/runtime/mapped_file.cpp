#include "runtime/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "ckks/byte_stream.h"
#include "ckks/checksum.h"

namespace pfhe::runtime {

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ckks::SerializationError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ckks::SerializationError(path + " is not a regular file");
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw ckks::SerializationError("cannot map " + path + ": " + std::strerror(errno));
    }
    ::madvise(p, size_, MADV_SEQUENTIAL);  // decoding reads front to back
    data_ = static_cast<const std::uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid
  try {
    content_ = ckks::verify_trailer({data_, size_}, path, this);
  } catch (...) {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    throw;
  }
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
