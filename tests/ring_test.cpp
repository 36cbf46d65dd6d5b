// Ring layer: modular arithmetic, primes, NTT on every SIMD path, base conversion, sampling.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <vector>

#include "ring/base_converter.h"
#include "ring/modarith.h"
#include "ring/ntt.h"
#include "ring/primes.h"
#include "ring/ring.h"
#include "ring/sampler.h"

using namespace pfhe::ring;

namespace {
std::mt19937_64 test_rng(42);  // test data only; keys never use it

std::vector<u64> random_poly(std::size_t n, u64 q) {
  std::vector<u64> a(n);
  for (auto& x : a) x = test_rng() % q;
  return a;
}

// Schoolbook product modulo X^n + 1.
std::vector<u64> negacyclic_product(const std::vector<u64>& a, const std::vector<u64>& b, const Modulus& m) {
  const std::size_t n = a.size();
  std::vector<u64> c(n, 0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const u64 p = mul_mod(a[i], b[j], m);
      const std::size_t k = i + j;
      if (k < n) c[k] = add_mod(c[k], p, m.value());
      else c[k - n] = sub_mod(c[k - n], p, m.value());
    }
  return c;
}
}  // namespace

TEST(ModArith, BarrettMatchesDivision) {
  for (int bits : {20, 40, 50, 60, 61}) {
    const u64 q = generate_ntt_primes(bits, 1, 1024)[0];
    const Modulus m(q);
    for (int t = 0; t < 20000; ++t) {
      const u128 z = (static_cast<u128>(test_rng()) << 64) | test_rng();
      ASSERT_EQ(reduce128(z, m), static_cast<u64>(z % q));
      const u64 a = test_rng() % q, b = test_rng() % q;
      ASSERT_EQ(mul_mod(a, b, m), static_cast<u64>(static_cast<u128>(a) * b % q));
      ASSERT_EQ(mul_shoup(a, b, shoup(b, q), q), mul_mod(a, b, m));
    }
    EXPECT_EQ(mul_mod(inv_mod(12345, m), 12345, m), 1u);
  }
  EXPECT_THROW(Modulus(u64{1} << 62), std::invalid_argument);
  EXPECT_THROW(inv_mod(0, Modulus(97)), std::invalid_argument);
}

// The division-free Shoup constant equals floor(w 2^64 / q) for every w < q, the ends
// included, on primes of every supported size and small odd moduli.
TEST(ModArith, DivisionFreeShoupMatchesDivision) {
  std::vector<u64> moduli{3, 97, 65537};
  for (int bits : {17, 30, 40, 50, 52, 60, 61}) moduli.push_back(generate_ntt_primes(bits, 1, 1024)[0]);
  for (const u64 q : moduli) {
    const Modulus m(q);
    for (const u64 w : {u64{0}, u64{1}, q / 2, q - 2, q - 1}) ASSERT_EQ(shoup(w, m), shoup(w, q)) << q << " " << w;
    for (int t = 0; t < 20000; ++t) {
      const u64 w = test_rng() % q;
      ASSERT_EQ(shoup(w, m), shoup(w, q)) << q << " " << w;
    }
  }
}

TEST(ModArith, SignedLifts) {
  const u64 q = 97;
  EXPECT_EQ(from_signed(-1, q), 96u);
  EXPECT_EQ(from_signed(INT64_MIN, q), u64{97 - 9223372036854775807ULL % 97 - 1});
  EXPECT_EQ(centered(96, q), -1);
  EXPECT_EQ(centered(48, q), 48);
}

