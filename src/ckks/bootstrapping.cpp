#include "ckks/bootstrapping.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <exception>
#include <numbers>
#include <stdexcept>
#include <string>

#include "ckks/key_switch.h"
#include "ckks/ring_switch.h"
#include "ring/modarith.h"
#include "ring/prng.h"
#include "ring/sampler.h"

namespace pfhe::ckks {

namespace {

using Complex = std::complex<double>;

std::size_t ceil_log2(std::size_t v) {
  std::size_t r = 0;
  while ((std::size_t{1} << r) < v) ++r;
  return r;
}

long cyclic(long k, std::size_t slots) {
  const long s = static_cast<long>(slots);
  return ((k % s) + s) % s;
}

// (A o B): B applied first. (AB)[p][p + ka + kb] += a_ka[p] * b_kb[p + ka].
Diagonals compose(const Diagonals& a, const Diagonals& b, std::size_t slots) {
  Diagonals out;
  for (const auto& [ka, da] : a)
    for (const auto& [kb, db] : b) {
      auto& d = out[cyclic(ka + kb, slots)];
      if (d.empty()) d.assign(slots, 0.0);
      for (std::size_t p = 0; p < slots; ++p) d[p] += da[p] * db[(p + static_cast<std::size_t>(ka)) % slots];
    }
  // Butterflies cancel exactly in places (e.g. +h and -h meeting); drop all-zero diagonals
  // so that they cost no rotation.
  for (auto it = out.begin(); it != out.end();) {
    bool zero = true;
    for (const Complex& v : it->second) zero = zero && v == Complex{};
    it = zero ? out.erase(it) : std::next(it);
  }
  return out;
}

// One butterfly stage of the special FFT (half h) on n slots replicated over `slots`.
Diagonals butterfly_stage(const Encoder& encoder, std::size_t n, std::size_t h, std::size_t slots, bool inverse) {
  const auto roots = encoder.fft_stage_roots(h, inverse);
  Diagonals d;
  auto& zero = d[0];
  auto& up = d[cyclic(static_cast<long>(h), slots)];
  auto& down = d[cyclic(-static_cast<long>(h), slots)];
  for (auto* v : {&zero, &up, &down})
    if (v->empty()) v->assign(slots, 0.0);
  for (std::size_t p = 0; p < slots; ++p) {
    const std::size_t j = (p % n) % (2 * h);
    if (j < h) {  // top of a butterfly: reads p and p + h
      zero[p] += inverse ? 0.5 : 1.0;
      up[p] += inverse ? Complex{0.5} : roots[j];
    } else {  // bottom: reads p - h and p
      const Complex w = roots[j - h];
      down[p] += inverse ? w * 0.5 : Complex{1.0};
      zero[p] += inverse ? -w * 0.5 : -w;
    }
  }
  return d;
}

Diagonals diagonal_matrix(std::vector<Complex> values) { return Diagonals{{0, std::move(values)}}; }

// arcsin(s) / (2 pi) by its Taylor polynomial of odd degree `degree` (power basis).
Polynomial arcsine_taylor(int degree) {
  Polynomial p{PolynomialBasis::kPower, std::vector<double>(static_cast<std::size_t>(degree) + 1, 0.0), -1, 1};
  double c = 1;  // (2k)! / (4^k (k!)^2 (2k+1)) for k = 0, 1, ...
  for (int k = 0; 2 * k + 1 <= degree; ++k) {
    p.coeffs[static_cast<std::size_t>(2 * k + 1)] = c / (2 * k + 1) / (2 * std::numbers::pi);
    c *= static_cast<double>(2 * k + 1) / static_cast<double>(2 * k + 2);
  }
  return p;
}

}  // namespace

std::vector<Diagonals> special_fft_stages(const Encoder& encoder, int log_n, std::size_t slots, int groups,
                                          bool inverse) {
  if (log_n < 0 || (std::size_t{1} << log_n) > encoder.context().n() / 2)
    throw std::invalid_argument("special_fft_stages: invalid slot counts");
  const std::size_t n = std::size_t{1} << log_n;
  if (slots % n != 0 || slots > encoder.context().n() / 2)
    throw std::invalid_argument("special_fft_stages: invalid slot counts");
  if (groups < 1 || groups > std::max(1, log_n))
    throw std::invalid_argument("special_fft_stages: " + std::to_string(groups) + " groups for " +
                                std::to_string(log_n) + " butterfly stages");
  // Butterfly halves in evaluation order: the forward transform (on bit-reversed input)
  // runs h = 1, 2, ..., n/2; the inverse n/2, ..., 1.
  std::vector<std::size_t> halves;
  for (std::size_t h = 1; h < n; h <<= 1) halves.push_back(h);
  if (inverse) std::reverse(halves.begin(), halves.end());
  std::vector<Diagonals> out;
  std::size_t next = 0;
  for (int g = 0; g < groups; ++g) {
    // The first (stages % groups) groups take one stage more.
    const std::size_t count = halves.size() / static_cast<std::size_t>(groups) +
                              (static_cast<std::size_t>(g) < halves.size() % static_cast<std::size_t>(groups) ? 1 : 0);
    Diagonals group = diagonal_matrix(std::vector<Complex>(slots, 1.0));
    for (std::size_t s = 0; s < count; ++s, ++next)
      group = compose(butterfly_stage(encoder, n, halves[next], slots, inverse), group, slots);
    out.push_back(std::move(group));
  }
  return out;
}

std::size_t BootstrapConfig::eval_mod_depth() const {
  const auto poly_depth = [](int degree) {
    return std::max<std::size_t>(1, ceil_log2(static_cast<std::size_t>(degree) + 1));
  };
  return poly_depth(cosine_degree) + static_cast<std::size_t>(double_angles) +
         (arcsine_degree > 0 ? poly_depth(arcsine_degree) : 0);
}

namespace {
// EvalMod's scale: its input noise is multiplied by 2 pi K and by the message ratio (see
// docs/BOOTSTRAPPING.md), so it gets large primes.
// CoeffsToSlots' rescaling noise is relative to its ciphertexts' scale (q0 K and up), not
// to its primes, which set the diagonals' scale (the prime times the stage's step, about 2):
// primes the IFMA NTT takes (< 2^50), like the special primes.
constexpr int kEvalModBits = 60;
constexpr int kCoeffsToSlotsBits = 50;
constexpr int kSpecialBits = 50;
// Both errors above are multiplied by the message ratio (the diagonals' rounding acts on
// the integer part q0 I, 2^(ratio + 4) times the message). Above 2^12 they are the largest
// left, so both primes grow: EvalMod's to the most the NTT takes (61 bits), CoeffsToSlots'
// to 52 bits, which puts the diagonals at 2^53, the precision of the double-precision
// encoding they come from. Measured at N = 2^16 (docs/BENCHMARKS.md, "CoeffsToSlots and
// EvalMod primes"): ratio 2^14 24.2 / 21.2 -> 25.2 / 22.0 mean / worst bits, same digits
// and keys; one thread unchanged within noise, CoeffsToSlots on two threads +7-16 % (its
// three 52-bit limbs take 64-bit lanes instead of IFMA); ratio 2^10 with the arcsine 25.6
// bits either way, but 7 digits for 6.
constexpr int kLargeRatioBits = 12;
constexpr int kLargeRatioEvalModBits = ring::kMaxModulusBits;
constexpr int kLargeRatioCoeffsToSlotsBits = 52;
}  // namespace

ParameterSpec bootstrap_parameter_spec(int log_n, int compute_levels, const BootstrapConfig& config, int scale_bits,
                                       int log_message_ratio) {
  if (compute_levels < 0 || scale_bits < 20 || scale_bits > 50)
    throw std::invalid_argument("bootstrap parameters: compute levels >= 0 and a scale of 20..50 bits");
  if (log_message_ratio < 4 || scale_bits + log_message_ratio > 60)
    throw std::invalid_argument("bootstrap parameters: log2(q0 / scale) must be in [4, 60 - scale bits]");
  ParameterSpec spec;
  spec.log_n = log_n;
  spec.q_bits.push_back(scale_bits + log_message_ratio);
  const auto stc = [&] { spec.q_bits.insert(spec.q_bits.end(), static_cast<std::size_t>(config.stc_stages), scale_bits + 2); };
  if (config.slots_to_coeffs_first) stc();
  spec.q_bits.insert(spec.q_bits.end(), static_cast<std::size_t>(compute_levels), scale_bits);
  if (!config.slots_to_coeffs_first) stc();
  const bool large_ratio = log_message_ratio > kLargeRatioBits;
  spec.q_bits.insert(spec.q_bits.end(), config.eval_mod_depth(), large_ratio ? kLargeRatioEvalModBits : kEvalModBits);
  spec.q_bits.insert(spec.q_bits.end(), static_cast<std::size_t>(config.cts_stages),
                     large_ratio ? kLargeRatioCoeffsToSlotsBits : kCoeffsToSlotsBits);
  int log_q = 0;
  for (int b : spec.q_bits) log_q += b;
  const int room = max_log_qp_128(log_n) - log_q;
  if (room < kSpecialBits)
    throw std::invalid_argument("bootstrap parameters: log2(Q) = " + std::to_string(log_q) + " leaves no room for a " +
                                "special prime below the 128-bit bound " + std::to_string(max_log_qp_128(log_n)) +
                                " (fewer computation levels or a larger ring)");
  // As many special-prime bits as fit: c primes of kSpecialBits, or c + 1 slightly smaller.
  const int count = room / kSpecialBits, more_bits = room / (count + 1);
  if ((count + 1) * more_bits > count * kSpecialBits) spec.p_bits.assign(static_cast<std::size_t>(count + 1), more_bits);
  else spec.p_bits.assign(static_cast<std::size_t>(count), kSpecialBits);
  // Digits up to P: the key-switching noise stays far below the rescaling noise of a dense
  // secret at these scales, and fewer digits make every rotation cheaper.
  spec.digit_headroom_bits = 0;
  spec.default_scale = std::ldexp(1.0, scale_bits);
  return spec;
}

void Bootstrapper::check_config() const {
  const Context& ctx = encoder_.context();
  const int log_half = ctx.params().log_n() - 1;
  const auto fail = [](const std::string& what) { throw std::invalid_argument("bootstrapping: " + what); };
  if (config_.log_slots < 0 || config_.log_slots > log_half)
    fail("log_slots " + std::to_string(config_.log_slots) + " outside [0, " + std::to_string(log_half) + "]");
  const int butterflies = std::max(1, config_.log_slots);
  if (config_.cts_stages < 1 || config_.cts_stages > butterflies || config_.stc_stages < 1 ||
      config_.stc_stages > butterflies)
    fail("CoeffsToSlots / SlotsToCoeffs need 1.." + std::to_string(butterflies) + " stages for 2^" +
         std::to_string(config_.log_slots) + " slots");
  if (!(config_.k_range >= 1) || !std::isfinite(config_.k_range)) fail("k_range must be >= 1");
  if (config_.cosine_degree < 2 || config_.cosine_degree > 1024) fail("cosine_degree must be in [2, 1024]");
  if (config_.double_angles < 0 || config_.double_angles > 16) fail("double_angles must be in [0, 16]");
  if (config_.arcsine_degree != 0 && (config_.arcsine_degree < 3 || config_.arcsine_degree % 2 == 0 ||
                                      config_.arcsine_degree > 63))
    fail("arcsine_degree must be 0 or odd in [3, 63]");
  if (config_.output_scale < 0 || !std::isfinite(config_.output_scale)) fail("output_scale must be positive");
  if (config_.ephemeral_weight < 0 || static_cast<std::size_t>(config_.ephemeral_weight) > ctx.n())
    fail("ephemeral_weight must be in [0, N]");
  if (config_.ephemeral_weight > 0 && ctx.params().p().empty()) fail("encapsulation needs a special prime");
  if (config_.baby_step_shift < 0 || config_.baby_step_shift > log_half)
    fail("baby_step_shift must be in [0, log2(N/2)]");
  if (config_.depth() >= ctx.max_level() + 1)
    fail("needs " + std::to_string(config_.depth()) + " levels above level 0, the chain has " +
         std::to_string(ctx.max_level()));
}

std::size_t Bootstrapper::baby_steps(const Diagonals& stage, std::size_t width) const {
  std::vector<long> indices;
  for (const auto& [k, values] : stage) indices.push_back(k);
  return std::max<std::size_t>(1, LinearTransform::optimal_baby_steps(indices, width) >> config_.baby_step_shift);
}

Bootstrapper::Bootstrapper(const Encoder& encoder, const BootstrapConfig& config)
    : encoder_(encoder), config_(config) {
  check_config();
  const Context& ctx = encoder.context();
  const std::size_t n = slots(), top = ctx.max_level();
  packed_ = !config_.slots_to_coeffs_first && 2 * n <= ctx.n() / 2;
  const std::size_t width = packed_ ? 2 * n : n;  // slots the transforms work on
  if (config_.output_scale == 0) config_.output_scale = ctx.params().default_scale();
  if (config_.ephemeral_weight > 0) encapsulation_ = std::make_unique<Context>(encapsulation_parameters(ctx.params()));

  // CoeffsToSlots: the inverse stages; the last one also splits real and imaginary
  // halves: packed, rows [0, n) by 1/2 and [n, 2n) by -i/2 (x + conj(x) is then
  // [Re | Im]); else everything by 1/2 (real part x + conj(x), imaginary i (conj(x) - x)).
  std::vector<Diagonals> cts = special_fft_stages(encoder, config_.log_slots, width, config_.cts_stages, true);
  std::vector<Complex> split(width, 0.5);
  if (packed_)
    for (std::size_t p = n; p < width; ++p) split[p] = Complex{0, -0.5};
  cts.back() = compose(diagonal_matrix(split), cts.back(), width);

  // SlotsToCoeffs: the forward stages; packed, the first one reads x[p] = r[p mod n] +
  // i r[p mod n + n] from the 2n real slots [Re | Im] (the output is replicated).
  std::vector<Diagonals> stc = special_fft_stages(encoder, config_.log_slots, width, config_.stc_stages, false);
  if (packed_) {
    Diagonals join;
    join[0].assign(width, 1.0);
    join[static_cast<long>(n)].assign(width, Complex{0, 1});
    for (std::size_t p = n; p < width; ++p) {
      join[0][p] = Complex{0, 1};
      join[static_cast<long>(n)][p] = 1.0;
    }
    stc.front() = compose(stc.front(), join, width);
  }

  // Scales: mod_raise leaves t / (q0 K g) in the slots at scale q0 K g (g: the trace's
  // factor). EvalMod wants a scale near its primes: CoeffsToSlots moves there in equal
  // factors per stage (an uneven split would cost one stage's diagonals their precision).
  const double raised_scale = static_cast<double>(ctx.ring_q().modulus(0).value()) * config_.k_range *
                              static_cast<double>(ctx.n() / (2 * n));
  const double eval_mod_scale = static_cast<double>(ctx.ring_q().modulus(top - cts.size()).value());
  const double cts_step = std::pow(eval_mod_scale / raised_scale, 1.0 / static_cast<double>(cts.size()));
  for (std::size_t i = 0; i < cts.size(); ++i) {
    const std::size_t level = top - i;
    const double q = static_cast<double>(ctx.ring_q().modulus(level).value());
    cts_.emplace_back(encoder, cts[i], width, level, baby_steps(cts[i], width), q * cts_step, config_.storage,
                      config_.giant_steps);
  }
  // Standard order: EvalMod ends near the scale of its last prime; relabelled so that the
  // slots read as the message's coefficients (see bootstrap), that is stc_input_scale_ for
  // an input at the output scale. SlotsToCoeffs moves from there to the output scale in
  // equal factors. SlotsToCoeffs first: its stages keep the input's scale.
  const std::size_t stc_top =
      config_.slots_to_coeffs_first ? stc.size() : top - cts.size() - config_.eval_mod_depth();
  const double q0 = static_cast<double>(ctx.ring_q().modulus(0).value());
  stc_input_scale_ = static_cast<double>(ctx.ring_q().modulus(stc_top + 1).value()) * config_.output_scale *
                     eval_mod_factor() / q0;
  const double stc_step =
      config_.slots_to_coeffs_first
          ? 1.0
          : std::pow(config_.output_scale / stc_input_scale_, 1.0 / static_cast<double>(stc.size()));
  for (std::size_t i = 0; i < stc.size(); ++i) {
    const double q = static_cast<double>(ctx.ring_q().modulus(stc_top - i).value());
    stc_.emplace_back(encoder, stc[i], width, stc_top - i, baby_steps(stc[i], width), q * stc_step, config_.storage,
                      config_.giant_steps);
  }

  cosine_ = chebyshev_interpolate(
      [&](double u) {
        return std::cos(2 * std::numbers::pi * (config_.k_range * u - 0.25) / std::ldexp(1.0, config_.double_angles));
      },
      static_cast<std::size_t>(config_.cosine_degree), -1, 1);
  if (config_.arcsine_degree > 0) arcsine_ = arcsine_taylor(config_.arcsine_degree);

  for (const auto& lt : cts_)
    for (long step : lt.rotation_steps()) rotation_levels_[step] = std::max(rotation_levels_[step], lt.level());
  for (const auto& lt : stc_)
    for (long step : lt.rotation_steps()) rotation_levels_[step] = std::max(rotation_levels_[step], lt.level());
  // The trace's rotations (full-slot steps n, 2n, ..., N/4) at the top level.
  for (std::size_t step = n; step < ctx.n() / 2; step <<= 1) rotation_levels_[static_cast<long>(step)] = top;
}

double Bootstrapper::eval_mod_factor() const { return config_.arcsine_degree > 0 ? 1.0 : 2 * std::numbers::pi; }

std::size_t Bootstrapper::output_level() const {
  const std::size_t after_eval_mod = encoder_.context().max_level() - cts_.size() - config_.eval_mod_depth();
  return config_.slots_to_coeffs_first ? after_eval_mod : after_eval_mod - stc_.size();
}

std::size_t Bootstrapper::input_level() const { return config_.slots_to_coeffs_first ? stc_.size() : 0; }

GaloisKeys Bootstrapper::create_galois_keys(const KeyGenerator& keygen, const std::map<long, std::size_t>& also) const {
  std::map<long, std::size_t> levels = rotation_levels_;
  for (const auto& [step, level] : also) levels[step] = std::max(levels[step], level);
  GaloisKeys keys = keygen.create_galois_keys(levels);
  const Context& ctx = encoder_.context();
  keys.keys.emplace(galois_element_conjugate(ctx.n()),
                    keygen.create_galois_key(galois_element_conjugate(ctx.n()), conjugation_level()));
  return keys;
}

std::size_t Bootstrapper::conjugation_level() const { return encoder_.context().max_level() - cts_.size(); }

std::size_t Bootstrapper::cts_rotations() const {
  std::size_t r = 0;
  for (const auto& lt : cts_) r += lt.baby_rotations() + lt.giant_rotations();
  return r;
}

std::size_t Bootstrapper::stc_rotations() const {
  std::size_t r = 0;
  for (const auto& lt : stc_) r += lt.baby_rotations() + lt.giant_rotations();
  return r;
}

EncapsulationKeys Bootstrapper::create_encapsulation_keys(const KeyGenerator& keygen) const {
  if (!encapsulation_) throw std::invalid_argument("bootstrapping: encapsulation keys need ephemeral_weight > 0");
  const Context& ctx = encoder_.context();
  const SecretKey& s = keygen.secret_key();
  if (s.s.q.n() != ctx.n() || s.s.q.limbs() != ctx.max_level() + 1)
    throw std::invalid_argument("bootstrapping: the key generator belongs to another context");
  return ckks::create_encapsulation_keys(keygen, *encapsulation_, config_.ephemeral_weight);
}

Parameters encapsulation_parameters(const Parameters& params) {
  // q0 and the fewest special primes whose product exceeds it (one digit): the smallest
  // modulus the key to the sparse secret can live in.
  const auto& p = params.p();
  if (p.empty()) throw std::invalid_argument("encapsulation needs a special prime");
  std::size_t special = 1;
  double log_p = std::log2(static_cast<double>(p[0]));
  while (log_p < std::log2(static_cast<double>(params.q()[0])) && special < p.size())
    log_p += std::log2(static_cast<double>(p[special++]));
  return switch_key_parameters(params, 0, special);
}

EncapsulationKeys create_encapsulation_keys(const KeyGenerator& keygen, const Context& encapsulation,
                                            int ephemeral_weight) {
  const Context& ctx = keygen.context();
  if (ephemeral_weight <= 0 || static_cast<std::size_t>(ephemeral_weight) > ctx.n())
    throw std::invalid_argument("encapsulation: the ephemeral weight must be in [1, N]");
  if (encapsulation.params().fingerprint() != encapsulation_parameters(ctx.params()).fingerprint())
    throw std::invalid_argument("encapsulation: the context is not the one of these parameters");
  const SecretKey& s = keygen.secret_key();
  ring::Prng prng(ring::random_seed());
  const std::vector<std::int64_t> sparse =
      ring::sample_ternary_hamming(prng, ctx.n(), static_cast<std::size_t>(ephemeral_weight));
  // s -> s' over q0 * p0: the main secret restricted to those primes switches to s'.
  SecretKey low{QPPoly{s.s.q, s.s.p}};
  low.s.q.truncate(1);
  low.s.p.truncate(encapsulation.ring_p().size());
  const KeyGenerator low_keygen(encapsulation, low);
  EncapsulationKeys keys;
  keys.to_sparse = low_keygen.create_switching_key(low.s.q, encapsulation.small_qp_poly(sparse, 1), 0);
  keys.to_dense = keygen.create_switching_key(ctx.small_poly(sparse, ctx.max_level() + 1), ctx.max_level());
  return keys;
}

void save_bootstrap_config(ByteWriter& w, const BootstrapConfig& c) {
  for (const int v : {c.log_slots, c.cts_stages, c.stc_stages, c.cosine_degree, c.double_angles, c.arcsine_degree,
                      c.ephemeral_weight})
    w.put<std::uint32_t>(static_cast<std::uint32_t>(v));
  w.put<double>(c.k_range);
  w.put<double>(c.output_scale);
  w.put<std::uint8_t>(c.slots_to_coeffs_first ? 1 : 0);
  w.put<std::uint8_t>(c.storage == DiagonalStorage::kJustInTime ? 1 : 0);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(c.giant_steps));
  w.put<std::uint8_t>(static_cast<std::uint8_t>(c.baby_step_shift));
}

