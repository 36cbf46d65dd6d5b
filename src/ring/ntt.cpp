#include "ring/ntt.h"

#include <stdexcept>
#include <string>

#include "ring/kernels.h"
#include "ring/primes.h"

namespace pfhe::ring {

std::size_t bit_reverse(std::size_t x, int bits) {
  std::size_t r = 0;
  for (int i = 0; i < bits; ++i) { r = (r << 1) | (x & 1); x >>= 1; }
  return r;
}

NttTables::NttTables(std::size_t n, const Modulus& modulus) : n_(n), modulus_(modulus) {
  if (n < 16 || (n & (n - 1)) != 0)
    throw std::invalid_argument("NTT size must be a power of two >= 16, got " + std::to_string(n));
  log_n_ = __builtin_ctzll(n);
  const u64 q = modulus.value();
  psi_ = primitive_2n_root(q, n);
  const u64 psi_inv = inv_mod(psi_, modulus);
  root_powers_.resize(n);
  inv_root_powers_.resize(n);
  u64 pw = 1, ipw = 1;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t r = bit_reverse(k, log_n_);
    root_powers_[r] = pw;
    inv_root_powers_[r] = ipw;
    pw = mul_mod(pw, psi_, modulus);
    ipw = mul_mod(ipw, psi_inv, modulus);
  }
  root_powers_shoup_.resize(n);
  inv_root_powers_shoup_.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    root_powers_shoup_[k] = shoup(root_powers_[k], modulus);
    inv_root_powers_shoup_[k] = shoup(inv_root_powers_[k], modulus);
  }
  n_inv_ = inv_mod(n, modulus);
  n_inv_shoup_ = shoup(n_inv_, modulus);
  if (modulus.bits() > kIfmaMaxBits) return;

  // floor(w 2^52 / q) = floor(floor(w 2^64 / q) / 2^12): no second division.
  root_powers_shoup52_.resize(n);
  inv_root_powers_shoup52_.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    root_powers_shoup52_[k] = root_powers_shoup_[k] >> 12;
    inv_root_powers_shoup52_[k] = inv_root_powers_shoup_[k] >> 12;
  }
  n_inv_shoup52_ = n_inv_shoup_ >> 12;
}

namespace {
SimdPath supported(SimdPath path) {
  if (!cpu_supports(path))
    throw std::invalid_argument("SIMD path " + to_string(path) + " is not supported by this CPU");
  return path;
}
}  // namespace

void NttTables::forward(u64* a, SimdPath path) const {
  switch (supported(path)) {
    case SimdPath::kAvx512Ifma: detail::ntt_forward_avx512(*this, a); return;
    case SimdPath::kAvx2: detail::ntt_forward_avx2(*this, a); return;
    case SimdPath::kScalar: detail::ntt_forward_scalar(*this, a); return;
  }
}

void NttTables::forward_from_signed(const std::int64_t* x, int magnitude_bits, u64* out, SimdPath path) const {
  if (supported(path) == SimdPath::kAvx512Ifma && modulus_.ifma_eligible() && magnitude_bits <= 52 && n_ >= 64)
    return detail::ntt_forward_signed_ifma(*this, x, out);
  if (supported(path) == SimdPath::kAvx2 && modulus_.ifma_eligible() && magnitude_bits <= 52)
    return detail::ntt_forward_signed_avx2(*this, x, out);
  kernels::reduce_signed(x, magnitude_bits, out, n_, modulus_, path);
  forward(out, path);
}

void NttTables::inverse(u64* a, SimdPath path) const {
  switch (supported(path)) {
    case SimdPath::kAvx512Ifma: detail::ntt_inverse_avx512(*this, a); return;
    case SimdPath::kAvx2: detail::ntt_inverse_avx2(*this, a); return;
    case SimdPath::kScalar: detail::ntt_inverse_scalar(*this, a); return;
  }
}

namespace detail {

// Harvey forward butterflies for the stages with half-width t in [t_last, t_first]
// (powers of two, decreasing): X in [0, 4q) is brought to [0, 2q); outputs in [0, 4q).
void forward_stages_scalar(const NttTables& tab, u64* a, std::size_t t_first, std::size_t t_last) {
  const u64 q = tab.modulus().value(), two_q = 2 * q;
  const u64* w = tab.root_powers().data();
  const u64* ws = tab.root_powers_shoup().data();
  for (std::size_t t = t_first; t >= t_last; t >>= 1) {
    const std::size_t m = tab.n() / (2 * t);
    for (std::size_t i = 0; i < m; ++i) {
      const u64 wi = w[m + i], wsi = ws[m + i];
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; ++j) {
        u64 xv = x[j];
        xv = xv >= two_q ? xv - two_q : xv;
        const u64 tv = mul_shoup_lazy(y[j], wi, wsi, q);
        x[j] = xv + tv;
        y[j] = xv - tv + two_q;
      }
    }
  }
}

// Gentleman-Sande butterflies on values in [0, 2q) for half-widths t_first..t_last
// (increasing).
void inverse_stages_scalar(const NttTables& tab, u64* a, std::size_t t_first, std::size_t t_last) {
  const u64 q = tab.modulus().value(), two_q = 2 * q;
  const u64* w = tab.inv_root_powers().data();
  const u64* ws = tab.inv_root_powers_shoup().data();
  for (std::size_t t = t_first; t <= t_last; t <<= 1) {
    const std::size_t h = tab.n() / (2 * t);
    for (std::size_t i = 0; i < h; ++i) {
      const u64 wi = w[h + i], wsi = ws[h + i];
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; ++j) {
        const u64 xv = x[j], yv = y[j];
        const u64 s = xv + yv;
        x[j] = s >= two_q ? s - two_q : s;
        y[j] = mul_shoup_lazy(xv - yv + two_q, wi, wsi, q);
      }
    }
  }
}

void ntt_forward_scalar(const NttTables& tab, u64* a) {
  const u64 q = tab.modulus().value(), two_q = 2 * q;
  forward_stages_scalar(tab, a, tab.n() / 2, 1);
  for (std::size_t j = 0; j < tab.n(); ++j) {
    u64 v = a[j];
    v = v >= two_q ? v - two_q : v;
    a[j] = v >= q ? v - q : v;
  }
}

void ntt_inverse_scalar(const NttTables& tab, u64* a) {
  const u64 q = tab.modulus().value();
  inverse_stages_scalar(tab, a, 1, tab.n() / 2);
  const u64 ni = tab.n_inv(), nis = tab.n_inv_shoup();
  for (std::size_t j = 0; j < tab.n(); ++j) a[j] = mul_shoup(a[j], ni, nis, q);
}

}  // namespace detail
}  // namespace pfhe::ring
