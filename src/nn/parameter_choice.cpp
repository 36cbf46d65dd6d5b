#include "nn/parameter_choice.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "ckks/ring_switch.h"
#include "nn/compiled_graph.h"
#include "nn/fit.h"
#include "nn/noise_estimate.h"

namespace pfhe::nn {

std::size_t required_levels(const PatchCNN& model) {
  model.validate();
  // conv0, then per block HerPN + conv + HerPN + conv (the shortcut runs beside them),
  // then the pooling HerPN and the fused pool/BatchNorm1d/head transform; + 5 for
  // normalisation (square, degree-2 polynomial, product) and matching (square) unless the
  // model is a classifier.
  return 1 + 4 * model.backbones.front().blocks.size() + 2 + (model.classifier ? 0 : 5);
}

int base_bits_for_range(double max_abs, int scale_bits, double headroom_factor) {
  if (!(max_abs >= 0) || !std::isfinite(max_abs) || !(headroom_factor >= 1))
    throw std::invalid_argument("base_bits_for_range: invalid range or headroom");
  const double needed = static_cast<double>(scale_bits) + 1 + std::ceil(std::log2(std::max(max_abs * headroom_factor, 1.0)));
  if (needed > 60)
    throw std::invalid_argument("values up to " + std::to_string(max_abs) + " need a " + std::to_string(needed) +
                                "-bit q_0 at scale 2^" + std::to_string(scale_bits) + " (at most 60): use a smaller scale");
  return std::max(kDefaultBaseBits, static_cast<int>(needed));
}

ckks::ParameterSpec choose_parameters(std::size_t levels, int scale_bits, int base_bits, int min_log_n, int max_log_n) {
  if (levels == 0 || levels > 64) throw std::invalid_argument("choose_parameters: unsupported level count");
  const int q_total = base_bits + static_cast<int>(levels) * scale_bits;
  for (int log_n = std::max(min_log_n, 13); log_n <= std::min(max_log_n, 17); ++log_n) {
    const int limit = ckks::max_log_qp_128(log_n);
    // Among the special-prime counts that fit, the one with the smallest switching keys:
    // dnum x (levels + 1 + |P|) limbs per key polynomial (dnum follows from |P|).
    std::optional<ckks::ParameterSpec> best;
    std::size_t best_limbs = SIZE_MAX;
    for (int p_count = 1; q_total + p_count * base_bits <= limit; ++p_count) {
      ckks::ParameterSpec spec;
      spec.log_n = log_n;
      spec.q_bits.push_back(base_bits);
      spec.q_bits.insert(spec.q_bits.end(), levels, scale_bits);
      spec.p_bits.assign(static_cast<std::size_t>(p_count), base_bits);
      try {
        const ckks::Parameters params = ckks::Parameters::create(spec);
        const std::size_t limbs = static_cast<std::size_t>(params.dnum()) * (levels + 1 + static_cast<std::size_t>(p_count));
        if (limbs < best_limbs) {
          best_limbs = limbs;
          best = spec;
        }
      } catch (const std::invalid_argument&) {
        // digits too large for this P: more special primes are needed
      }
    }
    if (best) return *best;
  }
  throw std::invalid_argument("choose_parameters: " + std::to_string(levels) + " levels do not fit any ring up to 2^" +
                              std::to_string(std::min(max_log_n, 17)) + " at 128-bit security");
}

ckks::ParameterSpec parameters_for(const PatchCNN& model) { return choose_parameters(required_levels(model)); }


double output_bound(const PatchCNN& model, const FitReport& ranges) {
  const std::string output = model.classifier ? "embedding" : "normalized embedding";
  const auto it = std::find_if(ranges.ranges.begin(), ranges.ranges.end(),
                               [&](const LayerRange& r) { return r.name == output; });
  if (it == ranges.ranges.end()) throw std::logic_error("output_bound: the ranges do not include the model output");
  // A match score, |p - g|^2 - T for embeddings of norm ~1, stays near 4 in magnitude.
  return model.classifier ? it->max_abs : std::max(it->max_abs, 4.0);
}

void check_target_bits(double target_bits, double margin_bits) {
  if (!(target_bits > 0 && target_bits <= 40) || !(margin_bits >= 0))
    throw std::invalid_argument("precision target must be in (0, 40] bits");
}

PrecisionChoice smallest_scale_reaching(const std::function<PrecisionChoice(int scale_bits)>& at, double target_bits,
                                        double margin_bits, const char* how, bool walk_down) {
  check_target_bits(target_bits, margin_bits);
  const double wanted = target_bits + margin_bits;
  // About one bit of precision per bit of scale: start from the guess the default scale
  // gives, then walk to the smallest scale that reaches the target.
  const PrecisionChoice reference = at(kDefaultScaleBits);
  int s = std::clamp(static_cast<int>(std::ceil(kDefaultScaleBits + wanted - reference.estimated_bits)), kMinScaleBits,
                     kMaxScaleBits);
  PrecisionChoice c = s == kDefaultScaleBits ? reference : at(s);
  while (c.estimated_bits < wanted) {
    if (s == kMaxScaleBits) {
      char text[200];
      std::snprintf(text, sizeof text,
                    "precision target of %.1f bits (+%.1f margin) not reachable: %.1f bits %s at the largest scale, 2^%d",
                    target_bits, margin_bits, c.estimated_bits, how, kMaxScaleBits);
      throw std::invalid_argument(text);
    }
    c = at(++s);
  }
  while (walk_down && s > kMinScaleBits) {
    const PrecisionChoice smaller = at(s - 1);
    if (smaller.estimated_bits < wanted) break;
    c = smaller;
    --s;
  }
  return c;
}

PrecisionChoice parameters_for_precision(const PatchCNN& model, const std::vector<Tensor>& images, double target_bits,
                                         double margin_bits) {
  const double max_abs = output_bound(model, measure_ranges(model, images, kIntermediateLimit));
  const std::size_t levels = required_levels(model);
  const auto at = [&](int scale_bits) {
    PrecisionChoice c;
    c.scale_bits = scale_bits;
    c.base_bits = base_bits_for_range(max_abs, scale_bits);
    c.spec = choose_parameters(levels, scale_bits, c.base_bits);
    c.estimated_bits =
        estimate_precision(model, images, std::size_t{1} << c.spec.log_n, std::ldexp(1.0, scale_bits)).bits();
    return c;
  };
  return smallest_scale_reaching(at, target_bits, margin_bits, "estimated", true);
}

namespace {
// Relative work of one key switch at `level`: degree x digits x (limbs + special primes).
double key_switch_work(const ckks::Parameters& p, std::size_t level) {
  return static_cast<double>(p.n()) * static_cast<double>(p.digits_at(level)) *
         static_cast<double>(level + 1 + p.p().size());
}

// In-memory bytes of a switching key made at `level` of `p`: a (b, a) pair of 8-byte
// words per digit, each over the level's primes and the special primes.
double switching_key_bytes(const ckks::Parameters& p, std::size_t level) { return 16.0 * key_switch_work(p, level); }
}  // namespace

double evaluation_key_bytes(const CompiledGraph& plan, const ckks::Parameters& params) {
  double bytes = switching_key_bytes(params, params.max_level());  // relinearization
  for (const auto& [step, level] : plan.rotation_levels()) bytes += switching_key_bytes(params, level);
  if (const HalfRing* half = plan.half_ring().get()) {
    const ckks::Parameters& hp = half->context.params();
    bytes += switching_key_bytes(hp, hp.max_level());
    for (const auto& [step, level] : plan.half_ring_rotation_levels()) bytes += switching_key_bytes(hp, level);
    const ckks::Parameters& sp = half->switch_context.params();
    bytes += switching_key_bytes(sp, sp.max_level());
  }
  return bytes;
}

std::optional<RingSwitchChoice> ring_switch_candidate(const Graph& graph, const ckks::Encoder& encoder,
                                                      std::size_t input_level, std::size_t lanes) {
  const ckks::Parameters& params = encoder.context().params();
  for (std::size_t level = input_level; level-- > 1;) {
    // Estimated time of the rest in the half ring relative to the big ring: diagonal
    // products and their encoding halve, key switching scales with key_switch_work.
    const double big_work = key_switch_work(params, level);
    std::optional<RingSwitchChoice> best;
    double best_ratio = 0.75;
    for (std::size_t k = 1; k <= params.p().size(); ++k) {
      try {
        const double ks = key_switch_work(ckks::half_ring_parameters(params, level, k), level) / big_work;
        const double ratio = 0.6 * 0.5 + 0.4 * ks;
        if (ratio <= best_ratio) {
          best_ratio = ratio;
          best = RingSwitchChoice{level, k};
        }
      } catch (const std::invalid_argument&) {
        break;  // insecure from here on: more special primes only grow the modulus
      }
    }
    if (!best) continue;
    try {  // a value must be able to switch there: lay the graph out with it
      CompiledGraph::compile(graph, encoder, input_level, params.default_scale(), 0, Compilation::kLayoutOnly, nullptr,
                             nullptr, lanes, HalfRing::make(params, *best));
      return best;
    } catch (const std::invalid_argument&) {
      // no value at this level can switch (a rotated or single-copy layout, or a step
      // passing over it): try a lower one
    }
  }
  return std::nullopt;
}

double ring_switch_key_growth(const Graph& graph, const ckks::Encoder& encoder, std::size_t input_level,
                              const RingSwitchChoice& choice, std::size_t lanes) {
  const ckks::Parameters& params = encoder.context().params();
  const auto keys = [&](std::shared_ptr<const HalfRing> half) {
    return evaluation_key_bytes(CompiledGraph::compile(graph, encoder, input_level, params.default_scale(), 0,
                                                       Compilation::kPlanOnly, nullptr, nullptr, lanes, std::move(half)),
                                params);
  };
  return keys(HalfRing::make(params, choice)) / keys(nullptr);
}

std::optional<RingSwitchChoice> choose_ring_switch(const Graph& graph, const ckks::Encoder& encoder,
                                                   std::size_t input_level, std::size_t lanes) {
  // Only the earliest point that can switch is weighed: a later one leaves more of the
  // graph, and of its rotations, in the big ring.
  const auto candidate = ring_switch_candidate(graph, encoder, input_level, lanes);
  if (candidate && ring_switch_key_growth(graph, encoder, input_level, *candidate, lanes) <= kRingSwitchKeyGrowth)
    return candidate;
  return std::nullopt;
}

std::shared_ptr<const HalfRing> chosen_half_ring(const Graph& graph, const ckks::Encoder& encoder,
                                                 std::size_t input_level, std::size_t lanes) {
  const auto choice = choose_ring_switch(graph, encoder, input_level, lanes);
  return choice ? HalfRing::make(encoder.context().params(), *choice) : nullptr;
}

GraphNeeds graph_needs(const Graph& graph) {
  const Shape& in = graph.input_shape();
  const std::size_t input_span = on_grid(in, 1, std::bit_ceil(in.height), std::bit_ceil(in.width), 1, 1).span();
  std::string last_error;
  for (int log_n = std::max(12, static_cast<int>(std::bit_width(input_span))); log_n <= 17; ++log_n) {
    ckks::ParameterSpec spec;
    spec.log_n = log_n;
    spec.q_bits.assign(kPlanLevels + 1, 30);
    spec.p_bits = {30};
    const ckks::Context ctx(ckks::Parameters::create_insecure_for_testing(spec));
    const ckks::Encoder enc(ctx);
    try {
      const CompiledGraph plan =
          CompiledGraph::compile(graph, enc, kPlanLevels, ctx.params().default_scale(), 0, Compilation::kPlanOnly);
      return {plan.depth(), log_n};
    } catch (const ModelTooDeep&) {
      // Deeper than any chain without bootstrapping: the layouts held in this ring as far as
      // the plan went (a bootstrapped compile checks the rest).
      return {kPlanLevels + 1, log_n};
    } catch (const std::invalid_argument& e) {
      last_error = e.what();  // a layout needing more slots
    }
  }
  throw std::invalid_argument(last_error);
}

std::string levels_text(std::size_t levels) {
  return levels > kPlanLevels ? "more than " + std::to_string(kPlanLevels) : std::to_string(levels);
}

namespace {
void check_scale_bits(int scale_bits) {
  if (scale_bits < kMinScaleBits || scale_bits > kMaxScaleBits)
    throw std::invalid_argument("scale of 2^" + std::to_string(scale_bits) + ": choose from 2^" +
                                std::to_string(kMinScaleBits) + " to 2^" + std::to_string(kMaxScaleBits));
}

// The largest ring a graph runs in without bootstrapping (see graph_parameters).
int unbootstrapped_max_log_n(const GraphNeeds& needs) { return std::max(16, needs.min_log_n); }

std::optional<ckks::ParameterSpec> unbootstrapped(const GraphNeeds& needs, double output_max_abs, int scale_bits) {
  const int max_log_n = unbootstrapped_max_log_n(needs);
  const int base_bits = base_bits_for_range(output_max_abs, scale_bits);
  // The smallest ring whose chain keeps the digits in bounds (a larger ring has room for
  // more special primes).
  for (int log_n = needs.min_log_n; log_n <= max_log_n; ++log_n) {
    try {
      ckks::ParameterSpec spec = choose_parameters(needs.levels, scale_bits, base_bits, log_n, log_n);
      if (ckks::Parameters::create(spec).dnum() <= kMaxDigitsWithoutBootstrapping) return spec;
    } catch (const std::invalid_argument&) {
      // too deep for this ring
    }
  }
  return std::nullopt;
}
}  // namespace

ckks::ParameterSpec parameters_for(const Graph& graph, double output_max_abs, int scale_bits) {
  check_scale_bits(scale_bits);
  const GraphNeeds needs = graph_needs(graph);
  if (auto spec = unbootstrapped(needs, output_max_abs, scale_bits)) return *spec;
  throw std::invalid_argument("the graph needs " + levels_text(needs.levels) + " levels, more than N = 2^" + std::to_string(unbootstrapped_max_log_n(needs)) +
                              " holds at 128-bit security with at most " +
                              std::to_string(kMaxDigitsWithoutBootstrapping) +
                              " key-switching digits: it needs bootstrapping");
}

ckks::BootstrapConfig graph_bootstrap_config(bool precise) {
  ckks::BootstrapConfig c;
  if (precise) c.arcsine_degree = 3;
  c.log_slots = 15;
  // EvalMod as measured (docs/BENCHMARKS.md): K = 16, a cosine of degree 30 and 4 double
  // angles. With BootstrapConfig's 3 the cosine spans twice the range that degree covers
  // well: 19.0 instead of 24.2 mean bits at N = 2^16, for one level less.
  c.k_range = 16;
  c.cosine_degree = 30;
  c.double_angles = 4;
  c.ephemeral_weight = 32;
  c.slots_to_coeffs_first = true;
  c.storage = ckks::DiagonalStorage::kJustInTime;
  c.giant_steps = ckks::GiantSteps::kChained;
  return c;
}

namespace {
constexpr int kBootstrapLogN = 16;

// The bootstrapping chain with `levels` levels of 2^scale_bits between bootstraps, when it is
// 128-bit secure and keeps key switching at kBootstrapMaxDigits digits: more levels leave
// less room for the special primes, so every key and every rotation grows with the digit
// count (21 levels fit at 2^40, with 18 digits).
std::optional<ckks::ParameterSpec> bootstrap_chain(int levels, const ckks::BootstrapConfig& config, int scale_bits,
                                                   int ratio) {
  try {
    ckks::ParameterSpec spec = ckks::bootstrap_parameter_spec(kBootstrapLogN, levels, config, scale_bits, ratio);
    if (ckks::Parameters::create(spec).dnum() <= kBootstrapMaxDigits) return spec;
  } catch (const std::invalid_argument&) {  // not 128-bit at these levels
  }
  return std::nullopt;
}
}  // namespace

GraphParameters graph_parameters(const Graph& graph, double output_max_abs, int scale_bits, bool bootstrap,
                                 bool precise_bootstraps, int max_compute_levels) {
  check_scale_bits(scale_bits);
  if (max_compute_levels != 0 && (max_compute_levels < 2 || max_compute_levels > kBootstrapMostComputeLevels))
    throw std::invalid_argument("levels between bootstraps: " + std::to_string(max_compute_levels) +
                                " is outside 2.." + std::to_string(kBootstrapMostComputeLevels));
  const GraphNeeds needs = graph_needs(graph);
  if (!bootstrap)
    if (auto spec = unbootstrapped(needs, output_max_abs, scale_bits)) {
      if (max_compute_levels != 0)
        throw std::invalid_argument("levels between bootstraps apply to a graph that bootstraps; this one fits "
                                    "without (ask for bootstrapping to have them)");
      return {*spec, std::nullopt, needs.levels};
    }
  if (needs.min_log_n > kBootstrapLogN)
    throw std::invalid_argument("the graph's layouts need N = 2^" + std::to_string(needs.min_log_n) +
                                ", bootstrapping runs at 2^16 (2^15 slots)");
  const ckks::BootstrapConfig config = graph_bootstrap_config(precise_bootstraps);
  const int ratio = std::max(precise_bootstraps ? kPreciseBootstrapMessageRatioBits : kBootstrapMessageRatioBits,
                             base_bits_for_range(output_max_abs, scale_bits) - scale_bits);
  // The most computation levels between bootstraps with such a chain (or the cap).
  for (int levels = max_compute_levels > 0 ? max_compute_levels : kBootstrapMostComputeLevels; levels >= 2; --levels)
    if (auto spec = bootstrap_chain(levels, config, scale_bits, ratio))
      return {*spec, config, needs.levels, static_cast<std::size_t>(levels)};
  throw std::invalid_argument("no 128-bit bootstrapping chain at N = 2^16 for a scale of 2^" +
                              std::to_string(scale_bits) + " and outputs up to " + std::to_string(output_max_abs));
}

namespace {
// The context, encoder and bootstrapper of a candidate chain, and the graph on it: laid out
// (levels, layouts, bootstraps placed) or planned (with every linear step's geometry).
struct CandidateChain {
  ckks::Context context;
  ckks::Encoder encoder;
  CompiledGraph graph;