BootstrapConfig load_bootstrap_config(ByteReader& r) {
  const char* what = "bootstrapping configuration";
  BootstrapConfig c;
  for (int* v : {&c.log_slots, &c.cts_stages, &c.stc_stages, &c.cosine_degree, &c.double_angles, &c.arcsine_degree,
                 &c.ephemeral_weight}) {
    const auto x = r.get<std::uint32_t>(what);
    if (x > (1u << 17)) throw SerializationError(std::string(what) + ": a field out of range");
    *v = static_cast<int>(x);
  }
  c.k_range = r.get<double>(what);
  c.output_scale = r.get<double>(what);
  const auto order = r.get<std::uint8_t>(what), storage = r.get<std::uint8_t>(what);
  const auto giant_steps = r.get<std::uint8_t>(what), baby_step_shift = r.get<std::uint8_t>(what);
  if (order > 1 || storage > 1 || giant_steps > 1 || baby_step_shift > 16 || !std::isfinite(c.k_range) ||
      !std::isfinite(c.output_scale))
    throw SerializationError(std::string(what) + ": a field out of range");
  c.baby_step_shift = baby_step_shift;
  c.slots_to_coeffs_first = order == 1;
  c.storage = storage == 1 ? DiagonalStorage::kJustInTime : DiagonalStorage::kEncoded;
  c.giant_steps = static_cast<GiantSteps>(giant_steps);
  return c;
}