TEST(Primes, NttFriendlyDistinctAndSized) {
  const std::size_t n = 1 << 13;
  const auto ps = generate_ntt_primes(40, 10, n);
  ASSERT_EQ(ps.size(), 10u);
  for (std::size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(is_prime(ps[i]));
    EXPECT_EQ((ps[i] - 1) % (2 * n), 0u);
    EXPECT_EQ(64 - __builtin_clzll(ps[i]), 40);
    for (std::size_t j = 0; j < i; ++j) EXPECT_NE(ps[i], ps[j]);
  }
  const auto more = generate_ntt_primes(40, 2, n, ps);
  for (u64 p : more) EXPECT_EQ(std::count(ps.begin(), ps.end(), p), 0);
  EXPECT_FALSE(is_prime(3215031751ULL));  // strong pseudoprime to bases 2,3,5,7
  EXPECT_THROW(generate_ntt_primes(12, 5, 1 << 12), std::invalid_argument);
}

class NttPaths : public ::testing::TestWithParam<SimdPath> {};

TEST_P(NttPaths, MatchesSchoolbookAndDirectEvaluation) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  for (int bits : {30, 45, 50, 59}) {
    const std::size_t n = 64;
    const Modulus m(generate_ntt_primes(bits, 1, n)[0]);
    const NttTables tab(n, m);
    const auto a = random_poly(n, m.value()), b = random_poly(n, m.value());
    auto fa = a, fb = b;
    tab.forward(fa.data(), path);
    tab.forward(fb.data(), path);
    // Evaluation order: fa[i] = a(psi^(2 bitrev(i) + 1)).
    for (std::size_t i = 0; i < n; ++i) {
      const u64 x = pow_mod(tab.psi(), 2 * bit_reverse(i, tab.log_n()) + 1, m);
      u64 v = 0;
      for (std::size_t k = n; k-- > 0;) v = add_mod(mul_mod(v, x, m), a[k], m.value());
      ASSERT_EQ(fa[i], v) << "bits " << bits << " index " << i;
    }
    std::vector<u64> fc(n);
    for (std::size_t i = 0; i < n; ++i) fc[i] = mul_mod(fa[i], fb[i], m);
    tab.inverse(fc.data(), path);
    EXPECT_EQ(fc, negacyclic_product(a, b, m)) << "bits " << bits;
  }
}

TEST_P(NttPaths, AgreesWithScalarOnLargeRings) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  // Odd and even counts of large-stride stages (the IFMA kernels pair them): 2^4 has one,
  // 2^5 two, 2^10 seven, 2^14 eleven, 2^15 twelve.
  for (std::size_t n : {std::size_t{16}, std::size_t{32}, std::size_t{1024}, std::size_t{1} << 14, std::size_t{1} << 15}) {
    for (int bits : {36, 50, 61}) {
      const Modulus m(generate_ntt_primes(bits, 1, n)[0]);
      const NttTables tab(n, m);
      const auto a = random_poly(n, m.value());
      auto x = a, y = a;
      tab.forward(x.data(), SimdPath::kScalar);
      tab.forward(y.data(), path);
      ASSERT_EQ(x, y) << "n " << n << " bits " << bits;
      for (u64 v : y) ASSERT_LT(v, m.value());
      tab.inverse(y.data(), path);
      ASSERT_EQ(y, a);
    }
  }
}

// Inputs at the ends of [0, q) on the widest primes each path has lanes for: the AVX2
// double lanes keep signed values below 4q < 2^52 by stated bounds (ring/ntt_avx2.cpp), which
// these push hardest (every coefficient q - 1, alternating 0 and q - 1, one nonzero); forward
// and inverse are each compared with the scalar transform of the same input.
TEST_P(NttPaths, ExtremeResiduesAgreeWithScalar) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  for (std::size_t n : {std::size_t{16}, std::size_t{32}, std::size_t{1} << 15, std::size_t{1} << 16}) {
    for (int bits : {49, 50, 61}) {
      const Modulus m(generate_ntt_primes(bits, 1, n)[0]);
      const NttTables tab(n, m);
      const u64 top = m.value() - 1;
      std::vector<std::vector<u64>> inputs(3, std::vector<u64>(n, 0));
      for (std::size_t i = 0; i < n; ++i) inputs[0][i] = top, inputs[1][i] = i % 2 ? top : 0;
      inputs[2][n / 2 + 1] = top;
      for (const auto& a : inputs) {
        auto x = a, y = a;
        tab.forward(x.data(), SimdPath::kScalar);
        tab.forward(y.data(), path);
        ASSERT_EQ(x, y) << "forward, n " << n << " bits " << bits;
        x = a, y = a;
        tab.inverse(x.data(), SimdPath::kScalar);
        tab.inverse(y.data(), path);
        ASSERT_EQ(x, y) << "inverse, n " << n << " bits " << bits;
      }
    }
  }
}

