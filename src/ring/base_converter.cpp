#include "ring/base_converter.h"

#include <stdexcept>

namespace pfhe::ring {

BaseConverter::BaseConverter(std::vector<Modulus> from, std::vector<Modulus> to)
    : from_(std::move(from)), to_(std::move(to)) {
  if (from_.empty() || to_.empty()) throw std::invalid_argument("BaseConverter: empty basis");
  const std::size_t nb = from_.size();
  hat_inv_.resize(nb);
  hat_inv_shoup_.resize(nb);
  for (std::size_t i = 0; i < nb; ++i) {
    u64 hat = 1;  // (B / b_i) mod b_i
    for (std::size_t l = 0; l < nb; ++l)
      if (l != i) hat = mul_mod(hat, reduce64(from_[l].value(), from_[i]), from_[i]);
    hat_inv_[i] = inv_mod(hat, from_[i]);
    hat_inv_shoup_[i] = shoup(hat_inv_[i], from_[i].value());
  }
  hat_mod_to_.resize(to_.size() * nb);
  for (std::size_t k = 0; k < to_.size(); ++k)
    for (std::size_t i = 0; i < nb; ++i) {
      u64 hat = 1 % to_[k].value();
      for (std::size_t l = 0; l < nb; ++l)
        if (l != i) hat = mul_mod(hat, reduce64(from_[l].value(), to_[k]), to_[k]);
      hat_mod_to_[k * nb + i] = hat;
    }
  for (const auto& c : to_) {
    u64 b = 1;
    for (const auto& f : from_) b = mul_mod(b, reduce64(f.value(), c), c);
    b_mod_to_.push_back(b);
  }
  for (const auto& f : from_) inv_from_.push_back(1.0 / static_cast<double>(f.value()));
}

void BaseConverter::convert(const u64* const* in, u64* const* out, std::size_t n,
                            std::size_t to_count, bool exact) const {
  if (to_count > to_.size()) throw std::invalid_argument("BaseConverter: too many outputs");
  constexpr std::size_t kBlock = 64;
  // Products are < 2^122; 32 of them stay below 2^127, so reduce every 32 terms.
  constexpr std::size_t kTermsPerReduce = 32;
  const std::size_t nb = from_.size();
  std::vector<u64> y(nb * kBlock);
  std::vector<u64> overflow(kBlock, 0);  // u per coefficient (exact mode)
  for (std::size_t j0 = 0; j0 < n; j0 += kBlock) {
    const std::size_t len = std::min(kBlock, n - j0);
    for (std::size_t i = 0; i < nb; ++i) {
      const u64 q = from_[i].value(), w = hat_inv_[i], ws = hat_inv_shoup_[i];
      const u64* x = in[i] + j0;
      u64* yi = y.data() + i * kBlock;
      for (std::size_t j = 0; j < len; ++j) yi[j] = mul_shoup(x[j], w, ws, q);
    }
    if (exact) {
      // sum_i y_i / b_i = x / B + u with x / B in [0, 1).
      for (std::size_t j = 0; j < len; ++j) {
        double v = 0;
        for (std::size_t i = 0; i < nb; ++i) v += static_cast<double>(y[i * kBlock + j]) * inv_from_[i];
        overflow[j] = static_cast<u64>(v);
      }
    }
    for (std::size_t k = 0; k < to_count; ++k) {
      const u64* hat = hat_mod_to_.data() + k * nb;
      u64* z = out[k] + j0;
      for (std::size_t j = 0; j < len; ++j) {
        u128 acc = 0;
        for (std::size_t i = 0; i < nb; ++i) {
          acc += static_cast<u128>(y[i * kBlock + j]) * hat[i];
          if ((i + 1) % kTermsPerReduce == 0) acc = reduce128(acc, to_[k]);
        }
        z[j] = reduce128(acc, to_[k]);
        if (exact) z[j] = sub_mod(z[j], mul_mod(overflow[j], b_mod_to_[k], to_[k]), to_[k].value());
      }
    }
  }
}

}  // namespace pfhe::ring