Ciphertext Bootstrapper::mod_raise(const Ciphertext& ct, const EncapsulationKeys* keys) const {
  const Context& ctx = encoder_.context();
  if (ct.size() != 2 || ct.level() != 0) throw std::invalid_argument("mod_raise: needs a level-0 ciphertext of size 2");
  if ((keys != nullptr) != (encapsulation_ != nullptr))
    throw std::invalid_argument(encapsulation_ ? "bootstrap: this configuration needs the encapsulation keys"
                                               : "bootstrap: encapsulation keys given to a configuration without it");
  const auto& rq = ctx.ring_q();
  Ciphertext low = ct;
  if (keys) {  // to s' (q0 and p0 only: the same limb, a context of its own)
    if (keys->to_sparse.max_level() != 0 || keys->to_dense.max_level() != ctx.max_level())
      throw std::invalid_argument("bootstrap: the encapsulation keys are for other levels");
    ring::Poly k0, k1;
    key_switch_inner(*encapsulation_, decompose(*encapsulation_, low.polys[1]), keys->to_sparse, k0, k1);
    rq.add(low.polys[0], k0, low.polys[0]);
    low.polys[1] = std::move(k1);
  }
  const std::size_t n = ctx.n(), limbs = ctx.max_level() + 1;
  const ring::u64 q0 = rq.modulus(0).value();
  Ciphertext out{{}, low.scale, low.log_slots};
  for (const ring::Poly& c : low.polys) {
    ring::Poly coeffs = c;
    rq.from_ntt(coeffs);
    ring::Poly raised = rq.make_output(limbs, false);
    for (std::size_t l = 0; l < limbs; ++l) {
      const auto& m = rq.modulus(l);
      ring::u64* out_limb = raised.limb(l);
      for (std::size_t j = 0; j < n; ++j)
        out_limb[j] = ring::reduce_signed64(ring::centered(coeffs.limb(0)[j], q0), m);
    }
    rq.to_ntt(raised);
    out.polys.push_back(std::move(raised));
  }
  if (keys) {  // back to s, at the top level
    ring::Poly k0, k1;
    key_switch_inner(ctx, decompose(ctx, out.polys[1]), keys->to_dense, k0, k1);
    rq.add(out.polys[0], k0, out.polys[0]);
    out.polys[1] = std::move(k1);
  }
  return out;
}

