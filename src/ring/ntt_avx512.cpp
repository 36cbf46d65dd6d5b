// AVX-512 NTT kernels, 8 lanes. Primes below 2^50 use 52-bit Shoup multiplication on the
// IFMA units; larger primes (the 60-bit EvalMod primes of bootstrapping) use 64-bit Shoup
// multiplication, the low product native (AVX-512DQ) and the high product assembled from
// four 32x32-bit products. Both share every stage and lane permutation below through the
// multiplication policy (Shoup52 / Shoup64). Functions carry target attributes instead of
// per-file flags, so no AVX-512 code can leak into inline functions shared with the
// portable build.
#include <immintrin.h>

#include <array>

#include "ring/avx512_shoup.h"
#include "ring/ntt.h"

namespace pfhe::ring::detail {
namespace {

using avx512::reduce_once;
using avx512::Shoup52;
using avx512::Shoup64;

// A twiddle and its Shoup constant, broadcast.
struct Twiddle {
  __m512i w, w_shoup;
};

PFHE_AVX512 inline Twiddle twiddle(const u64* w, const u64* ws, std::size_t k) {
  return {_mm512_set1_epi64(static_cast<long long>(w[k])), _mm512_set1_epi64(static_cast<long long>(ws[k]))};
}

// Cooley-Tukey butterfly with Harvey's lazy reduction: inputs and outputs in [0, 4q).
template <class Mul>
struct ForwardButterfly {
  __m512i two_q;
  Mul mul;
  PFHE_AVX512 void operator()(__m512i& x, __m512i& y, const Twiddle& tw) const {
    const __m512i xr = reduce_once(x, two_q);
    const __m512i t = mul(y, tw.w, tw.w_shoup);
    x = _mm512_add_epi64(xr, t);
    y = _mm512_sub_epi64(_mm512_add_epi64(xr, two_q), t);
  }
};

// Gentleman-Sande butterfly: inputs and outputs in [0, 2q).
template <class Mul>
struct InverseButterfly {
  __m512i two_q;
  Mul mul;
  PFHE_AVX512 void operator()(__m512i& x, __m512i& y, const Twiddle& tw) const {
    const __m512i sum = reduce_once(_mm512_add_epi64(x, y), two_q);
    y = mul(_mm512_sub_epi64(_mm512_add_epi64(x, two_q), y), tw.w, tw.w_shoup);
    x = sum;
  }
};

// One radix-2 stage: `blocks` blocks of 2t elements, block i pairing (x, x + t) with
// twiddle k0 + i. For the stages whose pairs are at least a vector apart (t >= 8).
template <class Butterfly>
PFHE_AVX512 void radix2_stage(u64* a, std::size_t blocks, std::size_t t, const u64* w, const u64* ws, std::size_t k0,
                            const Butterfly& butterfly) {
  for (std::size_t i = 0; i < blocks; ++i) {
    const Twiddle tw = twiddle(w, ws, k0 + i);
    u64* x = a + 2 * i * t;
    for (std::size_t j = 0; j < t; j += 8) {
      __m512i xv = _mm512_loadu_si512(x + j), yv = _mm512_loadu_si512(x + t + j);
      butterfly(xv, yv, tw);
      _mm512_storeu_si512(x + j, xv);
      _mm512_storeu_si512(x + t + j, yv);
    }
  }
}

// Two stages in one pass over 4-vector groups x, x + s, x + 2s, x + 3s (s >= 8): `stages`
// gets the group and runs the four butterflies of both stages on it in registers.
template <class Stages>
PFHE_AVX512 void quad_pass(u64* x, std::size_t s, const Stages& stages) {
  for (std::size_t j = 0; j < s; j += 8) {
    __m512i v[4];
    for (std::size_t k = 0; k < 4; ++k) v[k] = _mm512_loadu_si512(x + k * s + j);
    stages(v);
    for (std::size_t k = 0; k < 4; ++k) _mm512_storeu_si512(x + k * s + j, v[k]);
  }
}

// Lane permutations for stages whose butterfly pairs lie in one 16-element block.
// gather_x/gather_y pick the X/Y operands of 8 butterflies from (A, B); scatter_a/scatter_b
// put the results (X', Y') back into A and B. Butterfly l of block b uses twiddle
// m + (8b + l) / t with m = n / (2t): 8 / t consecutive table entries from m + b * 8 / t,
// spread over the lanes by `twiddle_lanes` (l -> l / t). Reading them from the table
// itself instead of from per-lane copies keeps the twiddles a transform streams at 1 MB
// per 2^16 prime instead of 2.6 MB: with two cores transforming limbs of different
// primes, the copies did not fit the shared cache and bounded the transforms.
struct SmallStagePerm {
  __m512i gather_x, gather_y, scatter_a, scatter_b, twiddle_lanes;
  std::size_t first, per_block;  // m and 8 / t
};

PFHE_AVX512 SmallStagePerm make_perm(int t, std::size_t n) {
  alignas(64) std::array<long long, 8> gx{}, gy{}, sa{}, sb{}, tl{};
  std::array<int, 16> source{};  // element -> index into (X' lanes 0..7, Y' lanes 8..15)
  for (int l = 0; l < 8; ++l) {
    const int xi = 2 * (l / t) * t + l % t;
    gx[l] = xi;
    gy[l] = xi + t;
    source[xi] = l;
    source[xi + t] = 8 + l;
    tl[l] = l / t;
  }
  for (int p = 0; p < 8; ++p) { sa[p] = source[p]; sb[p] = source[8 + p]; }
  return {_mm512_load_si512(gx.data()), _mm512_load_si512(gy.data()), _mm512_load_si512(sa.data()),
          _mm512_load_si512(sb.data()), _mm512_load_si512(tl.data()), n / (2 * static_cast<std::size_t>(t)),
          8 / static_cast<std::size_t>(t)};
}

// The three stage maps inside a block, for t = 4, 2, 1.
struct SmallStages {
  SmallStagePerm stage[3];
};
PFHE_AVX512 SmallStages make_small_stages(std::size_t n) {
  return {{make_perm(4, n), make_perm(2, n), make_perm(1, n)}};
}

// One of the three stages inside a 16-element block (A = av, B = bv), block b's twiddles
// from the table w (Shoup constants ws).
template <class Butterfly>
PFHE_AVX512 inline void block_stage(__m512i& av, __m512i& bv, const SmallStagePerm& perm, const u64* w, const u64* ws,
                                  std::size_t b, const Butterfly& butterfly) {
  const std::size_t k = perm.first + b * perm.per_block;  // at most n - 8: 8 entries always readable
  const Twiddle tw{_mm512_permutexvar_epi64(perm.twiddle_lanes, _mm512_loadu_si512(w + k)),
                   _mm512_permutexvar_epi64(perm.twiddle_lanes, _mm512_loadu_si512(ws + k))};
  __m512i xv = _mm512_permutex2var_epi64(av, perm.gather_x, bv);
  __m512i yv = _mm512_permutex2var_epi64(av, perm.gather_y, bv);
  butterfly(xv, yv, tw);
  av = _mm512_permutex2var_epi64(xv, perm.scatter_a, yv);
  bv = _mm512_permutex2var_epi64(xv, perm.scatter_b, yv);
}

// Two forward stages on a 4-vector group (pairs v0/v2 and v1/v3 with the outer twiddle,
// then v0/v1 and v2/v3 with the inner ones).
struct TwoStages {
  Twiddle outer, inner_lo, inner_hi;
  template <class Butterfly>
  PFHE_AVX512 void operator()(__m512i* v, const Butterfly& butterfly) const {
    butterfly(v[0], v[2], outer);
    butterfly(v[1], v[3], outer);
    butterfly(v[0], v[1], inner_lo);
    butterfly(v[2], v[3], inner_hi);
  }
};

// The forward stages from the one whose first twiddle index is m (pairs t apart) to the
// last, in place; inputs in [0, 4q), outputs in [0, q).
template <class Mul>
PFHE_AVX512 void forward_stages_from(const NttTables& tab, u64* a, std::size_t m, std::size_t t) {
  const std::size_t n = tab.n();
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(tab.modulus().value()));
  const ForwardButterfly<Mul> butterfly{_mm512_add_epi64(q, q), Mul::of(q)};
  const u64* w = tab.root_powers().data();
  const u64* ws = Mul::forward_shoup(tab);
  // Two stages per pass while both have pairs at least a vector apart: the pass reads and
  // writes the limb once instead of twice (same butterflies in the same order, so the
  // result is the radix-2 result bit for bit).
  for (; t >= 32; m <<= 2, t >>= 2) {
    for (std::size_t i = 0; i < m; ++i) {
      const TwoStages stages{twiddle(w, ws, m + i), twiddle(w, ws, 2 * m + 2 * i), twiddle(w, ws, 2 * m + 2 * i + 1)};
      quad_pass(a + 2 * i * t, t / 2, [&](__m512i* v) PFHE_AVX512 { stages(v, butterfly); });
    }
  }
  for (; t >= 16; m <<= 1, t >>= 1) radix2_stage(a, m, t, w, ws, m, butterfly);
  // The four last stages (t = 8, 4, 2, 1) stay inside one 16-element block: all four run
  // on the block in registers, one pass over the limb. t = 8 pairs the block's two vectors.
  const SmallStages small = make_small_stages(n);
  for (std::size_t b = 0; b < n / 16; ++b) {
    u64* blk = a + 16 * b;
    __m512i av = _mm512_loadu_si512(blk), bv = _mm512_loadu_si512(blk + 8);
    butterfly(av, bv, twiddle(w, ws, n / 16 + b));
    for (int s = 0; s < 3; ++s) block_stage(av, bv, small.stage[s], w, ws, b, butterfly);
    // [0, 4q) -> [0, q)
    _mm512_storeu_si512(blk, reduce_once(reduce_once(av, butterfly.two_q), q));
    _mm512_storeu_si512(blk + 8, reduce_once(reduce_once(bv, butterfly.two_q), q));
  }
}

// The inverse transform, in place; inputs and outputs in [0, q).
template <class Mul>
PFHE_AVX512 void inverse_transform(const NttTables& tab, u64* a) {
  const std::size_t n = tab.n();
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(tab.modulus().value()));
  const InverseButterfly<Mul> butterfly{_mm512_add_epi64(q, q), Mul::of(q)};
  const u64* w = tab.inv_root_powers().data();
  const u64* ws = Mul::inverse_shoup(tab);
  const SmallStages small = make_small_stages(n);
  for (std::size_t b = 0; b < n / 16; ++b) {  // t = 1, 2, 4, 8 on each block in registers
    u64* blk = a + 16 * b;
    __m512i av = _mm512_loadu_si512(blk), bv = _mm512_loadu_si512(blk + 8);
    for (int s = 2; s >= 0; --s) block_stage(av, bv, small.stage[s], w, ws, b, butterfly);
    butterfly(av, bv, twiddle(w, ws, n / 16 + b));
    _mm512_storeu_si512(blk, av);
    _mm512_storeu_si512(blk + 8, bv);
  }
  std::size_t h = n / 32, t = 16;
  for (; h >= 2; h >>= 2, t <<= 2) {  // two stages per pass, as in the forward transform
    for (std::size_t i = 0; i < h / 2; ++i) {
      const Twiddle inner_lo = twiddle(w, ws, h + 2 * i), inner_hi = twiddle(w, ws, h + 2 * i + 1);
      const Twiddle outer = twiddle(w, ws, h / 2 + i);
      quad_pass(a + 4 * i * t, t, [&](__m512i* v) PFHE_AVX512 {
        butterfly(v[0], v[1], inner_lo);
        butterfly(v[2], v[3], inner_hi);
        butterfly(v[0], v[2], outer);
        butterfly(v[1], v[3], outer);
      });
    }
  }
  for (; h >= 1; h >>= 1, t <<= 1) radix2_stage(a, h, t, w, ws, h, butterfly);
  const __m512i ni = _mm512_set1_epi64(static_cast<long long>(tab.n_inv()));
  const __m512i nis = _mm512_set1_epi64(static_cast<long long>(Mul::n_inv_shoup(tab)));
  for (std::size_t j = 0; j < n; j += 8) {
    const __m512i v = _mm512_loadu_si512(a + j);
    _mm512_storeu_si512(a + j, reduce_once(butterfly.mul(v, ni, nis), q));
  }
}

}  // namespace

