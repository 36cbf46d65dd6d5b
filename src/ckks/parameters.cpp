#include "ckks/parameters.h"

#include <openssl/sha.h>

#include <cmath>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>

#include "ring/modarith.h"
#include "ring/primes.h"

namespace pfhe::ckks {

int max_log_qp_128(int log_n) {
  switch (log_n) {
    case 12: return 109;
    case 13: return 218;
    case 14: return 438;
    case 15: return 881;
    case 16: return 1747;
    case 17: return 3523;
    default: return 0;
  }
}

namespace {

// A digit may exceed P by up to one bit: the key-switching noise grows by at most 2x, and
// it lets a 60-bit q_0 pair with a 60-bit special prime (which is necessarily smaller).
constexpr double kDigitSlackBits = 1.0;

double sum_log2(const std::vector<std::uint64_t>& primes, std::size_t begin, std::size_t end) {
  double s = 0;
  for (std::size_t i = begin; i < end; ++i) s += std::log2(static_cast<double>(primes[i]));
  return s;
}

// Digit starts when each digit takes primes from q_0 up while its product stays within
// `bound_bits`; empty if a single prime exceeds it.
std::vector<std::size_t> fill_digits(const std::vector<std::uint64_t>& q, double bound_bits) {
  std::vector<std::size_t> begins;
  for (std::size_t s = 0; s < q.size();) {
    begins.push_back(s);
    double bits = 0;
    const std::size_t start = s;
    while (s < q.size() && bits + std::log2(static_cast<double>(q[s])) <= bound_bits)
      bits += std::log2(static_cast<double>(q[s++]));
    if (s == start) return {};
  }
  return begins;
}

// Digit starts from the number of primes in each digit (a stored set's cut).
std::vector<std::size_t> digit_begins_of(const std::vector<std::size_t>& primes_per_digit, std::size_t nq) {
  std::vector<std::size_t> begins;
  std::size_t s = 0;
  for (std::size_t count : primes_per_digit) {
    if (count == 0 || count > nq - s)
      throw std::invalid_argument("key-switching digits do not cut the q chain into non-empty runs");
    begins.push_back(s);
    s += count;
  }
  if (s != nq) throw std::invalid_argument("key-switching digits do not cover the q chain");
  return begins;
}

// Whether the digits are the equal runs their count alone gives (ceil(nq / count) primes
// each, the last one possibly shorter): what a stored set without its cut means.
bool equal_runs(const std::vector<std::size_t>& begins, std::size_t nq) {
  const std::size_t alpha = (nq + begins.size() - 1) / begins.size();
  for (std::size_t j = 0; j < begins.size(); ++j)
    if (begins[j] != j * alpha) return false;
  return true;
}

// Primes for all requested sizes, largest first within a size, distinct across q and p.
std::vector<std::uint64_t> make_primes(const std::vector<int>& bits, std::size_t n,
                                       std::vector<std::uint64_t>& taken) {
  std::map<int, std::size_t> count;
  for (int b : bits) ++count[b];
  std::map<int, std::vector<std::uint64_t>> pool;
  for (auto [b, c] : count) {
    pool[b] = ring::generate_ntt_primes(b, c, n, taken);
    taken.insert(taken.end(), pool[b].begin(), pool[b].end());
  }
  std::map<int, std::size_t> used;
  std::vector<std::uint64_t> out;
  for (int b : bits) out.push_back(pool[b][used[b]++]);
  return out;
}

}  // namespace

std::vector<std::size_t> Parameters::digit_primes() const {
  std::vector<std::size_t> counts;
  for (std::size_t j = 0; j < digit_begins_.size(); ++j) counts.push_back(digit_end(j, max_level()) - digit_begin(j));
  return counts;
}

double Parameters::log2_q() const { return sum_log2(q_, 0, q_.size()); }
double Parameters::log2_qp() const { return log2_q() + sum_log2(p_, 0, p_.size()); }

Parameters Parameters::from_primes(int log_n, std::vector<std::uint64_t> q, std::vector<std::uint64_t> p,
                                   int dnum, SecretDistribution secret, int hamming_weight,
                                   double default_scale, bool insecure, double digit_headroom_bits,
                                   const std::vector<std::size_t>& primes_per_digit) {
  Parameters params;
  params.log_n_ = log_n;
  params.q_ = std::move(q);
  params.p_ = std::move(p);
  params.secret_ = secret;
  params.hamming_weight_ = hamming_weight;
  params.default_scale_ = default_scale;
  params.insecure_ = insecure;
  if (params.q_.empty()) throw std::invalid_argument("the q chain needs at least one prime");
  if (params.p_.empty()) throw std::invalid_argument("at least one special prime P is needed");
  params.validate_moduli();  // before anything below takes logarithms of the primes
  if (dnum < 0) throw std::invalid_argument("dnum must be positive");
  if (!(digit_headroom_bits >= 0) || !std::isfinite(digit_headroom_bits))
    throw std::invalid_argument("digit headroom must be a finite number of bits >= 0");
  const std::size_t nq = params.q_.size();
  if (!primes_per_digit.empty()) {
    params.digit_begins_ = digit_begins_of(primes_per_digit, nq);
  } else if (dnum > 0) {
    const std::size_t alpha = (nq + static_cast<std::size_t>(dnum) - 1) / static_cast<std::size_t>(dnum);
    for (std::size_t s = 0; s < nq; s += alpha) params.digit_begins_.push_back(s);
  } else {
    // Greedy from q_0 up: the fewest digits at every level. If a single prime is already
    // within the headroom of P, digits merely below P.
    const double log_p = sum_log2(params.p_, 0, params.p_.size());
    params.digit_begins_ = fill_digits(params.q_, log_p - digit_headroom_bits);
    if (params.digit_begins_.empty()) params.digit_begins_ = fill_digits(params.q_, log_p + kDigitSlackBits);
    if (params.digit_begins_.empty())
      throw std::invalid_argument("special primes too small: even one prime per digit exceeds P");
  }
  if (params.default_scale_ == 0) {
    const double bits = nq > 1 ? std::round(std::log2(static_cast<double>(params.q_[1])))
                               : std::round(std::log2(static_cast<double>(params.q_[0]))) - 20;
    params.default_scale_ = std::ldexp(1.0, static_cast<int>(bits));
  }
  params.validate();
  params.compute_fingerprint();
  return params;
}

Parameters Parameters::create(const ParameterSpec& spec) {
  if (spec.log_n < 12 || spec.log_n > 17)
    throw std::invalid_argument("log N = " + std::to_string(spec.log_n) +
                                " is outside the 128-bit secure range 12..17");
  std::vector<std::uint64_t> taken;
  const std::size_t n = std::size_t{1} << spec.log_n;
  auto q = make_primes(spec.q_bits, n, taken);
  auto p = make_primes(spec.p_bits, n, taken);
  return from_primes(spec.log_n, std::move(q), std::move(p), spec.dnum, spec.secret,
                     spec.hamming_weight, spec.default_scale, false, spec.digit_headroom_bits);
}

Parameters Parameters::create_insecure_for_testing(const ParameterSpec& spec) {
  if (spec.log_n < 4 || spec.log_n > 17)
    throw std::invalid_argument("log N must be in 4..17");
  std::vector<std::uint64_t> taken;
  const std::size_t n = std::size_t{1} << spec.log_n;
  auto q = make_primes(spec.q_bits, n, taken);
  auto p = make_primes(spec.p_bits, n, taken);
  return from_primes(spec.log_n, std::move(q), std::move(p), spec.dnum, spec.secret,
                     spec.hamming_weight, spec.default_scale, true, spec.digit_headroom_bits);
}

void Parameters::validate_moduli() const {
  const std::size_t n = this->n();
  if (log_n_ < 4 || log_n_ > 17) throw std::invalid_argument("log N must be in 4..17");
  std::vector<std::uint64_t> all = q_;
  all.insert(all.end(), p_.begin(), p_.end());
  for (std::size_t i = 0; i < all.size(); ++i) {
    const std::uint64_t v = all[i];
    if (v < 2 || 64 - __builtin_clzll(v) > ring::kMaxModulusBits || !ring::is_prime(v) ||
        (v - 1) % (2 * n) != 0)
      throw std::invalid_argument("modulus " + std::to_string(v) + " is not a prime = 1 mod 2N below 2^" +
                                  std::to_string(ring::kMaxModulusBits));
    for (std::size_t j = 0; j < i; ++j)
      if (all[j] == v) throw std::invalid_argument("modulus " + std::to_string(v) + " appears twice");
  }
}

void Parameters::validate() const {
  const std::size_t n = this->n();
  if (secret_ == SecretDistribution::kTernaryHamming) {
    if (hamming_weight_ < 1 || static_cast<std::size_t>(hamming_weight_) > n)
      throw std::invalid_argument("Hamming weight must be in [1, N]");
    // Decision: the HE-standard table assumes a uniform ternary secret; sparse secrets are
    // weaker than the table says, so they are only available on insecure test sets.
    if (!insecure_)
      throw std::invalid_argument(
          "fixed-Hamming-weight secrets are not covered by the 128-bit table; use a uniform "
          "ternary secret");
  } else if (secret_ != SecretDistribution::kTernaryUniform) {
    throw std::invalid_argument("unknown secret distribution");
  }
  if (!(default_scale_ > 1.0) || !std::isfinite(default_scale_))
    throw std::invalid_argument("default scale must be a finite number > 1");
  const double log_p = sum_log2(p_, 0, p_.size());
  for (std::size_t j = 0; j < digit_begins_.size(); ++j) {
    const double digit = sum_log2(q_, digit_begin(j), digit_end(j, max_level()));
    if (digit > log_p + kDigitSlackBits)
      throw std::invalid_argument("key-switching digit of " + std::to_string(digit) +
                                  " bits exceeds log2(P) = " + std::to_string(log_p) +
                                  "; raise dnum or add special primes");
  }
  if (!insecure_) {
    const int limit = max_log_qp_128(log_n_);
    if (limit == 0)
      throw std::invalid_argument("log N = " + std::to_string(log_n_) + " has no 128-bit entry");
    if (log2_qp() > limit)
      throw std::invalid_argument("log2(QP) = " + std::to_string(log2_qp()) +
                                  " exceeds the 128-bit security limit " + std::to_string(limit) +
                                  " for N = 2^" + std::to_string(log_n_) +
                                  " (HomomorphicEncryption.org standard)");
  }
}

void Parameters::compute_fingerprint() {
  std::ostringstream s;
  s << "pfhe-ckks-params-v1|" << log_n_ << "|q";
  for (auto v : q_) s << ':' << v;
  s << "|p";
  for (auto v : p_) s << ':' << v;
  s << "|dnum:" << dnum();
  // Sets whose digits are equal runs (every set before digits could differ) keep the
  // fingerprint they had; any other cut is part of it.
  if (!equal_runs(digit_begins_, q_.size())) {
    s << "|digits";
    for (std::size_t count : digit_primes()) s << ':' << count;
  }
  s << "|secret:" << static_cast<int>(secret_) << ':' << hamming_weight_
    << "|insecure:" << insecure_;
  const std::string text = s.str();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  std::memcpy(&fingerprint_, digest, sizeof fingerprint_);
}

std::string Parameters::describe() const {
  std::ostringstream s;
  s << "N=2^" << log_n_ << ", levels=" << max_level() << ", log2(Q)=" << log2_q()
    << ", |P|=" << p_.size() << ", log2(QP)=" << log2_qp() << ", dnum=" << dnum()
    << ", scale=2^" << std::log2(default_scale_) << (insecure_ ? " [INSECURE TEST SET]" : "");
  return s.str();
}

}  // namespace pfhe::ckks
