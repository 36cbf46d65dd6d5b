// Runtime CPU feature detection and the SIMD path selection for the hot loops.
#pragma once
#include <string>
#include <vector>

namespace pfhe::ring {

enum class SimdPath { kScalar, kAvx2, kAvx512Ifma };

std::string to_string(SimdPath path);
// Parses "scalar", "avx2" or "avx512ifma"; throws std::invalid_argument otherwise.
SimdPath parse_simd_path(const std::string& name);

// Paths this CPU can execute (scalar always first).
std::vector<SimdPath> supported_simd_paths();
bool cpu_supports(SimdPath path);

// The path used by default: the best supported one, unless the environment variable
// PFHE_SIMD names another (it must be supported, otherwise the process refuses to start
// the computation with std::runtime_error). Tests pass paths explicitly instead.
SimdPath default_simd_path();

}  // namespace pfhe::ring