// The transform of signed coefficients (just-in-time diagonals) is the scalar transform of
// their residues on every path: the fused IFMA (n >= 64) and AVX2 kernels (|x| < 2^52,
// extremes and zeros included) and the fallbacks (small n, wider magnitudes, primes above
// 50 bits).
TEST_P(NttPaths, ForwardFromSignedIsTheTransformOfTheResidues) {
  const SimdPath path = GetParam();
  if (!cpu_supports(path)) GTEST_SKIP() << to_string(path) << " not supported on this CPU";
  for (std::size_t n : {std::size_t{16}, std::size_t{32}, std::size_t{64}, std::size_t{1} << 12}) {
    for (int prime_bits : {36, 50, 61}) {
      const Modulus m(generate_ntt_primes(prime_bits, 1, n)[0]);
      const NttTables tab(n, m);
      for (int magnitude_bits : {20, 52, 62}) {
        const std::int64_t bound = (std::int64_t{1} << magnitude_bits) - 1;
        std::uniform_int_distribution<std::int64_t> value(-bound, bound);
        std::vector<std::int64_t> x(n);
        for (auto& v : x) v = value(test_rng);
        x[0] = bound, x[1] = -bound, x[2] = 0;
        const auto q = static_cast<std::int64_t>(m.value());
        if (q <= bound) x[3] = -q;  // a negative input with residue 0
        std::vector<u64> expected(n), got(n);
        for (std::size_t i = 0; i < n; ++i) expected[i] = reduce_signed64(x[i], m);
        tab.forward(expected.data(), SimdPath::kScalar);
        tab.forward_from_signed(x.data(), magnitude_bits, got.data(), path);
        ASSERT_EQ(got, expected) << "n " << n << " prime bits " << prime_bits << " magnitude bits " << magnitude_bits;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, NttPaths,
                         ::testing::Values(SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512Ifma),
                         [](const auto& info) { return to_string(info.param); });

// Every supported path transforms primes of any size (AgreesWithScalarOnLargeRings checks
// the values); an unsupported path and a bad size are clear errors.
TEST(Ntt, RefusesUnsupportedPathsAndSizes) {
  const std::size_t n = 1024;
  const NttTables big(n, Modulus(generate_ntt_primes(55, 1, n)[0]));
  std::vector<u64> a(n, 1);
  for (SimdPath path : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512Ifma}) {
    if (cpu_supports(path)) EXPECT_NO_THROW(big.forward(a.data(), path));
    else EXPECT_THROW(big.forward(a.data(), path), std::invalid_argument);
  }
  EXPECT_THROW(NttTables(100, Modulus(97)), std::invalid_argument);
  EXPECT_THROW(parse_simd_path("sse9"), std::invalid_argument);
}

// Regression: a degree below the NTT's minimum threw inside the parallel construction of
// the NTT tables, which terminated the process; it is a clear error now.
TEST(Ring, RefusesDegreesTheNttCannotHandle) {
  const auto primes = generate_ntt_primes(40, 2, 64);
  EXPECT_THROW(Ring(8, primes), std::invalid_argument);
  EXPECT_THROW(Ring(48, primes), std::invalid_argument);
}

TEST(Ring, AutomorphismMatchesCoefficientMap) {
  const std::size_t n = 256;
  const Ring r(n, generate_ntt_primes(40, 2, n));
  Poly a = r.make_poly(2, false);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto v = random_poly(n, r.modulus(i).value());
    std::copy(v.begin(), v.end(), a.limb(i));
  }
  for (u64 g : {u64{5}, u64{25}, u64{2 * n - 1}, u64{3}}) {
    // Coefficient-domain reference: X^k -> +-X^(k g mod n).
    Poly expect = r.make_poly(2, false);
    for (std::size_t i = 0; i < 2; ++i)
      for (std::size_t k = 0; k < n; ++k) {
        const u64 e = k * g % (2 * n);
        const u64 q = r.modulus(i).value();
        if (e < n) expect.limb(i)[e] = a.limb(i)[k];
        else expect.limb(i)[e - n] = neg_mod(a.limb(i)[k], q);
      }
    Poly an = a, out = r.make_poly(2);
    r.to_ntt(an);
    r.automorphism_ntt(an, g, out);
    r.from_ntt(out);
    for (std::size_t i = 0; i < 2; ++i)
      for (std::size_t k = 0; k < n; ++k) ASSERT_EQ(out.limb(i)[k], expect.limb(i)[k]) << "g " << g;
  }
  Poly an = a;
  r.to_ntt(an);
  Poly out = r.make_poly(2);
  EXPECT_THROW(r.automorphism_ntt(an, 4, out), std::invalid_argument);
}

std::vector<Modulus> moduli_of(const std::vector<u64>& primes) { return {primes.begin(), primes.end()}; }

// Source bases with and without primes above 2^50 (those take the split IFMA terms), and
// target primes on both sides of 2^50; the exact variant must return x itself.
TEST(BaseConverter, ExactUpToMultipleOfSourceProduct) {
  const std::size_t n = 300;  // not a multiple of the block size or of 8
  for (int big_source : {0, 1}) {
    std::vector<u64> from_p = generate_ntt_primes(40, 3, n);
    if (big_source) from_p[1] = generate_ntt_primes(60, 1, n)[0];
    std::vector<u64> to_p = generate_ntt_primes(50, 2, n);
    to_p.push_back(generate_ntt_primes(58, 1, n)[0]);
    const std::vector<Modulus> from = moduli_of(from_p), to = moduli_of(to_p);
    const BaseConverter conv(from, to);
    std::vector<std::vector<u64>> in(3, std::vector<u64>(n)), out(3, std::vector<u64>(n)), exact(3, std::vector<u64>(n));
    std::vector<u128> xs(n);
    for (std::size_t j = 0; j < n; ++j) {
      xs[j] = ((static_cast<u128>(test_rng()) << 64) | test_rng()) % (static_cast<u128>(from_p[0]) * from_p[1]);
      for (std::size_t i = 0; i < 3; ++i) in[i][j] = static_cast<u64>(xs[j] % from_p[i]);
    }
    const u64* ins[3] = {in[0].data(), in[1].data(), in[2].data()};
    u64* outs[3] = {out[0].data(), out[1].data(), out[2].data()};
    u64* exacts[3] = {exact[0].data(), exact[1].data(), exact[2].data()};
    conv.convert(ins, outs, n);
    conv.convert(ins, exacts, n, 3, /*exact=*/true);
    // With offsets (ModDown's centring): x + offset[k] in every coefficient; 0 and q - 1 included.
    std::vector<std::vector<u64>> shifted(3, std::vector<u64>(n));
    u64* shifteds[3] = {shifted[0].data(), shifted[1].data(), shifted[2].data()};
    const u64 offsets[3] = {0, to_p[1] - 1, to_p[2] / 3};
    conv.convert(ins, shifteds, n, 3, /*exact=*/true, offsets);
    EXPECT_THROW(conv.convert(ins, shifteds, n, 3, /*exact=*/false, offsets), std::invalid_argument);
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t k = 0; k < 3; ++k) {
        const Modulus& m = to[k];
        const u64 x_mod = static_cast<u64>(xs[j] % m.value());
        ASSERT_EQ(exact[k][j], x_mod) << "exact, big source " << big_source;
        ASSERT_EQ(shifted[k][j], add_mod(x_mod, offsets[k], m.value())) << "offset, big source " << big_source;
        const u64 b_mod = mul_mod(mul_mod(from_p[0] % m.value(), from_p[1] % m.value(), m), from_p[2] % m.value(), m);
        bool found = false;  // x + u*B for some 0 <= u < 3
        for (u64 u = 0; u < 3; ++u) found |= out[k][j] == add_mod(x_mod, mul_mod(u, b_mod, m), m.value());
        ASSERT_TRUE(found) << "big source " << big_source << " target " << k;
      }
  }
}