Ciphertext Bootstrapper::sub_sum(const Evaluator& eval, Ciphertext ct) const {
  const std::size_t half = encoder_.context().n() / 2;
  const int log_slots = ct.log_slots;
  ct.log_slots = __builtin_ctzll(half);  // rotations by multiples of n act on the full slot view
  for (std::size_t step = slots(); step < half; step <<= 1) eval.add_inplace(ct, eval.rotate(ct, static_cast<long>(step)));
  ct.log_slots = log_slots;
  return ct;
}

Ciphertext Bootstrapper::multiply_by_i(const Evaluator& eval, const Ciphertext& a) const {
  // X^(N/2) multiplies every slot by i (5^j = 1 mod 4): an exact monomial product.
  const Context& ctx = encoder_.context();
  Plaintext monomial{ctx.ring_q().make_poly(a.level() + 1, false), 1.0, a.log_slots};
  for (std::size_t l = 0; l <= a.level(); ++l) monomial.poly.limb(l)[ctx.n() / 2] = 1;
  ctx.ring_q().to_ntt(monomial.poly);
  Ciphertext out = a;
  eval.multiply_plain_inplace(out, monomial);
  return out;
}

std::vector<Ciphertext> Bootstrapper::coeffs_to_slots(const Evaluator& eval, const Ciphertext& raised) const {
  const Context& ctx = encoder_.context();
  if (raised.level() != ctx.max_level() || raised.log_slots != config_.log_slots)
    throw std::invalid_argument("coeffs_to_slots: needs a raised ciphertext of 2^" +
                                std::to_string(config_.log_slots) + " slots at the top level");
  const double trace_factor = static_cast<double>(ctx.n() / (2 * slots()));
  Ciphertext x = raised;
  x.scale = static_cast<double>(ctx.ring_q().modulus(0).value()) * config_.k_range * trace_factor;
  if (trace_factor > 1) x = sub_sum(eval, std::move(x));
  if (packed_) ++x.log_slots;  // the n slots seen replicated in 2n
  for (const auto& lt : cts_) x = lt.apply_rescaled(eval, x);
  const Ciphertext conj = eval.conjugate(x);
  if (packed_) return {eval.add(x, conj)};
  Ciphertext imag = multiply_by_i(eval, eval.sub(conj, x));
  return {eval.add(x, conj), std::move(imag)};
}

