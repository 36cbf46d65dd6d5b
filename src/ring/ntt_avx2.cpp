// AVX2 NTT kernels. Primes below 2^50 run on double lanes (ring/avx2_double.h): every
// stage, the last two with in-register shuffles. Larger primes run 4 lanes of 64-bit Shoup
// multiplication: AVX2 has no 64x64-bit multiply, so the high and low halves are assembled
// from 32x32-bit products; their forward's last two stages also run on registers, their
// inverse's first two the portable scalar butterflies.
#include <immintrin.h>

#include <cstdint>

#include "ring/avx2_double.h"
#include "ring/ntt.h"

namespace pfhe::ring::detail {
namespace {

PFHE_AVX2_FMA inline __m256i mulhi64(__m256i a, __m256i b) {
  const __m256i lo32 = _mm256_set1_epi64x(0xffffffffLL);
  const __m256i a_hi = _mm256_srli_epi64(a, 32), b_hi = _mm256_srli_epi64(b, 32);
  const __m256i ll = _mm256_mul_epu32(a, b);
  const __m256i hl = _mm256_mul_epu32(a_hi, b);
  const __m256i lh = _mm256_mul_epu32(a, b_hi);
  const __m256i hh = _mm256_mul_epu32(a_hi, b_hi);
  const __m256i cross = _mm256_add_epi64(_mm256_add_epi64(_mm256_srli_epi64(ll, 32),
                                                          _mm256_and_si256(hl, lo32)),
                                         _mm256_and_si256(lh, lo32));
  return _mm256_add_epi64(_mm256_add_epi64(hh, _mm256_srli_epi64(hl, 32)),
                          _mm256_add_epi64(_mm256_srli_epi64(lh, 32), _mm256_srli_epi64(cross, 32)));
}

PFHE_AVX2_FMA inline __m256i mullo64(__m256i a, __m256i b) {
  const __m256i ll = _mm256_mul_epu32(a, b);
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                         _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
  return _mm256_add_epi64(ll, _mm256_slli_epi64(cross, 32));
}

// x * w mod q in [0, 2q).
PFHE_AVX2_FMA inline __m256i mul_shoup_lazy4(__m256i x, __m256i w, __m256i w_shoup, __m256i q) {
  const __m256i quot = mulhi64(x, w_shoup);
  return _mm256_sub_epi64(mullo64(x, w), mullo64(quot, q));
}

// Harvey's forward butterfly on 64-bit lanes: x in [0, 4q) brought to [0, 2q), outputs in [0, 4q).
PFHE_AVX2_FMA inline void forward_butterfly4(__m256i& x, __m256i& y, __m256i w, __m256i w_shoup, __m256i q,
                                             __m256i two_q) {
  x = avx2_double::reduce_once(x, two_q);
  const __m256i t = mul_shoup_lazy4(y, w, w_shoup, q);
  y = _mm256_sub_epi64(_mm256_add_epi64(x, two_q), t);
  x = _mm256_add_epi64(x, t);
}

// A value in [0, 4q) to [0, q).
PFHE_AVX2_FMA inline __m256i residue4(__m256i v, __m256i q, __m256i two_q) {
  return avx2_double::reduce_once(avx2_double::reduce_once(v, two_q), q);
}

// table[i0 .. i3] in lanes 0 .. 3.
PFHE_AVX2_FMA inline __m256i pick4(const u64* table, std::size_t i3, std::size_t i2, std::size_t i1, std::size_t i0) {
  return _mm256_set_epi64x(static_cast<long long>(table[i3]), static_cast<long long>(table[i2]),
                           static_cast<long long>(table[i1]), static_cast<long long>(table[i0]));
}

namespace on_doubles {
using namespace avx2_double;

// Values are signed integers in doubles; Harvey's butterflies keep [0, 4q) with a correction
// per product, signed values need none. Bounds (q < 2^50; mul_twiddle's product of a value v
// has magnitude at most (1/2 + 3.01 |v| 2^-53) q, centre's result at most q/2 + 1 for
// |v| < 2^52):
// - forward: every pass of two stages starts from values below 4q in magnitude and centres
//   the two it adds without a product; the first stage's products are then below 2q, its
//   outputs below q/2 + 1 + 2q, the second stage's products below 1.44q and its outputs below
//   3.95q. A single stage (an odd count) starts from [0, q) and ends below 1.9q.
// - inverse: each butterfly centres its sum and multiplies its difference, so a value
//   below 2q in magnitude stays below 2q (the difference is below 4q, its product below 2q).
// Every product then has |x w| < 2^102 and a remainder below 2^51 (exact_remainder) and
// every value stays an integer below 2^52.
struct Lanes {
  __m256d q, q_inv;
  PFHE_AVX2_FMA explicit Lanes(u64 modulus)
      : q(_mm256_set1_pd(static_cast<double>(modulus))), q_inv(_mm256_set1_pd(1.0 / static_cast<double>(modulus))) {}
};

PFHE_AVX2_FMA inline double twiddle(const u64* w, std::size_t k) {
  return static_cast<double>(static_cast<std::int64_t>(w[k]));
}

// A twiddle w < q and its quotient factor fl(fl(w q_inv)). The product x w mod q, signed:
// the quotient estimate k = nearest(fl(x fl(w q_inv))) is within 1/2 + 3.01 |x| 2^-53 of
// z = x w / q (|z| < |x|; three roundings of relative error 2^-53, plus the rounding; it
// does not wait for x w), so r = x w - k q is at most (1/2 + 3.01 |x| 2^-53) q in
// magnitude, computed exactly (exact_remainder) while |x| <= 4q < 2^52.
struct Twiddle {
  __m256d w, w_over_q;
  PFHE_AVX2_FMA Twiddle(__m256d wv, const Lanes& c) : w(wv), w_over_q(_mm256_mul_pd(wv, c.q_inv)) {}
  PFHE_AVX2_FMA Twiddle(double wd, const Lanes& c) : Twiddle(_mm256_set1_pd(wd), c) {}
};

PFHE_AVX2_FMA inline __m256d mul_twiddle(__m256d x, const Twiddle& t, const Lanes& c) {
  return exact_remainder(x, t.w, _mm256_mul_pd(x, t.w), nearest(_mm256_mul_pd(x, t.w_over_q)), c.q);
}

PFHE_AVX2_FMA inline __m256d load(const u64* p) {
  return _mm256_castsi256_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
PFHE_AVX2_FMA inline void store(u64* p, __m256d v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_castpd_si256(v));
}

// Where the forward's first pass reads its four values (a source's kBounded says they are
// already below q/2 + 1 or in [0, q), so the pass centres none of them):
// the doubles a previous pass stored (below 4q, centred where the pass adds them),
struct FromDoubles {
  const u64* p;
  static constexpr bool kBounded = false;
  PFHE_AVX2_FMA __m256d operator()(std::size_t k, const Lanes&) const { return load(p + k); }
};
// the input words in [0, q),
struct FromWords {
  const u64* p;
  static constexpr bool kBounded = true;
  PFHE_AVX2_FMA __m256d operator()(std::size_t k, const Lanes&) const { return load_integers(p + k); }
};
// or signed words below 2^52 in magnitude, centred as they are read (their reduction fused
// into the first pass: no pass of its own).
struct FromSigned {
  const std::int64_t* p;
  static constexpr bool kBounded = true;
  PFHE_AVX2_FMA __m256d operator()(std::size_t k, const Lanes& c) const {
    return centre(load_signed(p + k), c.q, c.q_inv);
  }
};

// A signed value below 4q in magnitude to its residue in [0, q).
PFHE_AVX2_FMA inline __m256d residue(__m256d v, const Lanes& c) {
  return make_non_negative(centre(v, c.q, c.q_inv), c.q);
}

// Cooley-Tukey butterfly without reduction: the caller centres x where the bounds need it.
PFHE_AVX2_FMA inline void forward_butterfly(__m256d& x, __m256d& y, const Twiddle& w, const Lanes& c) {
  const __m256d t = mul_twiddle(y, w, c);
  y = _mm256_sub_pd(x, t);
  x = _mm256_add_pd(x, t);
}

// Gentleman-Sande butterfly: the sum centred, the difference multiplied.
PFHE_AVX2_FMA inline void inverse_butterfly(__m256d& x, __m256d& y, const Twiddle& w, const Lanes& c) {
  const __m256d d = _mm256_sub_pd(x, y);
  x = centre(_mm256_add_pd(x, y), c.q, c.q_inv);
  y = mul_twiddle(d, w, c);
}

// The factors of the inverse's last stage: n^-1 and w_1 n^-1.
struct LastStage {
  Twiddle n_inv, w_n_inv;
  PFHE_AVX2_FMA LastStage(const NttTables& tab, const Lanes& c)
      : n_inv(static_cast<double>(tab.n_inv()), c),
        w_n_inv(static_cast<double>(mul_mod(tab.inv_root_powers()[1], tab.n_inv(), tab.modulus())), c) {}
};

// The last stage's butterfly with the inverse's factor n^-1 folded in (no pass of its own):
// the sum times n^-1 and the difference times w n^-1 (both below 4q), as residues in [0, q).
PFHE_AVX2_FMA inline void inverse_last_butterfly(__m256d& x, __m256d& y, const LastStage& last, const Lanes& c) {
  const __m256d d = _mm256_sub_pd(x, y);
  x = residue(mul_twiddle(_mm256_add_pd(x, y), last.n_inv, c), c);
  y = residue(mul_twiddle(d, last.w_n_inv, c), c);
}

// The inverse's last stage alone (an odd count of wide stages): half-width t = n / 2.
PFHE_AVX2_FMA inline void inverse_last_stage(u64* a, std::size_t t, const LastStage& last, const Lanes& c) {
  for (std::size_t j = 0; j < t; j += 4) {
    __m256d xv = load(a + j), yv = load(a + t + j);
    inverse_last_butterfly(xv, yv, last, c);
    store_integers(a + j, xv);
    store_integers(a + t + j, yv);
  }
}

// The single stage of an odd count: half-width t = n / 2, one group, bounded inputs.
template <class Source>
PFHE_AVX2_FMA inline void forward_first_stage(u64* a, Source source, std::size_t t, const u64* w, const Lanes& c) {
  const Twiddle wv(twiddle(w, 1), c);
  for (std::size_t j = 0; j < t; j += 4) {
    __m256d xv = source(j, c), yv = source(t + j, c);
    forward_butterfly(xv, yv, wv, c);
    store(a + j, xv);
    store(a + t + j, yv);
  }
}

// Two forward stages in one pass over memory (a limb does not fit this machine's L2): the
// stage of half-width t >= 8 at twiddle offset m, then the stage of half-width t / 2 at 2m,
// on the four values j, j + t/2, j + t, j + 3t/2 of each group, read from `source` (the
// first pass) or from a.
template <class Source>
PFHE_AVX2_FMA inline void forward_two_stages(u64* a, std::size_t m, std::size_t t, const u64* w, const Lanes& c,
                                             Source source) {
  const std::size_t h = t / 2;
  for (std::size_t i = 0; i < m; ++i) {
    const Twiddle w1(twiddle(w, m + i), c), w2(twiddle(w, 2 * m + 2 * i), c), w3(twiddle(w, 2 * m + 2 * i + 1), c);
    u64* x = a + 2 * i * t;
    for (std::size_t j = 0; j < h; j += 4) {
      const std::size_t k = 2 * i * t + j;
      __m256d x0 = source(k, c), x1 = source(k + h, c), x2 = source(k + t, c), x3 = source(k + t + h, c);
      if constexpr (!Source::kBounded) x0 = centre(x0, c.q, c.q_inv), x1 = centre(x1, c.q, c.q_inv);
      forward_butterfly(x0, x2, w1, c);
      forward_butterfly(x1, x3, w1, c);
      forward_butterfly(x0, x1, w2, c);
      forward_butterfly(x2, x3, w3, c);
      store(x + j, x0), store(x + j + h, x1), store(x + j + t, x2), store(x + j + t + h, x3);
    }
  }
}

// The inverse's counterpart: half-width t at twiddle offset h (>= 2), then 2t at h / 2, on
// the values j, j + t, j + 2t, j + 3t of each group of 4t. With `last` (h = 2: the second
// stage is the transform's last) the outputs are residues with n^-1 folded in.
PFHE_AVX2_FMA inline void inverse_two_stages(u64* a, std::size_t h, std::size_t t, const u64* w, const Lanes& c,
                                             const LastStage* last) {
  for (std::size_t i = 0; i < h / 2; ++i) {
    const Twiddle w0(twiddle(w, h + 2 * i), c), w1(twiddle(w, h + 2 * i + 1), c), w2(twiddle(w, h / 2 + i), c);
    u64* x = a + 4 * i * t;
    for (std::size_t j = 0; j < t; j += 4) {
      __m256d x0 = load(x + j), x1 = load(x + j + t), x2 = load(x + j + 2 * t), x3 = load(x + j + 3 * t);
      inverse_butterfly(x0, x1, w0, c);
      inverse_butterfly(x2, x3, w1, c);
      if (last) {
        inverse_last_butterfly(x0, x2, *last, c);
        inverse_last_butterfly(x1, x3, *last, c);
        store_integers(x + j, x0), store_integers(x + j + t, x1);
        store_integers(x + j + 2 * t, x2), store_integers(x + j + 3 * t, x3);
        continue;
      }
      inverse_butterfly(x0, x2, w2, c);
      inverse_butterfly(x1, x3, w2, c);
      store(x + j, x0), store(x + j + t, x1), store(x + j + 2 * t, x2), store(x + j + 3 * t, x3);
    }
  }
}

// Half-width 2 (twiddle offset n / 4) on eight values (v0, v1): two groups (x x y y each),
// which 128-bit lane swaps turn into one vector of x and one of y. The forward centres x
// (the first of the pass's two stages).
PFHE_AVX2_FMA inline void half_width2(__m256d& v0, __m256d& v1, const u64* w, std::size_t g, const Lanes& c,
                                      bool forward) {
  __m256d x = _mm256_permute2f128_pd(v0, v1, 0x20), y = _mm256_permute2f128_pd(v0, v1, 0x31);
  const double w0 = twiddle(w, g), w1 = twiddle(w, g + 1);
  const Twiddle wv(_mm256_set_pd(w1, w1, w0, w0), c);
  if (forward) forward_butterfly(x = centre(x, c.q, c.q_inv), y, wv, c);
  else inverse_butterfly(x, y, wv, c);
  v0 = _mm256_permute2f128_pd(x, y, 0x20);
  v1 = _mm256_permute2f128_pd(x, y, 0x31);
}

// Half-width 1 (twiddle offset n / 2) on eight values: four groups (x y each); unpacking
// takes them in the order g, g + 2, g + 1, g + 3.
PFHE_AVX2_FMA inline void half_width1(__m256d& v0, __m256d& v1, const u64* w, std::size_t g, const Lanes& c,
                                      bool forward) {
  __m256d x = _mm256_unpacklo_pd(v0, v1), y = _mm256_unpackhi_pd(v0, v1);
  const Twiddle wv(_mm256_set_pd(twiddle(w, g + 3), twiddle(w, g + 1), twiddle(w, g + 2), twiddle(w, g)), c);
  if (forward) forward_butterfly(x, y, wv, c);
  else inverse_butterfly(x, y, wv, c);
  v0 = _mm256_unpacklo_pd(x, y);
  v1 = _mm256_unpackhi_pd(x, y);
}

// The forward transform of the values `source` reads, into a.
template <class Source>
PFHE_AVX2_FMA void forward(const NttTables& tab, Source source, u64* a) {
  const std::size_t n = tab.n();
  const Lanes c(tab.modulus().value());
  const u64* w = tab.root_powers().data();
  std::size_t m = 1, t = n / 2;
  if (tab.log_n() % 2 == 1) forward_first_stage(a, source, t, w, c), m <<= 1, t >>= 1;
  else forward_two_stages(a, m, t, w, c, source), m <<= 2, t >>= 2;
  for (; t >= 8; m <<= 2, t >>= 2) forward_two_stages(a, m, t, w, c, FromDoubles{a});
  // The last two stages and the reduction to [0, q), on registers.
  for (std::size_t j = 0; j < n; j += 8) {
    __m256d v0 = load(a + j), v1 = load(a + j + 4);
    half_width2(v0, v1, w, n / 4 + j / 4, c, true);
    half_width1(v0, v1, w, n / 2 + j / 2, c, true);
    store_integers(a + j, residue(v0, c));
    store_integers(a + j + 4, residue(v1, c));
  }
}

PFHE_AVX2_FMA void inverse(const NttTables& tab, u64* a) {
  const std::size_t n = tab.n();
  const Lanes c(tab.modulus().value());
  const u64* w = tab.inv_root_powers().data();
  for (std::size_t j = 0; j < n; j += 8) {
    __m256d v0 = load_integers(a + j), v1 = load_integers(a + j + 4);
    half_width1(v0, v1, w, n / 2 + j / 2, c, false);
    half_width2(v0, v1, w, n / 4 + j / 4, c, false);
    store(a + j, v0), store(a + j + 4, v1);
  }
  const LastStage last(tab, c);
  std::size_t h = n / 8, t = 4;
  for (; h >= 2; h >>= 2, t <<= 2) inverse_two_stages(a, h, t, w, c, h == 2 ? &last : nullptr);
  if (h == 1) inverse_last_stage(a, t, last, c);  // an odd count of wide stages
}
}  // namespace on_doubles

}  // namespace

PFHE_AVX2_FMA void ntt_forward_avx2(const NttTables& tab, u64* a) {
  if (tab.modulus().ifma_eligible()) return on_doubles::forward(tab, on_doubles::FromWords{a}, a);
  const std::size_t n = tab.n();
  const u64 qs = tab.modulus().value();
  const __m256i q = _mm256_set1_epi64x(static_cast<long long>(qs));
  const __m256i two_q = _mm256_add_epi64(q, q);
  const u64* w = tab.root_powers().data();
  const u64* ws = tab.root_powers_shoup().data();
  std::size_t m = 1, t = n / 2;
  for (; t >= 4; m <<= 1, t >>= 1) {
    for (std::size_t i = 0; i < m; ++i) {
      const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(w[m + i]));
      const __m256i wsv = _mm256_set1_epi64x(static_cast<long long>(ws[m + i]));
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 4) {
        __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j));
        __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + j));
        forward_butterfly4(xv, yv, wv, wsv, q, two_q);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + j), xv);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j), yv);
      }
    }
  }
  // Half-widths 2 and 1 on registers (as on double lanes: 128-bit lane swaps, then
  // unpacking, whose order is g, g + 2, g + 1, g + 3), then the reduction to [0, q).
  for (std::size_t j = 0; j < n; j += 8) {
    __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j + 4));
    const std::size_t g2 = n / 4 + j / 4, g1 = n / 2 + j / 2;
    __m256i x = _mm256_permute2x128_si256(v0, v1, 0x20), y = _mm256_permute2x128_si256(v0, v1, 0x31);
    forward_butterfly4(x, y, pick4(w, g2 + 1, g2 + 1, g2, g2), pick4(ws, g2 + 1, g2 + 1, g2, g2), q, two_q);
    v0 = _mm256_permute2x128_si256(x, y, 0x20), v1 = _mm256_permute2x128_si256(x, y, 0x31);
    x = _mm256_unpacklo_epi64(v0, v1), y = _mm256_unpackhi_epi64(v0, v1);
    forward_butterfly4(x, y, pick4(w, g1 + 3, g1 + 1, g1 + 2, g1), pick4(ws, g1 + 3, g1 + 1, g1 + 2, g1), q, two_q);
    v0 = _mm256_unpacklo_epi64(x, y), v1 = _mm256_unpackhi_epi64(x, y);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + j), residue4(v0, q, two_q));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + j + 4), residue4(v1, q, two_q));
  }
}

