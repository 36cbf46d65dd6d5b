// Shared helpers for the CKKS tests: small (insecure, test-only) parameter sets, random
// messages and error measurement against float64 references.
#pragma once
#include <cmath>
#include <complex>
#include <functional>
#include <map>
#include <random>
#include <vector>

#include "ckks/bootstrapping.h"
#include "ckks/context.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "ckks/parameters.h"

namespace pfhe::test {

inline ckks::Parameters small_params(int log_n, int levels, int dnum = 0, int scale_bits = 40) {
  ckks::ParameterSpec spec;
  spec.log_n = log_n;
  spec.q_bits.push_back(60);
  for (int i = 0; i < levels; ++i) spec.q_bits.push_back(scale_bits);
  spec.p_bits = {60, 60};
  spec.dnum = dnum;
  spec.default_scale = std::ldexp(1.0, scale_bits);
  return ckks::Parameters::create_insecure_for_testing(spec);
}

// A chain for bootstrapping with `compute_levels` levels of 2^40 left after it: q0, then
// (bottom to top) SlotsToCoeffs (right above q0 when it runs first), the computation
// levels, EvalMod and CoeffsToSlots.
inline ckks::Parameters bootstrap_params(int log_n, const ckks::BootstrapConfig& config, int compute_levels,
                                         int q0_bits = 56,
                                         ckks::SecretDistribution secret = ckks::SecretDistribution::kTernaryHamming,
                                         int hamming_weight = 32) {
  ckks::ParameterSpec spec;
  spec.log_n = log_n;
  spec.q_bits = {q0_bits};
  const auto stc = [&] { spec.q_bits.insert(spec.q_bits.end(), static_cast<std::size_t>(config.stc_stages), 42); };
  if (config.slots_to_coeffs_first) stc();
  spec.q_bits.insert(spec.q_bits.end(), static_cast<std::size_t>(compute_levels), 40);
  if (!config.slots_to_coeffs_first) stc();
  spec.q_bits.insert(spec.q_bits.end(), config.eval_mod_depth(), 58);
  spec.q_bits.insert(spec.q_bits.end(), static_cast<std::size_t>(config.cts_stages), 56);
  spec.p_bits = {60, 60, 60};
  spec.secret = secret;
  spec.hamming_weight = hamming_weight;
  spec.default_scale = std::ldexp(1.0, 40);
  return ckks::Parameters::create_insecure_for_testing(spec);
}

// A fresh key set for a compiled program: secret key, relinearization key, the Galois keys
// at the levels the program asks for (with a bootstrapper: its rotation and conjugation
// keys too, in one set), and an evaluator, encryptor and decryptor over them.
struct ModelKeys {
  ModelKeys(const ckks::Context& ctx, const std::map<long, std::size_t>& rotation_levels)
      : ModelKeys(ctx, [&](const ckks::KeyGenerator& k) { return k.create_galois_keys(rotation_levels); }) {}
  ModelKeys(const ckks::Context& ctx, const ckks::Bootstrapper& boot,
            const std::map<long, std::size_t>& program_levels = {})
      : ModelKeys(ctx, [&](const ckks::KeyGenerator& k) { return boot.create_galois_keys(k, program_levels); }) {}
  ckks::KeyGenerator keygen;
  ckks::RelinKey relin;
  ckks::GaloisKeys galois;
  ckks::Evaluator eval;
  ckks::Encryptor encryptor;
  ckks::Decryptor decryptor;

 private:
  ModelKeys(const ckks::Context& ctx, const std::function<ckks::GaloisKeys(const ckks::KeyGenerator&)>& make_galois)
      : keygen(ctx),
        relin(keygen.create_relin_key()),
        galois(make_galois(keygen)),
        eval(ctx, &relin, &galois),
        encryptor(ctx, keygen.secret_key()),
        decryptor(ctx, keygen.secret_key()) {}
};

inline std::vector<std::complex<double>> random_complex(std::size_t n, std::uint64_t seed, double bound = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(-bound, bound);
  std::vector<std::complex<double>> v(n);
  for (auto& x : v) x = {d(rng), d(rng)};
  return v;
}

inline std::vector<double> random_real(std::size_t n, std::uint64_t seed, double bound = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(-bound, bound);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

template <typename A, typename B>
double max_abs_error(const A& got, const B& want) {
  double e = 0;
  for (std::size_t i = 0; i < want.size(); ++i) e = std::max(e, std::abs(got[i] - want[i]));
  return e;
}

// Bits of precision: -log2(max abs error).
template <typename A, typename B>
double precision_bits(const A& got, const B& want) {
  return -std::log2(std::max(max_abs_error(got, want), 1e-300));
}

}  // namespace pfhe::test