// Many source primes at the largest size the 52-bit kernels take (2^50), extreme residues
// included: every path's sum_i y_i (B / b_i) mod c, with y_i = x_i (B / b_i)^-1 mod b_i,
// equals the one computed here term by term (the AVX2 kernel re-centres its double sums
// every four terms; nine terms cross that twice).
TEST(BaseConverter, ManyLargeSourcePrimesMatchTheTermByTermSum) {
  const std::size_t n = 260, terms = 9;
  const std::vector<u64> from_p = generate_ntt_primes(50, terms, n);
  std::vector<u64> to_p = generate_ntt_primes(49, 2, n);
  to_p.push_back(generate_ntt_primes(59, 1, n)[0]);
  const std::vector<Modulus> from = moduli_of(from_p), to = moduli_of(to_p);
  const BaseConverter conv(from, to);
  std::vector<std::vector<u64>> in(terms, std::vector<u64>(n)), out(to.size(), std::vector<u64>(n));
  for (std::size_t i = 0; i < terms; ++i)
    for (std::size_t j = 0; j < n; ++j) in[i][j] = j < 4 ? from_p[i] - 1 - j % 2 : test_rng() % from_p[i];
  std::vector<const u64*> ins;
  std::vector<u64*> outs;
  for (const auto& v : in) ins.push_back(v.data());
  for (auto& v : out) outs.push_back(v.data());
  conv.convert(ins.data(), outs.data(), n);
  for (std::size_t k = 0; k < to.size(); ++k) {
    const Modulus& c = to[k];
    for (std::size_t j = 0; j < n; ++j) {
      u64 expect = 0;
      for (std::size_t i = 0; i < terms; ++i) {
        u64 hat_b = 1, hat_c = 1;  // (B / b_i) mod b_i and mod c
        for (std::size_t l = 0; l < terms; ++l)
          if (l != i) hat_b = mul_mod(hat_b, from_p[l] % from_p[i], from[i]), hat_c = mul_mod(hat_c, from_p[l] % c.value(), c);
        const u64 y = mul_mod(in[i][j], inv_mod(hat_b, from[i]), from[i]);
        expect = add_mod(expect, mul_mod(y % c.value(), hat_c, c), c.value());
      }
      ASSERT_EQ(out[k][j], expect) << "target " << k << " coefficient " << j;
    }
  }
}

