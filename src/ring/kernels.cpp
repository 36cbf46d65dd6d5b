#include "ring/kernels.h"

namespace pfhe::ring::kernels {

void permute(const u64* x, const std::uint32_t* perm, u64* out, std::size_t n, SimdPath path) {
  if (path == SimdPath::kAvx512Ifma && n % 8 == 0) return detail::permute_blocks_avx512(x, perm, out, n);
  // A plain gather loop: faster than AVX-512 vpgatherqq on the Zen 4 target.
  for (std::size_t j = 0; j < n; ++j) out[j] = x[perm[j]];
}

void permute_add(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, const Modulus& m, SimdPath path) {
  if (path == SimdPath::kAvx512Ifma && n % 8 == 0) return detail::permute_blocks_add_avx512(x, perm, acc, n, m.value());
  if (path == SimdPath::kAvx2) return detail::permute_add_avx2(x, perm, acc, n, m.value());
  for (std::size_t j = 0; j < n; ++j) acc[j] = add_mod(acc[j], x[perm[j]], m.value());
}

void add(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (path == SimdPath::kAvx512Ifma) return detail::add_avx512(a, b, out, n, m.value());
  if (path == SimdPath::kAvx2) return detail::add_avx2(a, b, out, n, m.value());
  for (std::size_t j = 0; j < n; ++j) out[j] = add_mod(a[j], b[j], m.value());
}

void sub(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (path == SimdPath::kAvx512Ifma) return detail::sub_avx512(a, b, out, n, m.value());
  if (path == SimdPath::kAvx2) return detail::sub_avx2(a, b, out, n, m.value());
  for (std::size_t j = 0; j < n; ++j) out[j] = sub_mod(a[j], b[j], m.value());
}

void subtract_indexed(const u64* table, std::size_t table_size, const u64* index, u64* acc, std::size_t n,
                      const Modulus& m, SimdPath path) {
  if (path == SimdPath::kAvx512Ifma)
    return detail::subtract_indexed_avx512(table, table_size, index, acc, n, m.value());
  if (path == SimdPath::kAvx2) return detail::subtract_indexed_avx2(table, index, acc, n, m.value());
  const u64 q = m.value();
  for (std::size_t j = 0; j < n; ++j) {
    const u64 t = table[index[j]], d = acc[j] - t;
    acc[j] = d + (q & (u64{0} - static_cast<u64>(acc[j] < t)));
  }
}

void add_constant(const u64* a, u64 c, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (path == SimdPath::kAvx512Ifma) return detail::add_constant_avx512(a, c, out, n, m.value());
  if (path == SimdPath::kAvx2) return detail::add_constant_avx2(a, c, out, n, m.value());
  for (std::size_t j = 0; j < n; ++j) out[j] = add_mod(a[j], c, m.value());
}

void multiply(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (use_ifma(path, m)) return detail::multiply_ifma(a, b, out, n, m);
  if (use_avx512_wide(path, m)) return detail::multiply_wide(a, b, out, n, m);
  if (use_avx2_double(path, m)) return detail::dot_product_avx2(&a, &b, 1, out, n, m, false);
  for (std::size_t j = 0; j < n; ++j) out[j] = mul_mod(a[j], b[j], m);
}

void multiply_add(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m, SimdPath path) {
  if (use_ifma(path, m)) return detail::multiply_add_ifma(a, b, acc, n, m);
  if (use_avx512_wide(path, m)) return detail::multiply_add_wide(a, b, acc, n, m);
  if (use_avx2_double(path, m)) return detail::dot_product_avx2(&a, &b, 1, acc, n, m, true);
  for (std::size_t j = 0; j < n; ++j) acc[j] = reduce128(static_cast<u128>(a[j]) * b[j] + acc[j], m);
}

void dot_product(const u64* const* a, const u64* const* b, std::size_t terms, u64* out, std::size_t n,
                 const Modulus& m, SimdPath path, bool accumulate) {
  if (use_ifma(path, m) && terms <= detail::kIfmaDotTerms)
    return detail::dot_product_ifma(a, b, terms, out, n, m, accumulate);
  if (path == SimdPath::kAvx512Ifma) {
    if (!accumulate) multiply(a[0], b[0], out, n, m, path);
    for (std::size_t t = accumulate ? 0 : 1; t < terms; ++t) multiply_add(a[t], b[t], out, n, m, path);
    return;
  }
  if (use_avx2_double(path, m)) return detail::dot_product_avx2(a, b, terms, out, n, m, accumulate);
  constexpr std::size_t kTermsPerReduce = 32;  // products < 2^122: 32 of them stay below 2^127
  for (std::size_t j = 0; j < n; ++j) {
    u128 acc = accumulate ? out[j] : 0;
    for (std::size_t t = 0; t < terms; ++t) {
      acc += static_cast<u128>(a[t][j]) * b[t][j];
      if ((t + 1) % kTermsPerReduce == 0) acc = reduce128(acc, m);
    }
    out[j] = reduce128(acc, m);
  }
}

void multiply_constant(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (use_ifma(path, m)) return detail::multiply_constant_ifma(a, w, out, n, m);
  if (use_avx512_wide(path, m)) return detail::multiply_constant_wide(a, w, out, n, m);
  if (use_avx2_double(path, m)) return detail::multiply_constant_avx2(a, w, out, n, m);
  const u64 q = m.value(), ws = shoup(w, q);
  for (std::size_t j = 0; j < n; ++j) out[j] = mul_shoup(a[j], w, ws, q);
}

void subtract_multiply_constant(const u64* a, const u64* b, u64 w, u64* out, std::size_t n, const Modulus& m,
                                SimdPath path) {
  if (use_ifma(path, m)) return detail::subtract_multiply_constant_ifma(a, b, w, out, n, m);
  if (use_avx512_wide(path, m)) return detail::subtract_multiply_constant_wide(a, b, w, out, n, m);
  if (use_avx2_double(path, m)) return detail::subtract_multiply_add_permute_avx2(a, b, w, nullptr, nullptr, out, n, m);
  const u64 q = m.value(), ws = shoup(w, q);
  for (std::size_t j = 0; j < n; ++j) out[j] = mul_shoup(a[j] + q - b[j], w, ws, q);
}

void subtract_multiply_add_permute(const u64* a, const u64* b, u64 w, const u64* c,
                                   const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (n % 8 == 0) {
    if (use_ifma(path, m)) return detail::subtract_multiply_add_permute_ifma(a, b, w, c, perm, out, n, m);
    if (use_avx512_wide(path, m)) return detail::subtract_multiply_add_permute_wide(a, b, w, c, perm, out, n, m);
  }
  if (use_avx2_double(path, m)) return detail::subtract_multiply_add_permute_avx2(a, b, w, c, perm, out, n, m);
  const u64 q = m.value(), ws = shoup(w, q);
  for (std::size_t j = 0; j < n; ++j) {
    const std::size_t k = perm ? perm[j] : j;
    const u64 v = mul_shoup(a[k] + q - b[k], w, ws, q);
    out[j] = c ? add_mod(v, c[k], q) : v;
  }
}

void reduce(const u64* x, int input_bits, u64* out, std::size_t n, const Modulus& m, SimdPath path) {
  if (use_ifma(path, m) && input_bits <= 52) return detail::reduce_ifma(x, out, n, m);
  if (path == SimdPath::kAvx512Ifma) return detail::reduce_wide(x, out, n, m);
  for (std::size_t j = 0; j < n; ++j) out[j] = reduce64(x[j], m);
}

void reduce_signed(const std::int64_t* x, int magnitude_bits, u64* out, std::size_t n, const Modulus& m,
                   SimdPath path) {
  if (use_ifma(path, m) && magnitude_bits <= 52) return detail::reduce_signed_ifma(x, out, n, m);
  if (path == SimdPath::kAvx512Ifma) return detail::reduce_signed_wide(x, out, n, m);
  if (use_avx2_double(path, m) && magnitude_bits <= 52) return detail::reduce_signed_avx2(x, out, n, m);
  for (std::size_t j = 0; j < n; ++j) out[j] = reduce_signed64(x[j], m);
}

}  // namespace pfhe::ring::kernels
