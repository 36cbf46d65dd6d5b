#include "ring/poly.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace pfhe::ring {

namespace {
struct PoolState {
  std::mutex mutex;
  std::map<std::size_t, std::vector<std::uint64_t*>> free_lists;  // by capacity
  std::size_t cached_words = 0;
};
// Beyond this many cached words (2 GiB) buffers go back to the system allocator.
constexpr std::size_t kMaxCachedWords = std::size_t{1} << 28;

PoolState& pool() {
  static PoolState* state = new PoolState;  // never destroyed: usable during static teardown
  return *state;
}
// Large buffers ask for transparent huge pages over the 2 MiB blocks that lie wholly
// inside them (the ends keep small pages: no memory is added and the allocator's layout
// is unchanged): one page fault per 2 MiB instead of per 4 KiB. Measured on a backbone
// lane group (pfhe_backbone_bench, THP in madvise mode): system time of the run 3.1 ->
// 1.7-1.9 s, 6.9 of its 12.5 GB in huge pages; the wall-clock gain (~2 %) is within this
// machine's run-to-run noise, and microbenchmarks with warm buffers show none.
constexpr std::uintptr_t kHugePage = std::uintptr_t{1} << 21;

std::uint64_t* allocate(std::size_t bytes) {
  bytes = (bytes + 63) / 64 * 64;
  void* ptr = std::aligned_alloc(64, bytes);
  if (!ptr) throw std::bad_alloc();
  const auto begin = (reinterpret_cast<std::uintptr_t>(ptr) + kHugePage - 1) & ~(kHugePage - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(ptr) + bytes) & ~(kHugePage - 1);
  // Advice only: without huge pages (or with THP off) the buffer keeps small pages, so the
  // result is not checked.
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  return static_cast<std::uint64_t*>(ptr);
}
}  // namespace

void return_freed_memory() {
  BufferPool::trim();
  return_free_heap();
}

void return_free_heap() { ::malloc_trim(0); }

void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

std::uint64_t* BufferPool::acquire(std::size_t words, std::size_t& capacity) {
  capacity = words;
  if (words == 0) return nullptr;
  std::vector<std::uint64_t*> stale;
  {
    PoolState& p = pool();
    std::lock_guard lock(p.mutex);
    const std::size_t largest_reused = words + words / 2;
    for (auto it = p.free_lists.lower_bound(words); it != p.free_lists.end() && it->first <= largest_reused; ++it) {
      if (it->second.empty()) continue;
      std::uint64_t* ptr = it->second.back();
      it->second.pop_back();
      capacity = it->first;
      p.cached_words -= capacity;
      return ptr;
    }
    // A miss while larger buffers sit unused: evaluation has moved down the levels and
    // those sizes will not be asked for again soon. Handing them back to the allocator
    // lets it carve this buffer out of pages that are already resident; allocating next
    // to them instead faulted in fresh pages (measured: ~80,000 page faults, 0.5 s, at
    // one level step of a backbone) while the stale buffers kept their memory.
    for (auto it = p.free_lists.upper_bound(largest_reused); it != p.free_lists.end(); ++it) {
      p.cached_words -= it->first * it->second.size();
      stale.insert(stale.end(), it->second.begin(), it->second.end());
      it->second.clear();
    }
  }
  for (std::uint64_t* ptr : stale) std::free(ptr);
  return allocate(words * sizeof(std::uint64_t));
}

void BufferPool::release(std::uint64_t* ptr, std::size_t words) {
  if (!ptr) return;
  PoolState& p = pool();
  {
    std::lock_guard lock(p.mutex);
    if (p.cached_words + words <= kMaxCachedWords) {
      p.free_lists[words].push_back(ptr);
      p.cached_words += words;
      return;
    }
  }
  std::free(ptr);
}

void BufferPool::trim() {
  PoolState& p = pool();
  std::lock_guard lock(p.mutex);
  for (auto& [words, list] : p.free_lists)
    for (std::uint64_t* ptr : list) std::free(ptr);
  p.free_lists.clear();
  p.cached_words = 0;
}

Poly::Poly(std::size_t n, std::size_t limbs, bool ntt_form)
    : n_(n), limbs_(limbs), ntt_form_(ntt_form) {
  data_ = BufferPool::acquire(n * limbs, capacity_);
  set_zero();
}

Poly Poly::uninitialized(std::size_t n, std::size_t limbs, bool ntt_form) {
  Poly p;
  p.n_ = n;
  p.limbs_ = limbs;
  p.ntt_form_ = ntt_form;
  p.data_ = BufferPool::acquire(n * limbs, p.capacity_);
  return p;
}

Poly Poly::borrowed(const std::uint64_t* words, std::size_t n, std::size_t limbs, bool ntt_form) {
  Poly p;
  p.n_ = n;
  p.limbs_ = limbs;
  p.ntt_form_ = ntt_form;
  p.data_ = const_cast<std::uint64_t*>(words);  // read only: see the header
  return p;
}

Poly::Poly(const Poly& other) : n_(other.n_), limbs_(other.limbs_), ntt_form_(other.ntt_form_) {
  data_ = BufferPool::acquire(n_ * limbs_, capacity_);
  if (capacity_) std::memcpy(data_, other.data_, byte_size());
}

Poly::Poly(Poly&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      n_(std::exchange(other.n_, 0)),
      limbs_(std::exchange(other.limbs_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      ntt_form_(other.ntt_form_) {}

Poly& Poly::operator=(const Poly& other) {
  if (this == &other) return *this;
  const std::size_t needed = other.n_ * other.limbs_;
  if (capacity_ < needed || capacity_ > needed + needed / 2) {
    release();
    data_ = BufferPool::acquire(needed, capacity_);
  }
  n_ = other.n_;
  limbs_ = other.limbs_;
  ntt_form_ = other.ntt_form_;
  if (capacity_) std::memcpy(data_, other.data_, byte_size());
  return *this;
}

Poly& Poly::operator=(Poly&& other) noexcept {
  if (this == &other) return *this;
  release();
  data_ = std::exchange(other.data_, nullptr);
  n_ = std::exchange(other.n_, 0);
  limbs_ = std::exchange(other.limbs_, 0);
  capacity_ = std::exchange(other.capacity_, 0);
  ntt_form_ = other.ntt_form_;
  return *this;
}

Poly::~Poly() { release(); }

void Poly::release() {
  if (capacity_ != 0) BufferPool::release(data_, capacity_);  // a borrowed poly's words are not the pool's
  data_ = nullptr;
  capacity_ = 0;
}

void Poly::truncate(std::size_t limbs) {
  if (limbs < limbs_) limbs_ = limbs;  // the buffer keeps its capacity for the pool
}

void Poly::set_zero() {
  if (data_) std::memset(data_, 0, byte_size());
}

}  // namespace pfhe::ring
