// Shared helpers for the CKKS tests: small (insecure, test-only) parameter sets, random
// messages and error measurement against float64 references.
#pragma once
#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "ckks/context.h"
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
