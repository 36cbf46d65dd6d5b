// Element-wise kernels: every SIMD path against the scalar reference, odd lengths included.
#include <gtest/gtest.h>

#include <random>

#include "ring/kernels.h"
#include "ring/primes.h"
#include "ring/ring.h"

using namespace pfhe::ring;

namespace {
std::vector<u64> random_below(std::size_t n, u64 bound, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<u64> v(n);
  for (auto& x : v) x = rng() % bound;
  return v;
}
}  // namespace

class KernelPaths : public ::testing::TestWithParam<SimdPath> {};

TEST_P(KernelPaths, MatchScalarReference) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  for (int bits : {17, 30, 40, 49, 50, 55, 60}) {
    const Modulus m(generate_ntt_primes(bits, 1, 16)[0]);
    for (std::size_t n : {std::size_t{8}, std::size_t{37}, std::size_t{4096}}) {
      const auto a = random_below(n, m.value(), bits * 7 + n), b = random_below(n, m.value(), bits * 11 + n);
      // Extremes: q - 1 everywhere in the first lanes.
      auto a2 = a;
      for (std::size_t j = 0; j < std::min<std::size_t>(n, 8); ++j) a2[j] = m.value() - 1;
      // Sums of exactly q and equal operands (the reductions' edges) in lanes 0-3 and 4-7.
      auto b2 = b;
      for (std::size_t j = 0; j < std::min<std::size_t>(n, 8); ++j) b2[j] = j < 4 ? 1 : a2[j];
      std::vector<u64> got(n), want(n);
      kernels::add(a2.data(), b2.data(), got.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(got[j], (a2[j] + b2[j]) % m.value()) << "add bits " << bits;
      kernels::sub(a2.data(), b2.data(), got.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(got[j], (a2[j] + m.value() - b2[j]) % m.value()) << "sub";
      kernels::add_constant(a2.data(), 1, got.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(got[j], (a2[j] + 1) % m.value()) << "add_constant 1";
      kernels::add_constant(a2.data(), m.value() - 1, got.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(got[j], (a2[j] + m.value() - 1) % m.value()) << "add_constant";
      // Tables of 10, 16 and 17 entries (AVX-512: in registers up to 16), q - 1 and 0
      // among them, and random indices into them.
      for (const std::size_t entries : {10, 16, 17}) {
        auto table = random_below(entries, m.value(), bits + entries);
        table[0] = m.value() - 1, table[1] = 0;
        auto index = random_below(n, entries, bits * 5 + n + entries);
        index[0] = 1;  // acc - 0: the difference plus q is exactly q
        got = a2;
        kernels::subtract_indexed(table.data(), entries, index.data(), got.data(), n, m, path);
        for (std::size_t j = 0; j < n; ++j)
          ASSERT_EQ(got[j], (a2[j] + m.value() - table[index[j]]) % m.value())
              << "subtract_indexed bits " << bits << " entries " << entries;
      }
      kernels::multiply(a2.data(), b.data(), got.data(), n, m, path);
      kernels::multiply(a2.data(), b.data(), want.data(), n, m, SimdPath::kScalar);
      ASSERT_EQ(got, want) << "multiply bits " << bits << " n " << n;
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(want[j], static_cast<u64>(static_cast<u128>(a2[j]) * b[j] % m.value()));
      got = b;
      want = b;
      kernels::multiply_add(a2.data(), b.data(), got.data(), n, m, path);
      kernels::multiply_add(a2.data(), b.data(), want.data(), n, m, SimdPath::kScalar);
      ASSERT_EQ(got, want) << "multiply_add bits " << bits;
      const u64 w = m.value() - 2;
      kernels::multiply_constant(a2.data(), w, got.data(), n, m, path);
      kernels::multiply_constant(a2.data(), w, want.data(), n, m, SimdPath::kScalar);
      ASSERT_EQ(got, want) << "multiply_constant bits " << bits;
      kernels::subtract_multiply_constant(a2.data(), b.data(), w, got.data(), n, m, path);
      kernels::subtract_multiply_constant(a2.data(), b.data(), w, want.data(), n, m, SimdPath::kScalar);
      ASSERT_EQ(got, want) << "subtract_multiply_constant bits " << bits;
      // The same with an addend (no permutation), against the plain formula.
      for (const u64* c : {static_cast<const u64*>(nullptr), a.data()}) {
        kernels::subtract_multiply_add_permute(a2.data(), b.data(), w, c, nullptr, got.data(), n, m, path);
        for (std::size_t j = 0; j < n; ++j) {
          const u64 v = mul_mod(sub_mod(a2[j], b[j], m.value()), w, m);
          ASSERT_EQ(got[j], c ? add_mod(v, c[j], m.value()) : v) << "subtract_multiply_add_permute bits " << bits;
        }
      }
      const auto big = random_below(n, u64{1} << 52, bits + n);
      kernels::reduce(big.data(), 52, got.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(got[j], big[j] % m.value()) << "reduce bits " << bits;
      auto any = random_below(n, ~u64{0}, bits + 3 * n);  // 64-bit inputs (the wide lanes on AVX-512)
      any[0] = ~u64{0};
      kernels::reduce(any.data(), 64, got.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(got[j], any[j] % m.value()) << "reduce 64 bits " << bits;
      // Signed inputs, both magnitude ranges (the IFMA path takes <= 52 bits), zero and the
      // 64-bit extremes included.
      for (const int magnitude_bits : {52, 63}) {
        std::vector<std::int64_t> signed_in(n);
        std::mt19937_64 rng(bits * 13 + n + magnitude_bits);
        for (auto& v : signed_in)
          v = static_cast<std::int64_t>(rng() >> (64 - magnitude_bits)) * ((rng() & 1) ? -1 : 1);
        signed_in[0] = 0;
        if (magnitude_bits == 52) {  // the largest magnitudes the AVX2 and IFMA paths take
          signed_in[1] = (std::int64_t{1} << 52) - 1;
          signed_in[2] = -signed_in[1];
        }
        if (magnitude_bits == 63) {
          signed_in[1] = INT64_MIN;
          signed_in[2] = INT64_MAX;
        }
        kernels::reduce_signed(signed_in.data(), magnitude_bits + (magnitude_bits == 63), got.data(), n, m, path);
        for (std::size_t j = 0; j < n; ++j) {
          const auto q = static_cast<__int128>(m.value());
          const auto expected = static_cast<u64>(((static_cast<__int128>(signed_in[j]) % q) + q) % q);
          ASSERT_EQ(got[j], expected) << "reduce_signed bits " << bits << " input " << signed_in[j];
        }
      }
      // In place (out aliases a).
      auto inplace = a2;
      kernels::multiply(inplace.data(), b.data(), inplace.data(), n, m, path);
      kernels::multiply(a2.data(), b.data(), want.data(), n, m, SimdPath::kScalar);
      ASSERT_EQ(inplace, want);
    }
  }
}

// The lazily reduced dot product on every path against term-by-term arithmetic: 1 term, a
// digit count, and more than the 32 terms after which the 128-bit sum is reduced; rows of
// q - 1 (the largest products).
TEST_P(KernelPaths, DotProductMatchesTermByTerm) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  const std::size_t n = 37;
  for (int bits : {30, 50, 55, 61}) {
    const Modulus m(generate_ntt_primes(bits, 1, 16)[0]);
    // 15 and 16: the most terms the IFMA lazy sum takes, and the first it leaves.
    for (std::size_t terms : {std::size_t{1}, std::size_t{4}, std::size_t{15}, std::size_t{16}, std::size_t{70}}) {
      std::vector<std::vector<u64>> a, b;
      std::vector<const u64*> pa, pb;
      for (std::size_t t = 0; t < terms; ++t) {
        a.push_back(t % 3 == 0 ? std::vector<u64>(n, m.value() - 1) : random_below(n, m.value(), bits + 2 * t));
        b.push_back(t % 5 == 0 ? std::vector<u64>(n, m.value() - 1) : random_below(n, m.value(), bits + 2 * t + 1));
      }
      for (std::size_t t = 0; t < terms; ++t) { pa.push_back(a[t].data()); pb.push_back(b[t].data()); }
      std::vector<u64> got(n), want(n, 0);
      kernels::dot_product(pa.data(), pb.data(), terms, got.data(), n, m, path);
      for (std::size_t t = 0; t < terms; ++t)
        for (std::size_t j = 0; j < n; ++j) want[j] = add_mod(want[j], mul_mod(a[t][j], b[t][j], m), m.value());
      ASSERT_EQ(got, want) << "bits " << bits << " terms " << terms;
      // Accumulating onto what out holds (q - 1 in the first lanes).
      auto start = random_below(n, m.value(), bits + 3 * terms);
      std::fill_n(start.begin(), std::min<std::size_t>(n, 8), m.value() - 1);
      got = start;
      kernels::dot_product(pa.data(), pb.data(), terms, got.data(), n, m, path, /*accumulate=*/true);
      for (std::size_t j = 0; j < n; ++j)
        ASSERT_EQ(got[j], add_mod(start[j], want[j], m.value())) << "accumulate bits " << bits << " terms " << terms;
    }
  }
}

// Automorphism permutations on every path (the AVX-512 version permutes whole cache lines)
// against the plain gather, for several Galois elements and ring sizes.
TEST_P(KernelPaths, PermuteMatchesGather) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  for (std::size_t n : {std::size_t{16}, std::size_t{64}, std::size_t{4096}}) {
    const Ring r(n, generate_ntt_primes(50, 1, n));
    const Modulus& m = r.modulus(0);
    const auto x = random_below(n, m.value(), n + 1), acc = random_below(n, m.value(), n + 2);
    for (const u64 g : {u64{5}, u64{3}, u64{25}, u64{2 * n - 1}, u64{2 * n - 5}}) {
      const auto& perm = r.automorphism_permutation(g);
      // Sums of exactly q in the first outputs (the reduction's edge).
      auto start = acc;
      for (std::size_t j = 0; j < 8; ++j) start[j] = (m.value() - x[perm[j]]) % m.value();
      std::vector<u64> got(n), got_acc = start;
      kernels::permute(x.data(), perm.data(), got.data(), n, path);
      kernels::permute_add(x.data(), perm.data(), got_acc.data(), n, m, path);
      for (std::size_t j = 0; j < n; ++j) {
        ASSERT_EQ(got[j], x[perm[j]]) << "n " << n << " g " << g;
        ASSERT_EQ(got_acc[j], add_mod(start[j], x[perm[j]], m.value())) << "n " << n << " g " << g;
      }
      // ModDown's last pass with the rotation's permutation, on a 50-bit (IFMA) and a
      // 60-bit (wide lanes) prime: (x - y) w + y, permuted.
      for (const Modulus& q : {m, Modulus(generate_ntt_primes(60, 1, n)[0])}) {
        const auto xq = random_below(n, q.value(), n + 3), yq = random_below(n, q.value(), n + 4);
        const u64 w = q.value() - 5;
        kernels::subtract_multiply_add_permute(xq.data(), yq.data(), w, yq.data(), perm.data(), got.data(), n, q, path);
        for (std::size_t j = 0; j < n; ++j) {
          const std::size_t k = perm[j];
          const u64 v = mul_mod(sub_mod(xq[k], yq[k], q.value()), w, q);
          ASSERT_EQ(got[j], add_mod(v, yq[k], q.value())) << "permuted ModDown pass n " << n << " g " << g;
        }
      }
    }
  }
}

TEST(Kernels, DotConstantIfmaMatchesScalar) {
  if (!cpu_supports(SimdPath::kAvx512Ifma)) GTEST_SKIP() << "no AVX-512 IFMA";
  const Modulus m(generate_ntt_primes(45, 1, 16)[0]);
  const std::size_t n = 100;
  // 9 and 15 terms: the lazy sum of the halves; 16: the per-term reduction it leaves.
  for (const std::size_t terms : {std::size_t{9}, std::size_t{15}, std::size_t{16}}) {
    std::vector<std::vector<u64>> y;
    std::vector<const u64*> ptr;
    std::vector<u64> w, ws;
    for (std::size_t i = 0; i < terms; ++i) {
      y.push_back(random_below(n, u64{1} << 50, i));
      y.back()[0] = (u64{1} << 50) - 1;  // the largest input in every row
      w.push_back(m.value() - 1 - i);
      ws.push_back(static_cast<u64>((static_cast<u128>(w.back()) << 52) / m.value()));
    }
    for (auto& v : y) ptr.push_back(v.data());
    std::vector<u64> out(n);
    kernels::detail::dot_constant_ifma(ptr.data(), w.data(), ws.data(), terms, out.data(), n, m);
    for (std::size_t j = 0; j < n; ++j) {
      u64 acc = 0;
      for (std::size_t i = 0; i < terms; ++i) acc = add_mod(acc, mul_mod(y[i][j] % m.value(), w[i], m), m.value());
      ASSERT_EQ(out[j], acc) << "terms " << terms;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, KernelPaths,
                         ::testing::Values(SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512Ifma),
                         [](const auto& info) { return to_string(info.param); });