  CandidateChain(const Graph& g, const FitReport& ranges, const ckks::ParameterSpec& spec,
                 const ckks::BootstrapConfig& config, Compilation mode)
      : context(ckks::Parameters::create(spec)), encoder(context), graph(lay_out(g, ranges, config, mode)) {}

 private:
  CompiledGraph lay_out(const Graph& g, const FitReport& ranges, const ckks::BootstrapConfig& config,
                        Compilation mode) const {
    auto boot = std::make_shared<const ckks::Bootstrapper>(encoder, config);
    const std::size_t top = boot->output_level();
    return CompiledGraph::compile(g, encoder, top, context.params().default_scale(), 0, mode, std::move(boot), &ranges);
  }
};

double estimated_seconds(const CompiledGraph& graph, const ckks::Parameters& params, const CompiledGraph* geometry) {
  double seconds = 0;
  for (const auto& [name, ops] : graph.step_operations(geometry)) seconds += ckks::estimated_seconds(ops, params);
  return seconds;
}
}  // namespace

double estimated_seconds(const Graph& graph, const FitReport& ranges, const GraphParameters& chosen) {
  if (!chosen.bootstrapping) throw std::invalid_argument("estimated_seconds: the parameters do not bootstrap");
  const CandidateChain chain(graph, ranges, chosen.spec, *chosen.bootstrapping, Compilation::kPlanOnly);
  return estimated_seconds(chain.graph, chain.context.params(), nullptr);
}

GraphParameters fastest_levels_between_bootstraps(const Graph& graph, const FitReport& ranges,
                                                  const GraphParameters& chosen, std::vector<LevelsEstimate>* estimates) {
  if (!chosen.bootstrapping) return chosen;
  const ckks::BootstrapConfig& config = *chosen.bootstrapping;
  const int scale_bits = std::ilogb(chosen.spec.default_scale);
  const int ratio = chosen.spec.q_bits.front() - scale_bits;
  const CandidateChain most(graph, ranges, chosen.spec, config, Compilation::kPlanOnly);  // the geometry
  GraphParameters best = chosen;
  double best_seconds = estimated_seconds(most.graph, most.context.params(), nullptr);
  if (estimates) estimates->assign(1, {chosen.compute_levels, most.graph.bootstraps(), best_seconds});
  for (std::size_t levels = chosen.compute_levels; levels-- > 2;) {
    const auto spec = bootstrap_chain(static_cast<int>(levels), config, scale_bits, ratio);
    if (!spec) continue;
    try {
      const CandidateChain candidate(graph, ranges, *spec, config, Compilation::kLayoutOnly);
      const double seconds = estimated_seconds(candidate.graph, candidate.context.params(), &most.graph);
      if (estimates) estimates->push_back({levels, candidate.graph.bootstraps(), seconds});
      if (seconds < best_seconds) {
        best_seconds = seconds;
        best = {*spec, config, chosen.graph_levels, levels};
      }
    } catch (const std::invalid_argument&) {  // a node needs more levels than this chain gives
    }
  }
  return best;
}

GraphParameters graph_parameters_for_compile(const Graph& graph, const FitReport& ranges, int scale_bits, bool bootstrap,
                                             int bootstrap_levels, std::vector<LevelsEstimate>* estimates) {
  if (ranges.ranges.empty()) throw std::invalid_argument("parameters: the graph's ranges (fit()) are needed");
  const GraphParameters chosen =
      graph_parameters(graph, ranges.ranges.back().max_abs, scale_bits, bootstrap, false, bootstrap_levels);
  return bootstrap_levels == 0 ? fastest_levels_between_bootstraps(graph, ranges, chosen, estimates) : chosen;
}

std::string estimates_text(const std::vector<LevelsEstimate>& estimates) {
  std::string text;
  char line[96];
  for (const LevelsEstimate& e : estimates) {
    std::snprintf(line, sizeof line, "%s%zu levels %zu bootstrap%s %.1f s", text.empty() ? "" : ", ", e.levels,
                  e.bootstraps, e.bootstraps == 1 ? "" : "s", e.seconds);
    text += line;
  }
  return text;
}

CompiledGraph compile_graph(const Graph& graph, const ckks::Encoder& encoder, std::size_t plaintext_budget,
                            bool ring_switch, const std::optional<ckks::BootstrapConfig>& bootstrapping,
                            const FitReport* ranges) {
  const ckks::Parameters& params = encoder.context().params();
  if (bootstrapping) {
    if (!ranges) throw std::invalid_argument("compile_graph: bootstrapping needs the ranges fit() measured");
    auto boot = std::make_shared<const ckks::Bootstrapper>(encoder, *bootstrapping);
    const std::size_t top = boot->output_level();
    return CompiledGraph::compile(graph, encoder, top, params.default_scale(), plaintext_budget, Compilation::kFull,
                                  std::move(boot), ranges);
  }
  return CompiledGraph::compile(graph, encoder, params.max_level(), params.default_scale(), plaintext_budget,
                                Compilation::kFull, nullptr, nullptr, 0,
                                ring_switch ? chosen_half_ring(graph, encoder, params.max_level()) : nullptr);
}

CompileTarget compile_target(const PatchCNN& model, const ckks::Parameters& params) {
  const std::size_t levels = required_levels(model);
  if (params.max_level() < levels)
    throw std::invalid_argument("the model needs " + std::to_string(levels) + " levels, the parameters have " +
                                std::to_string(params.max_level()));
  return {levels, params.default_scale()};
}

}  // namespace pfhe::nn
