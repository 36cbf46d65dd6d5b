// pfhe_demo: an encrypted computation on 128-bit secure parameters, printing precision
// against a float64 reference and the time of every step.
//   pfhe_demo [log_n]   (log_n = 15 or 16; default 15)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "ring/cpu.h"
#include "ring/poly.h"

using namespace pfhe::ckks;

namespace {

class Stopwatch {
 public:
  double lap_ms() {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

double max_abs_error(const std::vector<double>& got, const std::vector<double>& want) {
  double e = 0;
  for (std::size_t i = 0; i < want.size(); ++i) e = std::max(e, std::fabs(got[i] - want[i]));
  return e;
}

// 40-bit scale primes under a 60-bit base prime; 50-bit special primes (the AVX-512 IFMA
// NTT path takes primes < 2^50) sized so that automatic dnum leaves 10 bits of headroom.
ParameterSpec demo_spec(int log_n) {
  ParameterSpec spec;
  spec.log_n = log_n;
  spec.q_bits.push_back(60);
  spec.q_bits.insert(spec.q_bits.end(), log_n == 15 ? 14 : 24, 40);
  spec.p_bits.assign(log_n == 15 ? 5 : 8, 50);
  spec.default_scale = std::ldexp(1.0, 40);
  return spec;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    pfhe::ring::keep_freed_memory_for_reuse();
    const int log_n = argc > 1 ? std::stoi(argv[1]) : 15;
    if (log_n != 15 && log_n != 16) throw std::invalid_argument("log_n must be 15 or 16");
    Stopwatch sw;
    Context ctx(Parameters::create(demo_spec(log_n)));
    std::printf("pfhe demo | %s\n", ctx.params().describe().c_str());
    std::printf("SIMD path: %s | context %.0f ms\n", pfhe::ring::to_string(pfhe::ring::default_simd_path()).c_str(),
                sw.lap_ms());

    KeyGenerator keygen(ctx);
    const PublicKey pk = keygen.create_public_key();
    const RelinKey rlk = keygen.create_relin_key();
    const GaloisKeys gk = keygen.create_galois_keys({1, 2, 4, 8}, false);
    std::printf("keygen: %.0f ms (relin key %.1f MB, 4 rotation keys %.1f MB)\n", sw.lap_ms(),
                rlk.byte_size() / 1e6, gk.byte_size() / 1e6);

    const std::size_t slots = ctx.n() / 2;
    std::mt19937_64 rng(2025);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<double> x(slots), w(slots);
    for (auto& v : x) v = dist(rng);
    for (auto& v : w) v = dist(rng);

    Encoder encoder(ctx);
    Encryptor encryptor(ctx, keygen.secret_key());
    Decryptor decryptor(ctx, keygen.secret_key());
    Evaluator eval(ctx, &rlk, &gk);
    const double scale = ctx.params().default_scale();
    const std::size_t top = ctx.max_level();
    Ciphertext ct = encryptor.encrypt(encoder.encode(x, top, scale));
    std::printf("encode+encrypt: %.1f ms (%zu slots, %.1f MB ciphertext)\n", sw.lap_ms(), slots, ct.byte_size() / 1e6);

    // y = x^2 * w + rot(x^2, 1) + x^2 + 0.5, then a sum over windows of 16 slots.
    Ciphertext sq = eval.square_relin(ct);
    eval.rescale_inplace(sq);
    const double t_square = sw.lap_ms();
    Ciphertext prod = sq;
    eval.multiply_plain_inplace(prod, encoder.encode(w, sq.level(), static_cast<double>(ctx.ring_q().modulus(sq.level()).value())));
    eval.rescale_inplace(prod);
    const double t_plain = sw.lap_ms();
    Ciphertext rot = eval.rotate(sq, 1);
    const double t_rot = sw.lap_ms();
    // Bring rot and sq to prod's level and exact scale: a rescale-neutral multiplication
    // by 1 (the constant is encoded at scale q_l, which the rescale divides out).
    for (Ciphertext* c : {&rot, &sq}) {
      eval.multiply_const_inplace(*c, 1.0);
      eval.rescale_inplace(*c);
    }
    Ciphertext y = eval.add(eval.add(prod, rot), sq);
    eval.add_const_inplace(y, 0.5);
    auto parts = eval.rotate_hoisted(y, {1, 2, 4, 8});
    for (auto& p : parts) eval.add_inplace(y, p);
    const double t_rest = sw.lap_ms();
    const auto got = encoder.decode_real(decryptor.decrypt(y));
    const double t_dec = sw.lap_ms();

    std::vector<double> base(slots), want(slots);
    for (std::size_t i = 0; i < slots; ++i) {
      const double s0 = x[i] * x[i], s1 = x[(i + 1) % slots] * x[(i + 1) % slots];
      base[i] = s0 * w[i] + s1 + s0 + 0.5;
    }
    for (std::size_t i = 0; i < slots; ++i) {
      want[i] = base[i];
      for (std::size_t k : {1, 2, 4, 8}) want[i] += base[(i + k) % slots];
    }
    std::printf("square+relin+rescale %.1f ms | ct x pt + rescale %.1f ms | rotate %.1f ms | "
                "add/const/4 hoisted rotations %.1f ms | decrypt+decode %.1f ms\n",
                t_square, t_plain, t_rot, t_rest, t_dec);
    const double error = max_abs_error(got, want);
    std::printf("result level %zu, precision %.1f bits vs float64 (max abs error %.2e)\n", y.level(),
                -std::log2(std::max(error, 1e-300)), error);
    std::printf("slot 0: encrypted %.9f, float64 %.9f\n", got[0], want[0]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pfhe_demo: error: %s\n", e.what());
    return 1;
  }
}
