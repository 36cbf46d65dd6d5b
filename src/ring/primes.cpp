#include "ring/primes.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ring/modarith.h"

namespace pfhe::ring {

bool is_prime(u64 n) {
  if (n < 2) return false;
  for (u64 p : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) {
    if (n % p == 0) return n == p;
  }
  // Deterministic Miller-Rabin for all 64-bit integers with these bases.
  u64 d = n - 1;
  int s = 0;
  while ((d & 1) == 0) { d >>= 1; ++s; }
  auto mulm = [n](u64 a, u64 b) { return static_cast<u64>(static_cast<u128>(a) * b % n); };
  for (u64 a : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) {
    u64 x = 1, base = a, e = d;
    while (e) { if (e & 1) x = mulm(x, base); base = mulm(base, base); e >>= 1; }
    if (x == 1 || x == n - 1) continue;
    bool composite = true;
    for (int r = 1; r < s; ++r) {
      x = mulm(x, x);
      if (x == n - 1) { composite = false; break; }
    }
    if (composite) return false;
  }
  return true;
}

std::vector<u64> generate_ntt_primes(int bits, std::size_t count, u64 n,
                                     const std::vector<u64>& exclude) {
  if (bits < 10 || bits > kMaxModulusBits)
    throw std::invalid_argument("prime size " + std::to_string(bits) + " bits is outside [10, " +
                                std::to_string(kMaxModulusBits) + "]");
  const u64 step = 2 * n;
  const u64 upper = u64{1} << bits, lower = u64{1} << (bits - 1);
  std::vector<u64> primes;
  // Candidates c = k * 2N + 1 in (2^(bits-1), 2^bits), largest first.
  for (u64 k = (upper - 2) / step; k > 0 && k * step + 1 > lower && primes.size() < count; --k) {
    const u64 c = k * step + 1;
    if (is_prime(c) && std::find(exclude.begin(), exclude.end(), c) == exclude.end())
      primes.push_back(c);
  }
  if (primes.size() < count)
    throw std::invalid_argument("not enough " + std::to_string(bits) + "-bit primes = 1 mod " +
                                std::to_string(step));
  return primes;
}

u64 primitive_2n_root(u64 q, u64 n) {
  const Modulus m(q);
  const u64 order = 2 * n;
  if ((q - 1) % order != 0) throw std::invalid_argument("q is not 1 mod 2N");
  const u64 cofactor = (q - 1) / order;
  u64 best = 0;
  for (u64 g = 2; g < q; ++g) {
    const u64 r = pow_mod(g, cofactor, m);
    if (pow_mod(r, n, m) == q - 1) { best = r; break; }  // order exactly 2N
  }
  if (best == 0) throw std::runtime_error("no primitive root found");
  // Pick the smallest primitive 2N-th root: they are best^k for odd k.
  u64 smallest = best, cur = best;
  const u64 sq = mul_mod(best, best, m);
  for (u64 k = 1; k < order; k += 2) {
    smallest = std::min(smallest, cur);
    cur = mul_mod(cur, sq, m);
  }
  return smallest;
}

}  // namespace pfhe::ring