TEST(Sampler, DistributionsHaveExpectedShape) {
  Prng prng(random_seed());
  const std::size_t n = 1 << 14;
  const auto t = sample_ternary_uniform(prng, n);
  std::array<int, 3> counts{};
  for (auto v : t) { ASSERT_GE(v, -1); ASSERT_LE(v, 1); ++counts[v + 1]; }
  for (int c : counts) EXPECT_NEAR(c, n / 3.0, 5 * std::sqrt(n * 2.0 / 9));
  const auto h = sample_ternary_hamming(prng, n, 192);
  EXPECT_EQ(std::count_if(h.begin(), h.end(), [](auto v) { return v != 0; }), 192);
  const auto e = sample_gaussian(prng, n);
  double mean = 0, var = 0;
  for (auto v : e) { ASSERT_LE(std::abs(v), kErrorBound); mean += v; var += double(v) * v; }
  mean /= n;
  var = var / n - mean * mean;
  EXPECT_NEAR(mean, 0, 0.1);
  EXPECT_NEAR(std::sqrt(var), kErrorStdDev, 0.1);
}

TEST(Prng, SameSeedSameStreamDifferentSeedsDiffer) {
  const Seed s = random_seed();
  Prng a(s), b(s), c(random_seed());
  for (int i = 0; i < 3000; ++i) {  // crosses buffer refills
    const u64 x = a.next_u64();
    ASSERT_EQ(x, b.next_u64());
    (void)c;
  }
  Prng d(s), e(random_seed());
  int equal = 0;
  for (int i = 0; i < 100; ++i) equal += d.next_u64() == e.next_u64();
  EXPECT_EQ(equal, 0);
}

