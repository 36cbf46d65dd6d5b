#include "ring/cpu.h"

#include <cstdlib>
#include <stdexcept>

namespace pfhe::ring {

std::string to_string(SimdPath path) {
  switch (path) {
    case SimdPath::kScalar: return "scalar";
    case SimdPath::kAvx2: return "avx2";
    case SimdPath::kAvx512Ifma: return "avx512ifma";
  }
  return "unknown";
}

SimdPath parse_simd_path(const std::string& name) {
  for (SimdPath p : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512Ifma})
    if (to_string(p) == name) return p;
  throw std::invalid_argument("unknown SIMD path '" + name + "' (use scalar, avx2 or avx512ifma)");
}

bool cpu_supports(SimdPath path) {
  switch (path) {
    case SimdPath::kScalar: return true;
    // FMA: the AVX2 kernels multiply exactly on double lanes (ring/avx2_double.h).
    case SimdPath::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SimdPath::kAvx512Ifma:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512ifma");
  }
  return false;
}

std::vector<SimdPath> supported_simd_paths() {
  std::vector<SimdPath> paths;
  for (SimdPath p : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512Ifma})
    if (cpu_supports(p)) paths.push_back(p);
  return paths;
}

SimdPath default_simd_path() {
  static const SimdPath chosen = [] {
    if (const char* env = std::getenv("PFHE_SIMD"); env && *env) {
      const SimdPath p = parse_simd_path(env);
      if (!cpu_supports(p))
        throw std::runtime_error("PFHE_SIMD=" + std::string(env) + " is not supported by this CPU");
      return p;
    }
    return supported_simd_paths().back();
  }();
  return chosen;
}

}  // namespace pfhe::ring