PFHE_AVX2_FMA void ntt_forward_signed_avx2(const NttTables& tab, const std::int64_t* x, u64* a) {
  on_doubles::forward(tab, on_doubles::FromSigned{x}, a);
}

PFHE_AVX2_FMA void ntt_inverse_avx2(const NttTables& tab, u64* a) {
  if (tab.modulus().ifma_eligible()) return on_doubles::inverse(tab, a);
  const std::size_t n = tab.n();
  const u64 qs = tab.modulus().value();
  const __m256i q = _mm256_set1_epi64x(static_cast<long long>(qs));
  const __m256i two_q = _mm256_add_epi64(q, q);
  const u64* w = tab.inv_root_powers().data();
  const u64* ws = tab.inv_root_powers_shoup().data();
  inverse_stages_scalar(tab, a, 1, 2);
  std::size_t h = n / 8, t = 4;
  for (; h >= 1; h >>= 1, t <<= 1) {
    for (std::size_t i = 0; i < h; ++i) {
      const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(w[h + i]));
      const __m256i wsv = _mm256_set1_epi64x(static_cast<long long>(ws[h + i]));
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 4) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j));
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + j));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + j),
                            avx2_double::reduce_once(_mm256_add_epi64(xv, yv), two_q));
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(y + j),
            mul_shoup_lazy4(_mm256_sub_epi64(_mm256_add_epi64(xv, two_q), yv), wv, wsv, q));
      }
    }
  }
  const __m256i ni = _mm256_set1_epi64x(static_cast<long long>(tab.n_inv()));
  const __m256i nis = _mm256_set1_epi64x(static_cast<long long>(tab.n_inv_shoup()));
  for (std::size_t j = 0; j < n; j += 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + j),
                        avx2_double::reduce_once(mul_shoup_lazy4(v, ni, nis, q), q));
  }
}

}  // namespace pfhe::ring::detail