// Seeded keys and ciphertexts are re-expanded from their seed: uniform sampling must
// consume the stream exactly as one draw per element plus one per rejection, and leave
// it at the same position. Small primes (17 bits in 20-bit masks) reject often.
TEST(Ring, UniformSamplingConsumesTheStreamDrawByDraw) {
  const std::size_t n = 8192;  // several blocks per limb
  const Ring r(n, {generate_ntt_primes(17, 1, n)[0], generate_ntt_primes(50, 1, n)[0]});
  const Seed seed = random_seed();
  Prng bulk(seed), reference(seed);
  Poly a = r.make_poly(2);
  sample_uniform(bulk, r, a);
  std::size_t rejections = 0;
  for (std::size_t i = 0; i < 2; ++i) {
    const u64 q = r.modulus(i).value(), mask = (u64{1} << r.modulus(i).bits()) - 1;
    for (std::size_t j = 0; j < n; ++j) {
      u64 v;
      while ((v = reference.next_u64() & mask) >= q) ++rejections;
      ASSERT_EQ(a.limb(i)[j], v) << "limb " << i << " coefficient " << j;
    }
  }
  EXPECT_GT(rejections, 0u);
  EXPECT_EQ(bulk.next_u64(), reference.next_u64());  // same stream position afterwards
}

TEST(Ring, UniformSamplingIsReducedAndPoolReusesBuffers) {
  const std::size_t n = 1024;
  const Ring r(n, generate_ntt_primes(50, 3, n));
  Prng prng(random_seed());
  Poly a = r.make_poly(3);
  sample_uniform(prng, r, a);
  EXPECT_TRUE(r.is_reduced(a));
  a.limb(1)[7] = r.modulus(1).value();
  EXPECT_FALSE(r.is_reduced(a));
  Poly b = a;
  b.truncate(2);
  EXPECT_EQ(b.limbs(), 2u);
  Poly c;
  c = b;
  EXPECT_EQ(c.limbs(), 2u);
  EXPECT_EQ(c.limb(1)[7], r.modulus(1).value());
}

// Resident bytes of this process (/proc/self/statm).
static std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// Regression (stage 7 of the face-verification benchmark): freed blocks that glibc keeps
// inside its heap stay resident; return_free_heap gives their pages back.
TEST(Poly, ReturnFreeHeapGivesFreedPagesBack) {
  keep_freed_memory_for_reuse();  // as the programs run: freed blocks stay in the heap
  constexpr std::size_t kBlock = std::size_t{4} << 20, kBlocks = 32;
  std::vector<void*> blocks;
  for (std::size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(std::malloc(kBlock));
    ASSERT_NE(blocks.back(), nullptr);
    // Through a volatile pointer: stores into memory that is then freed may be elided.
    volatile char* bytes = static_cast<char*>(blocks.back());
    for (std::size_t j = 0; j < kBlock; j += 4096) bytes[j] = 1;
  }
  // Every other block freed: the live ones between them keep the free ones from merging
  // into the heap's top, which glibc would trim by itself.
  for (std::size_t i = 0; i < kBlocks; i += 2) std::free(blocks[i]);
  const std::size_t before = resident_bytes();
  return_free_heap();
  const std::size_t after = resident_bytes();
  for (std::size_t i = 1; i < kBlocks; i += 2) std::free(blocks[i]);
  EXPECT_GE(before - std::min(before, after), kBlocks / 2 * kBlock * 3 / 4)
      << "resident " << before << " -> " << after << " bytes";
}
