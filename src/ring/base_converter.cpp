#include "ring/base_converter.h"

#include <stdexcept>

#include "ring/cpu.h"
#include "ring/kernels.h"

namespace pfhe::ring {

BaseConverter::BaseConverter(std::vector<Modulus> from, std::vector<Modulus> to)
    : from_(std::move(from)), to_(std::move(to)) {
  if (from_.empty() || to_.empty()) throw std::invalid_argument("BaseConverter: empty basis");
  const std::size_t nb = from_.size();
  hat_inv_.resize(nb);
  for (std::size_t i = 0; i < nb; ++i) {
    u64 hat = 1;  // (B / b_i) mod b_i
    for (std::size_t l = 0; l < nb; ++l)
      if (l != i) hat = mul_mod(hat, reduce64(from_[l].value(), from_[i]), from_[i]);
    hat_inv_[i] = inv_mod(hat, from_[i]);
  }
  hat_mod_to_.resize(to_.size() * nb);
  for (std::size_t k = 0; k < to_.size(); ++k)
    for (std::size_t i = 0; i < nb; ++i) {
      u64 hat = 1 % to_[k].value();
      for (std::size_t l = 0; l < nb; ++l)
        if (l != i) hat = mul_mod(hat, reduce64(from_[l].value(), to_[k]), to_[k]);
      hat_mod_to_[k * nb + i] = hat;
    }
  hat_mod_to_shoup_.resize(hat_mod_to_.size());
  for (std::size_t k = 0; k < to_.size(); ++k)
    for (std::size_t i = 0; i < nb; ++i) hat_mod_to_shoup_[k * nb + i] = shoup(hat_mod_to_[k * nb + i], to_[k]);
  for (const auto& c : to_) {
    u64 b = 1;
    for (const auto& f : from_) b = mul_mod(b, reduce64(f.value(), c), c);
    for (u64 u = 0; u <= nb; ++u) b_multiples_.push_back(mul_mod(u, b, c));
  }
  for (const auto& f : from_) inv_from_.push_back(1.0 / static_cast<double>(f.value()));
  // IFMA terms: y_i itself for a source prime below 2^50; for a larger one, y_i is split
  // into its low kSplitBits bits and the rest (weight * 2^kSplitBits), so that every lane
  // input stays below 2^52.
  for (std::size_t i = 0; i < nb; ++i) {
    if (from_[i].ifma_eligible()) {
      ifma_terms_.push_back({i, false});
    } else {
      ifma_terms_.push_back({i, false});
      ifma_terms_.push_back({i, true});
    }
  }
  const std::size_t nt = ifma_terms_.size();
  ifma_weights_.resize(to_.size() * nt);
  ifma_weights_shoup52_.resize(to_.size() * nt);
  avx2_weights_.resize(to_.size() * nt);
  avx2_weights_over_q_.resize(to_.size() * nt);
  for (std::size_t k = 0; k < to_.size(); ++k) {
    if (!to_[k].ifma_eligible()) continue;
    const u64 shift = pow_mod(2, kSplitBits, to_[k]);
    for (std::size_t t = 0; t < nt; ++t) {
      const auto& term = ifma_terms_[t];
      const u64 w = term.high ? mul_mod(hat_mod_to_[k * nb + term.source], shift, to_[k]) : hat_mod_to_[k * nb + term.source];
      ifma_weights_[k * nt + t] = w;
      ifma_weights_shoup52_[k * nt + t] = static_cast<u64>((static_cast<u128>(w) << 52) / to_[k].value());
      avx2_weights_[k * nt + t] = static_cast<double>(w);
      avx2_weights_over_q_[k * nt + t] = static_cast<double>(w) / static_cast<double>(to_[k].value());
    }
  }
}

// z[j] = sum_i y[i][j] * hat[i] mod c. Four coefficients at a time: independent u128
// accumulators keep the multiplier busy instead of waiting on one carry chain.
void BaseConverter::convert_row_scalar(const u64* y, std::size_t stride, const u64* hat, u64* z,
                                       std::size_t len, const Modulus& c) const {
  // Products are < 2^122; 32 of them stay below 2^127, so reduce every 32 terms.
  constexpr std::size_t kTermsPerReduce = 32;
  const std::size_t nb = from_.size();
  std::size_t j = 0;
  for (; j + 4 <= len; j += 4) {
    u128 a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (std::size_t i = 0; i < nb; ++i) {
      const u64* yi = y + i * stride + j;
      const u64 h = hat[i];
      a0 += static_cast<u128>(yi[0]) * h;
      a1 += static_cast<u128>(yi[1]) * h;
      a2 += static_cast<u128>(yi[2]) * h;
      a3 += static_cast<u128>(yi[3]) * h;
      if ((i + 1) % kTermsPerReduce == 0) {
        a0 = reduce128(a0, c); a1 = reduce128(a1, c); a2 = reduce128(a2, c); a3 = reduce128(a3, c);
      }
    }
    z[j] = reduce128(a0, c);
    z[j + 1] = reduce128(a1, c);
    z[j + 2] = reduce128(a2, c);
    z[j + 3] = reduce128(a3, c);
  }
  for (; j < len; ++j) {
    u128 acc = 0;
    for (std::size_t i = 0; i < nb; ++i) {
      acc += static_cast<u128>(y[i * stride + j]) * hat[i];
      if ((i + 1) % kTermsPerReduce == 0) acc = reduce128(acc, c);
    }
    z[j] = reduce128(acc, c);
  }
}

void BaseConverter::convert(const u64* const* in, u64* const* out, std::size_t n,
                            std::size_t to_count, bool exact, const u64* offsets) const {
  if (to_count > to_.size()) throw std::invalid_argument("BaseConverter: too many outputs");
  if (offsets && !exact) throw std::invalid_argument("BaseConverter: offsets need the exact conversion");
  constexpr std::size_t kBlock = 256;
  const SimdPath path = default_simd_path();
  const std::size_t nb = from_.size();
  std::vector<u64> y(nb * kBlock);
  std::vector<u64> overflow(kBlock, 0);  // u per coefficient (exact mode)
  std::vector<double> fraction(kBlock);
  const std::size_t nt = ifma_terms_.size();
  std::vector<u64> split(nt * kBlock);      // IFMA term rows
  std::vector<const u64*> term_rows(nt), y_rows(nb);
  // AVX2: the IFMA terms as doubles, made once per block for the target rows that use them.
  bool avx2 = false;
  for (std::size_t k = 0; k < to_count; ++k) avx2 = avx2 || kernels::use_avx2_double(path, to_[k]);
  std::vector<double> term_doubles(avx2 ? nt * kBlock : 0);
  std::vector<const double*> term_double_rows(nt);
  for (std::size_t t = 0; avx2 && t < nt; ++t) term_double_rows[t] = term_doubles.data() + t * kBlock;
  for (std::size_t i = 0; i < nb; ++i) y_rows[i] = y.data() + i * kBlock;
  for (std::size_t t = 0; t < nt; ++t) {
    const auto& term = ifma_terms_[t];
    const bool direct = from_[term.source].ifma_eligible();
    term_rows[t] = direct ? y.data() + term.source * kBlock : split.data() + t * kBlock;
  }
  // The exact correction subtracts u B mod to[k] (u <= nb); with offsets, u B - offsets[k].
  std::vector<u64> shifted;
  if (offsets) {
    shifted.resize(to_count * (nb + 1));
    for (std::size_t k = 0; k < to_count; ++k)
      for (std::size_t u = 0; u <= nb; ++u)
        shifted[k * (nb + 1) + u] = sub_mod(b_multiples_[k * (nb + 1) + u], offsets[k], to_[k].value());
  }
  const u64* corrections = offsets ? shifted.data() : b_multiples_.data();
  const u64 low_mask = (u64{1} << kSplitBits) - 1;
  for (std::size_t j0 = 0; j0 < n; j0 += kBlock) {
    const std::size_t len = std::min(kBlock, n - j0);
    for (std::size_t i = 0; i < nb; ++i)
      kernels::multiply_constant(in[i] + j0, hat_inv_[i], y.data() + i * kBlock, len, from_[i], path);
    for (std::size_t t = 0; t < nt; ++t) {
      const auto& term = ifma_terms_[t];
      if (from_[term.source].ifma_eligible()) continue;
      const u64* src = y.data() + term.source * kBlock;
      u64* dst = split.data() + t * kBlock;
      for (std::size_t j = 0; j < len; ++j) dst[j] = term.high ? src[j] >> kSplitBits : src[j] & low_mask;
    }
    for (std::size_t t = 0; avx2 && t < nt; ++t)
      kernels::detail::to_doubles_avx2(term_rows[t], term_doubles.data() + t * kBlock, len);
    if (exact) {
      // sum_i y_i / b_i = x / B + u with x / B in [0, 1). Row by row so the loop vectorises;
      // y < 2^61 converts through a signed integer (cheaper than an unsigned conversion).
      std::fill(fraction.begin(), fraction.begin() + static_cast<std::ptrdiff_t>(len), 0.0);
      for (std::size_t i = 0; i < nb; ++i) {
        const u64* yi = y.data() + i * kBlock;
        const double inv = inv_from_[i];
        for (std::size_t j = 0; j < len; ++j) fraction[j] += static_cast<double>(static_cast<std::int64_t>(yi[j])) * inv;
      }
      for (std::size_t j = 0; j < len; ++j) overflow[j] = static_cast<u64>(fraction[j]);
    }
    for (std::size_t k = 0; k < to_count; ++k) {
      const u64* hat = hat_mod_to_.data() + k * nb;
      u64* z = out[k] + j0;
      if (kernels::use_ifma(path, to_[k])) {
        kernels::detail::dot_constant_ifma(term_rows.data(), ifma_weights_.data() + k * nt,
                                           ifma_weights_shoup52_.data() + k * nt, nt, z, len, to_[k]);
      } else if (kernels::use_avx2_double(path, to_[k])) {
        kernels::detail::dot_constant_avx2(term_double_rows.data(), avx2_weights_.data() + k * nt,
                                           avx2_weights_over_q_.data() + k * nt, nt, z, len, to_[k]);
      } else if (kernels::use_avx512_wide(path, to_[k])) {
        kernels::detail::dot_constant_wide(y_rows.data(), hat, hat_mod_to_shoup_.data() + k * nb, nb, z, len, to_[k]);
      } else {
        convert_row_scalar(y.data(), kBlock, hat, z, len, to_[k]);
      }
      if (exact)  // minus u * B mod c_k (u <= nb), plus the offset
        kernels::subtract_indexed(corrections + k * (nb + 1), nb + 1, overflow.data(), z, len, to_[k], path);
    }
  }
}

}  // namespace pfhe::ring
