#include "ring/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>

namespace pfhe::ring {

void sample_uniform(Prng& prng, const Ring& ring, Poly& out) {
  // Reads the stream in blocks yet consumes it word by word, exactly as one draw per
  // element (and one more per rejection) would: a block never holds more words than
  // elements are left, so the stream position afterwards is the same and expanding a
  // stored seed gives the same polynomial (seeded keys and ciphertexts depend on it).
  constexpr std::size_t kBlock = 4096;
  std::array<u64, kBlock> block;
  for (std::size_t i = 0; i < out.limbs(); ++i) {
    const u64 q = ring.modulus(i).value();
    const int bits = ring.modulus(i).bits();
    const u64 mask = bits == 64 ? ~u64{0} : (u64{1} << bits) - 1;
    u64* x = out.limb(i);
    std::size_t j = 0, used = 0, have = 0;
    while (j < ring.n()) {
      if (used == have) {
        have = std::min(kBlock, ring.n() - j);
        prng.fill(reinterpret_cast<std::uint8_t*>(block.data()), have * sizeof(u64));
        used = 0;
      }
      const u64 v = block[used++] & mask;
      if (v < q) x[j++] = v;  // a rejected word is replaced by the next one: exactly uniform
    }
  }
}

std::vector<std::int64_t> sample_ternary_uniform(Prng& prng, std::size_t n) {
  std::vector<std::int64_t> s(n);
  for (std::size_t j = 0; j < n; ++j) {
    std::uint8_t b;
    do { prng.fill(&b, 1); } while (b >= 255);  // 255 = 3 * 85: unbiased mod 3
    s[j] = static_cast<std::int64_t>(b % 3) - 1;
  }
  return s;
}

std::vector<std::int64_t> sample_ternary_hamming(Prng& prng, std::size_t n, std::size_t h) {
  if (h == 0 || h > n) throw std::invalid_argument("Hamming weight must be in [1, N]");
  std::vector<std::int64_t> s(n, 0);
  // Partial Fisher-Yates over positions: the first h of a random permutation.
  std::vector<std::size_t> pos(n);
  for (std::size_t j = 0; j < n; ++j) pos[j] = j;
  for (std::size_t k = 0; k < h; ++k) {
    const std::size_t range = n - k;
    const u64 limit = ~u64{0} - (~u64{0} % range);
    u64 r;
    do { r = prng.next_u64(); } while (r >= limit);
    std::swap(pos[k], pos[k + r % range]);
    s[pos[k]] = (prng.next_u64() & 1) ? 1 : -1;
  }
  return s;
}

namespace {
// cdf[k] = floor(2^64 * P(X <= k - kErrorBound)) for the discretised Gaussian.
const std::array<u64, 2 * kErrorBound + 1>& gaussian_cdf() {
  static const auto table = [] {
    std::array<long double, 2 * kErrorBound + 1> w{};
    long double total = 0;
    for (int k = -kErrorBound; k <= kErrorBound; ++k) {
      w[k + kErrorBound] = std::exp(-static_cast<long double>(k * k) /
                                    (2.0L * kErrorStdDev * kErrorStdDev));
      total += w[k + kErrorBound];
    }
    std::array<u64, 2 * kErrorBound + 1> cdf{};
    long double acc = 0;
    for (std::size_t i = 0; i < cdf.size(); ++i) {
      acc += w[i] / total;
      const long double scaled = acc * 18446744073709551616.0L;
      cdf[i] = scaled >= 18446744073709551615.0L ? ~u64{0} : static_cast<u64>(scaled);
    }
    cdf.back() = ~u64{0};
    return cdf;
  }();
  return table;
}
}  // namespace

std::vector<std::int64_t> sample_gaussian(Prng& prng, std::size_t n) {
  const auto& cdf = gaussian_cdf();
  std::vector<std::int64_t> e(n);
  for (std::size_t j = 0; j < n; ++j) {
    const u64 u = prng.next_u64();
    std::int64_t index = 0;
    for (u64 c : cdf) index += static_cast<std::int64_t>(u >= c);  // branch-free scan
    if (index > 2 * kErrorBound) index = 2 * kErrorBound;          // u == 2^64 - 1
    e[j] = index - kErrorBound;
  }
  return e;
}

void set_small(const Ring& ring, const std::vector<std::int64_t>& coeffs, Poly& out) {
  if (coeffs.size() != ring.n() || out.n() != ring.n())
    throw std::invalid_argument("set_small: size mismatch");
  for (std::size_t i = 0; i < out.limbs(); ++i) {
    const u64 q = ring.modulus(i).value();
    u64* x = out.limb(i);
    for (std::size_t j = 0; j < ring.n(); ++j) x[j] = from_signed(coeffs[j], q);
  }
  out.set_ntt_form(false);
}

}  // namespace pfhe::ring