Ciphertext Bootstrapper::eval_mod(const Evaluator& eval, const Ciphertext& x, double target_scale) const {
  const auto& rq = encoder_.context().ring_q();
  if (x.level() < config_.eval_mod_depth())
    throw std::invalid_argument("eval_mod: needs " + std::to_string(config_.eval_mod_depth()) + " levels");
  const std::size_t cosine_level = x.level() - cosine_.depth();
  // Without the arcsine step the last double angle ends EvalMod, and each one maps a scale
  // s to s^2 / q: the cosine lands at the scale whose r-th image is the target.
  double cosine_scale = static_cast<double>(rq.modulus(x.level()).value());
  if (config_.arcsine_degree == 0) {
    double log_scale = std::log2(target_scale);
    for (int i = 0; i < config_.double_angles; ++i)
      log_scale += std::ldexp(std::log2(static_cast<double>(rq.modulus(cosine_level - static_cast<std::size_t>(i)).value())),
                              config_.double_angles - 1 - i);
    cosine_scale = std::exp2(std::ldexp(log_scale, -config_.double_angles));
  }
  Ciphertext c = evaluate_polynomial(eval, x, cosine_, cosine_scale);
  for (int r = 0; r < config_.double_angles; ++r) {  // cos 2a = 2 cos^2 a - 1
    c = eval.multiply(c, c);
    eval.multiply_integer_inplace(c, 2);
    eval.relinearize_rescale_inplace(c);
    eval.add_const_inplace(c, -1.0);
  }
  if (config_.arcsine_degree > 0) return evaluate_polynomial(eval, c, arcsine_, target_scale);
  c.scale = target_scale;  // equal up to the rounding of the logarithms above
  return c;
}

