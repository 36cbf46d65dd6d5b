// Generation of NTT-friendly primes q = 1 (mod 2N).
#pragma once
#include <cstdint>
#include <vector>

namespace pfhe::ring {

bool is_prime(std::uint64_t n);

// Returns `count` distinct primes q = 1 (mod 2N) with exactly `bits` bits, the largest
// first, none of which appears in `exclude`. Throws if there are not enough of them.
std::vector<std::uint64_t> generate_ntt_primes(int bits, std::size_t count, std::uint64_t n,
                                               const std::vector<std::uint64_t>& exclude = {});

// A primitive 2N-th root of unity modulo q (the smallest one, so the choice is
// deterministic and both sides of a protocol agree).
std::uint64_t primitive_2n_root(std::uint64_t q, std::uint64_t n);

}  // namespace pfhe::ring
