// Ring switching from degree N to N/2 (the "half ring"), so that the low levels of a deep
// program run on polynomials half as long. A ciphertext whose slots repeat with period N/4
// encrypts an even polynomial m(X) = m'(X^2). Key-switching it from the secret s to
// t(X) = s'(X^2), s' a secret of the half ring, gives (c0, c1) with c0 + c1 t = m + e;
// the even coefficients of c0 and c1 then form a half-ring ciphertext of m' under s',
// whose slots are the first N/4 slots of the original (the roots of the half ring are the
// squares of the big ring's). No level is consumed.
//
// Security: the switch key is an RLWE sample under t, i.e. two half-ring samples under s',
// so its modulus must meet the half ring's bound: it lives in its own context with the
// half ring's primes (switch_key_parameters), not under the big set's special primes.
#pragma once
#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/keys.h"

namespace pfhe::ckks {

// N/2 with big's q_0..q_level and its first `special_primes` special primes (NTT-friendly
// for N, hence for N/2); the digit count is chosen as for any set. Refused below 128-bit
// security unless big is an insecure test set (then the result is one too).
Parameters half_ring_parameters(const Parameters& big, std::size_t level, std::size_t special_primes);
// The big ring with exactly the half ring's primes: the parameters of the switch key.
Parameters switch_key_parameters(const Parameters& big, std::size_t level, std::size_t special_primes);

// The key from the big secret (any level and special primes of the big set it came from)
// to s'(X^2) over switch_ctx. Throws std::invalid_argument when the contexts do not fit.
SwitchingKey create_ring_switch_key(const Context& switch_ctx, const SecretKey& big_secret, const Context& half_ctx,
                                    const SecretKey& half_secret);

// ct of the big ring at level >= half_ctx's top level with N/4-periodic slots -> the same
// slots in a half-ring ciphertext at half_ctx's top level, same scale.
Ciphertext switch_to_half_ring(const Context& switch_ctx, const Context& half_ctx, const SwitchingKey& key,
                               Ciphertext ct);

}  // namespace pfhe::ckks