PFHE_AVX512 void ntt_forward_avx512(const NttTables& tab, u64* a) {
  if (tab.modulus().ifma_eligible()) return forward_stages_from<Shoup52>(tab, a, 1, tab.n() / 2);
  forward_stages_from<Shoup64>(tab, a, 1, tab.n() / 2);
}

PFHE_AVX512 void ntt_inverse_avx512(const NttTables& tab, u64* a) {
  if (tab.modulus().ifma_eligible()) return inverse_transform<Shoup52>(tab, a);
  inverse_transform<Shoup64>(tab, a);
}

PFHE_AVX512 void ntt_forward_signed_ifma(const NttTables& tab, const std::int64_t* x, u64* a) {
  const std::size_t n = tab.n(), s = n / 4;
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(tab.modulus().value()));
  const __m512i two_q = _mm512_add_epi64(q, q);
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i one_shoup = _mm512_set1_epi64(static_cast<long long>(tab.modulus().one_shoup52()));
  const __m512i zero = _mm512_setzero_si512();
  const ForwardButterfly<Shoup52> butterfly{two_q, Shoup52::of(q)};
  const u64* w = tab.root_powers().data();
  const u64* ws = tab.root_powers_shoup52().data();
  const TwoStages stages{twiddle(w, ws, 1), twiddle(w, ws, 2), twiddle(w, ws, 3)};
  // The first two stages, as in forward_stages_from, on inputs lifted lazily: |x| mod q in
  // [0, 2q), negated as 2q - r for negative x, so in [0, 2q] (the butterflies take [0, 4q)).
  for (std::size_t j = 0; j < s; j += 8) {
    __m512i v[4];
    for (std::size_t k = 0; k < 4; ++k) {
      const __m512i x_k = _mm512_loadu_si512(x + k * s + j);
      const __m512i r = butterfly.mul(_mm512_abs_epi64(x_k), one, one_shoup);
      v[k] = _mm512_mask_sub_epi64(r, _mm512_cmplt_epi64_mask(x_k, zero), two_q, r);
    }
    stages(v, butterfly);
    for (std::size_t k = 0; k < 4; ++k) _mm512_storeu_si512(a + k * s + j, v[k]);
  }
  forward_stages_from<Shoup52>(tab, a, 4, n / 8);
}

}  // namespace pfhe::ring::detail
