// Hybrid key-switching building blocks: ModDown rounding and decomposition.
#include <gtest/gtest.h>

#include "ckks/key_switch.h"
#include "ring/sampler.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

// x = P*y + z with |z| < P/2 must come back as exactly y.
TEST(KeySwitch, ModDownDividesByPWithRounding) {
  for (int p_count : {1, 2}) {
    ParameterSpec spec;
    spec.log_n = 10;
    spec.q_bits = {50, 40, 40};
    spec.p_bits.assign(p_count, 50);
    Context ctx(Parameters::create_insecure_for_testing(spec));
    const auto& rq = ctx.ring_q();
    const auto& rp = ctx.ring_p();
    ring::Prng prng(ring::random_seed());
    ring::Poly y = rq.make_poly(3, false);
    ring::sample_uniform(prng, rq, y);
    std::vector<std::int64_t> z(ctx.n());
    std::mt19937_64 rng(1);
    for (auto& v : z) v = static_cast<std::int64_t>(rng() % (1ULL << 45)) - (1LL << 44);
    QPPoly x{rq.make_poly(3, false), rp.make_poly(rp.size(), false)};
    ring::set_small(rq, z, x.q);
    ring::set_small(rp, z, x.p);
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t k = 0; k < ctx.n(); ++k) {
        const auto& m = rq.modulus(i);
        x.q.limb(i)[k] = ring::add_mod(x.q.limb(i)[k], ring::mul_mod(y.limb(i)[k], ctx.p_mod_q()[i], m), m.value());
      }
    rq.to_ntt(x.q);
    rp.to_ntt(x.p);
    ring::Poly out = rq.make_poly(3);
    mod_down(ctx, x, out);
    rq.from_ntt(out);
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t k = 0; k < ctx.n(); ++k)
        ASSERT_EQ(out.limb(i)[k], y.limb(i)[k]) << "P primes " << p_count << " limb " << i << " coeff " << k;
  }
}
