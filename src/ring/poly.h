// RNS polynomial storage: `limbs` residue polynomials of n coefficients each, stored
// contiguously limb-major in one 64-byte-aligned buffer taken from a size-keyed pool.
// Which primes the limbs belong to is decided by the owner (a Ring and a level).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

namespace pfhe::ring {

// Returns buffers of equal size to a free list so that the many temporaries of key
// switching do not hit the system allocator. Thread-safe.
class BufferPool {
 public:
  // A buffer of at least `words` words; `capacity` receives its true size. A cached buffer
  // up to 1.5x larger is reused when none of the exact size is free: evaluation walks
  // down the levels, so exact-size reuse alone keeps allocating fresh pages (measured:
  // ~10 % of a backbone's time in page clearing) while stale sizes fill the cache.
  static std::uint64_t* acquire(std::size_t words, std::size_t& capacity);
  static void release(std::uint64_t* p, std::size_t capacity);
  // Drops every cached buffer (e.g. before a fork or at the end of a benchmark).
  static void trim();
};

// Makes glibc keep freed blocks up to 256 MiB in its heap instead of returning them to the
// kernel: compiling and evaluating models allocate and free many 0.5-8 MB temporaries,
// and fresh pages cost a page fault plus zeroing each time (measured: a third of the
// compile time). Programs call it once at start; it changes process-wide malloc settings.
void keep_freed_memory_for_reuse();
// Hands the cached buffers (BufferPool) and glibc's free heap back to the kernel: before a
// fork, and after a large piece of work whose memory is not reused soon (a precision
// measurement's keys before the compile that follows).
void return_freed_memory();
// Hands glibc's free heap back to the kernel, keeping the BufferPool's buffers (they are
// reused at once): between the items of a long loop. Each item frees its temporaries in
// another order than it allocated them, so the free memory inside the arenas fragments and
// keeps growing (measured: stage 7 of the face-verification benchmark, 0.17 -> 2.05 GB of
// free heap in 9 minutes of CryptoFaceNet4 pairs, resident all along).
void return_free_heap();

class Poly {
 public:
  Poly() = default;
  Poly(std::size_t n, std::size_t limbs, bool ntt_form = true);  // zero-initialised
  // Contents unspecified: for outputs that are written in full before being read.
  static Poly uninitialized(std::size_t n, std::size_t limbs, bool ntt_form = true);
  // A view of `limbs` x `n` words owned elsewhere (a memory-mapped file, whose pages may
  // be read-only): never written, and its owner outlives it. Copies own their words.
  static Poly borrowed(const std::uint64_t* words, std::size_t n, std::size_t limbs, bool ntt_form = true);
  bool is_borrowed() const { return data_ != nullptr && capacity_ == 0; }
  Poly(const Poly& other);
  Poly(Poly&& other) noexcept;
  Poly& operator=(const Poly& other);
  Poly& operator=(Poly&& other) noexcept;
  ~Poly();

  std::size_t n() const { return n_; }
  std::size_t limbs() const { return limbs_; }
  bool empty() const { return limbs_ == 0; }
  bool ntt_form() const { return ntt_form_; }
  void set_ntt_form(bool v) { ntt_form_ = v; }

  std::uint64_t* limb(std::size_t i) { return data_ + i * n_; }
  const std::uint64_t* limb(std::size_t i) const { return data_ + i * n_; }
  std::span<std::uint64_t> words() { return {data_, n_ * limbs_}; }
  std::span<const std::uint64_t> words() const { return {data_, n_ * limbs_}; }

  // Keeps the first `limbs` limbs (dropping primes from the top of the chain).
  void truncate(std::size_t limbs);
  void set_zero();
  std::size_t byte_size() const { return n_ * limbs_ * sizeof(std::uint64_t); }

 private:
  void release();
  std::uint64_t* data_ = nullptr;
  std::size_t n_ = 0, limbs_ = 0, capacity_ = 0;  // capacity 0 with data: borrowed
  bool ntt_form_ = true;
};

}  // namespace pfhe::ring