Ciphertext Bootstrapper::apply_stc_stages(const Evaluator& eval, Ciphertext x) const {
  for (const auto& lt : stc_) {
    if (x.level() > lt.level()) eval.drop_to_level_inplace(x, lt.level());
    x = lt.apply_rescaled(eval, x);
  }
  return x;
}

Ciphertext Bootstrapper::slots_to_coeffs(const Evaluator& eval, const std::vector<Ciphertext>& parts) const {
  if (config_.slots_to_coeffs_first) throw std::logic_error("slots_to_coeffs: this bootstrapper runs it first");
  if (parts.size() != (packed_ ? 1u : 2u)) throw std::invalid_argument("slots_to_coeffs: wrong number of parts");
  Ciphertext x = parts[0];
  if (!packed_) eval.add_inplace(x, multiply_by_i(eval, parts[1]));
  x = apply_stc_stages(eval, std::move(x));
  if (packed_) --x.log_slots;
  x.scale = config_.output_scale;  // equal up to the rounding of the stage factors
  return x;
}

void Bootstrapper::count_operations(OperationCounts& counts) const {
  const std::size_t top = encoder_.context().max_level();
  if (config_.slots_to_coeffs_first)
    for (const auto& lt : stc_) lt.count_operations(counts, lt.level());
  counts[top].rescales += 1;                   // ModRaise: both polynomials transformed at the top
  if (encapsulation_) counts[top].key_switches += 1;  // back to the dense secret (to s' is on one limb)
  for (std::size_t step = slots(); step < encoder_.context().n() / 2; step <<= 1) counts[top].key_switches += 1;
  for (const auto& lt : cts_) lt.count_operations(counts, lt.level());
  const std::size_t cts_out = cts_.back().level() - 1;
  counts[cts_out].key_switches += 1;  // the conjugation
  const std::size_t parts = config_.slots_to_coeffs_first || !packed_ ? 2 : 1;
  OperationCounts eval_mod;
  count_polynomial(eval_mod, cosine_, cts_out);
  for (int r = 0; r < config_.double_angles; ++r)
    count_product(eval_mod, cts_out - cosine_.depth() - static_cast<std::size_t>(r));
  if (config_.arcsine_degree > 0)
    count_polynomial(eval_mod, arcsine_, cts_out - cosine_.depth() - static_cast<std::size_t>(config_.double_angles));
  counts += repeated(eval_mod, static_cast<double>(parts));
  if (!config_.slots_to_coeffs_first)
    for (const auto& lt : stc_) lt.count_operations(counts, lt.level());
}

