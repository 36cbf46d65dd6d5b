// CKKS parameter sets: ring degree, the q chain, the special primes P and the number of
// key-switching digits. Construction validates everything and checks 128-bit security
// against the HomomorphicEncryption.org table; small test rings must go through the
// explicitly named insecure factory.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace pfhe::ckks {

enum class SecretDistribution : std::uint8_t { kTernaryUniform = 0, kTernaryHamming = 1 };

struct ParameterSpec {
  int log_n = 0;
  std::vector<int> q_bits;  // q_0 (base prime, holds the final result) first, then one prime per level
  std::vector<int> p_bits;  // special primes for hybrid key switching
  // Number of key-switching digits. 0: each digit takes as many primes, from q_0 up, as
  // stay 10 bits below P (else merely below P): the fewest digits at every level, which
  // matters when prime sizes differ along the chain (a bootstrapping chain's 40-bit
  // computation primes under 50-60-bit ones). An explicit count cuts the chain into that
  // many equal runs of primes, accepted while every digit is at most one bit above P;
  // closer to P costs precision in every rotation/relinearization.
  int dnum = 0;
  // With dnum = 0: the headroom, in bits, the digits keep below P (10 keeps the
  // key-switching noise below the ModDown rounding noise; bootstrapping, whose rescale
  // noise dominates, takes 0 for fewer digits).
  double digit_headroom_bits = 10;
  SecretDistribution secret = SecretDistribution::kTernaryUniform;
  int hamming_weight = 0;     // only with kTernaryHamming
  double default_scale = 0;   // 0: 2^(q_bits[1]) (or 2^(q_bits[0]-20) with a single prime)
};

// Largest log2(QP) with 128-bit security for a uniform ternary secret (HE standard for
// N = 2^12..2^15; the extension used by OpenFHE for 2^16 and 2^17). 0 if not tabulated.
int max_log_qp_128(int log_n);

class Parameters {
 public:
  // Refuses (std::invalid_argument, naming the limit) any set below 128-bit security.
  static Parameters create(const ParameterSpec& spec);
  // For tests only: no security check, and the resulting set is marked insecure (the mark
  // is part of the fingerprint, and the CLI refuses such sets).
  static Parameters create_insecure_for_testing(const ParameterSpec& spec);

  // Re-creates a set from explicit primes (loading): same checks as create unless insecure.
  // `primes_per_digit` (a stored set's digits) fixes the digits; empty: `dnum` decides as
  // in ParameterSpec.
  static Parameters from_primes(int log_n, std::vector<std::uint64_t> q, std::vector<std::uint64_t> p,
                                int dnum, SecretDistribution secret, int hamming_weight,
                                double default_scale, bool insecure, double digit_headroom_bits = 10,
                                const std::vector<std::size_t>& primes_per_digit = {});

  int log_n() const { return log_n_; }
  std::size_t n() const { return std::size_t{1} << log_n_; }
  std::size_t max_slots() const { return n() / 2; }
  std::size_t max_level() const { return q_.size() - 1; }
  const std::vector<std::uint64_t>& q() const { return q_; }
  const std::vector<std::uint64_t>& p() const { return p_; }
  // Key-switching digits: digit j covers q_{digit_begin(j)} .. q_{digit_begin(j + 1) - 1}.
  // The cut is fixed for the chain (a key made at a level truncates to any level below);
  // at a level, the digits are those starting at or below it, the last one truncated.
  int dnum() const { return static_cast<int>(digit_begins_.size()); }
  std::size_t digit_begin(std::size_t j) const { return digit_begins_[j]; }
  std::size_t digit_end(std::size_t j, std::size_t level) const {
    return std::min(j + 1 < digit_begins_.size() ? digit_begins_[j + 1] : q_.size(), level + 1);
  }
  std::size_t digits_at(std::size_t level) const {
    return static_cast<std::size_t>(std::upper_bound(digit_begins_.begin(), digit_begins_.end(), level) -
                                    digit_begins_.begin());
  }
  std::vector<std::size_t> digit_primes() const;  // primes per digit
  SecretDistribution secret() const { return secret_; }
  int hamming_weight() const { return hamming_weight_; }
  double default_scale() const { return default_scale_; }
  bool insecure() const { return insecure_; }
  double log2_q() const;
  double log2_qp() const;
  std::uint64_t fingerprint() const { return fingerprint_; }
  std::string describe() const;

 private:
  Parameters() = default;
  void validate_moduli() const;
  void validate() const;
  void compute_fingerprint();

  int log_n_ = 0;
  std::vector<std::uint64_t> q_, p_;
  std::vector<std::size_t> digit_begins_;
  SecretDistribution secret_ = SecretDistribution::kTernaryUniform;
  int hamming_weight_ = 0;
  double default_scale_ = 0;
  bool insecure_ = false;
  std::uint64_t fingerprint_ = 0;
};

}  // namespace pfhe::ckks