Ciphertext Bootstrapper::bootstrap(const Evaluator& eval, const Ciphertext& ct, const EncapsulationKeys* keys,
                                   StepSeconds* times) const {
  if (ct.log_slots != config_.log_slots)
    throw std::invalid_argument("bootstrap: ciphertext has 2^" + std::to_string(ct.log_slots) +
                                " slots, the bootstrapper 2^" + std::to_string(config_.log_slots));
  StepSeconds local;
  StepSeconds& t = times ? *times : local;
  auto start = std::chrono::steady_clock::now();
  const auto lap = [&start](double& into) {
    const auto now = std::chrono::steady_clock::now();
    into = std::chrono::duration<double>(now - start).count();
    start = now;
  };
  Ciphertext low = ct;
  if (config_.slots_to_coeffs_first) {
    if (low.level() < stc_.size())
      throw std::invalid_argument("bootstrap: SlotsToCoeffs first needs the input at level >= " +
                                  std::to_string(stc_.size()) + ", it is at " + std::to_string(low.level()));
    low = apply_stc_stages(eval, std::move(low));  // coefficients = the message's slots
    lap(t.slots_to_coeffs);
  }
  if (low.level() > 0) eval.drop_to_level_inplace(low, 0);
  const double q0 = static_cast<double>(encoder_.context().ring_q().modulus(0).value());
  // EvalMod gives Delta v / q0 (times eval_mod_factor()) for the values v the coefficients
  // held: landing it at this scale makes the slots read as v, at SlotsToCoeffs' input scale
  // (standard order: v are the message's coefficients) or at the output scale (v is the
  // message).
  const double part_scale = config_.slots_to_coeffs_first ? config_.output_scale : stc_input_scale_;
  const double mod_scale = part_scale * q0 / (low.scale * eval_mod_factor());
  const Ciphertext raised = mod_raise(low, keys);
  lap(t.mod_raise);
  std::vector<Ciphertext> parts = coeffs_to_slots(eval, raised);
  lap(t.coeffs_to_slots);
  // Two halves (full slots, or SlotsToCoeffs first): one EvalMod per thread scales
  // better than both threads inside each key switch. Errors cross the parallel region as
  // exception pointers.
  std::vector<std::exception_ptr> errors(parts.size());
  const bool split = parts.size() > 1 && omp_get_max_threads() > 1 && !omp_in_parallel();
#pragma omp parallel for num_threads(2) if (split)
  for (std::size_t i = 0; i < parts.size(); ++i) {
    try {
      parts[i] = eval_mod(eval, parts[i], mod_scale);
      parts[i].scale = part_scale;
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  lap(t.eval_mod);  // (with SlotsToCoeffs first, the exact recombination below is free)
  if (config_.slots_to_coeffs_first) {  // the message's real and imaginary parts
    eval.add_inplace(parts[0], multiply_by_i(eval, parts[1]));
    return parts[0];
  }
  Ciphertext out = slots_to_coeffs(eval, parts);
  lap(t.slots_to_coeffs);
  return out;
}

}  // namespace pfhe::ckks
