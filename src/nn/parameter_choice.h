// Parameter selection from a model's depth: the smallest ring that holds q_0 + levels
// scaling primes + the special primes at 128-bit security (HomomorphicEncryption.org
// table), without bootstrapping, with the special-prime count that makes the switching
// keys smallest. Scaling primes have `scale_bits`; q_0 and P primes
// `base_bits` (q_0 - scale_bits bits of headroom above the scale for the final values).
#pragma once
#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "ckks/parameters.h"
#include "nn/compiled_graph.h"
#include "nn/patch_cnn.h"

namespace pfhe::nn {

// Levels an encrypted PatchCNN inference consumes: backbone (with its head block),
// L2 normalisation and matching.
std::size_t required_levels(const PatchCNN& model);

// Bits of q_0 (and of the special primes) for values up to `max_abs` (the largest |value|
// a fit recorded, nn/fit.h) at scale 2^scale_bits with `headroom_factor` to spare: a
// decrypted value must stay below q_0 / (2 scale), so q_0 needs
// scale_bits + log2(max_abs * headroom) + 1 bits. At least 50 (the fast path's limit is
// 2^50, and 9 bits of headroom cost nothing there), at most 60 (the largest prime the ring
// layer makes); beyond that std::invalid_argument asks for a smaller scale.
int base_bits_for_range(double max_abs, int scale_bits, double headroom_factor = 4.0);

// The scale `pfhe compile` uses without a precision target, and the smallest q_0.
inline constexpr int kDefaultScaleBits = 40;
inline constexpr int kDefaultBaseBits = 50;

// Throws std::invalid_argument when no tabulated ring (from 2^min_log_n up to 2^max_log_n)
// is large enough.
ckks::ParameterSpec choose_parameters(std::size_t levels, int scale_bits = kDefaultScaleBits,
                                      int base_bits = kDefaultBaseBits, int min_log_n = 13, int max_log_n = 17);

// The parameters `pfhe compile` chooses for a model: choose_parameters(required_levels(model)).
ckks::ParameterSpec parameters_for(const PatchCNN& model);

// The largest |value| that reaches level 0, where q_0 alone must hold it: the model's output
// (logits, or the normalised embedding and a match score ~4 for embeddings), from ranges
// measured on calibration images (nn/fit.h). A value at level l >= 1 has q_0 q_1 ... q_l
// to fit in, at least 2^49 times its scale: kIntermediateLimit, what the ranges are checked
// against (with nn::fit's headroom factor).
inline constexpr double kIntermediateLimit = 562949953421312.0;  // 2^49
struct FitReport;
double output_bound(const PatchCNN& model, const FitReport& ranges);

// Parameters from a precision target (`pfhe compile --precision-bits B`): the smallest
// scale in [kMinScaleBits, kMaxScaleBits] whose estimated precision (nn/noise_estimate.h)
// on `images` reaches target_bits + margin_bits, q_0 from the images' value range
// (output_bound, base_bits_for_range), then the ring as choose_parameters does. The margin covers the
// estimate's error (within a bit of measured runs, docs/STATUS.md). Throws
// std::invalid_argument when the target is out of (0, 40] or no scale reaches it.
inline constexpr int kMinScaleBits = 30;  // enough NTT-friendly primes for every ring
inline constexpr int kMaxScaleBits = 49;  // scaling primes stay below the IFMA limit 2^50
struct PrecisionChoice {
  ckks::ParameterSpec spec;
  int scale_bits = 0, base_bits = 0;
  double estimated_bits = 0;
};
PrecisionChoice parameters_for_precision(const PatchCNN& model, const std::vector<Tensor>& images, double target_bits,
                                         double margin_bits = 1.0);
// The search both precision targets use (a PatchCNN's estimate, a graph's measurement,
// nn/measured_precision.h): `at(s)` the choice at scale 2^s with its precision in
// estimated_bits; the guess one evaluation at 2^40 makes (about a bit of precision per bit
// of scale), raised until it reaches target + margin, then lowered while it still does
// when `walk_down`. `how` ("estimated", "measured") words the error when no scale reaches it.
// Every precision target's bounds: throws std::invalid_argument unless target_bits is in
// (0, 40] and margin_bits >= 0.
void check_target_bits(double target_bits, double margin_bits);
PrecisionChoice smallest_scale_reaching(const std::function<PrecisionChoice(int scale_bits)>& at, double target_bits,
                                        double margin_bits, const char* how, bool walk_down);

// Where a PatchCNN is compiled (by `pfhe compile`, and by every server, stage and test that
// must agree with its artefact and client spec): inputs encrypted at level
// required_levels(model), at the parameters' default scale. Throws std::invalid_argument
// when the parameters have fewer levels than the model needs.
// Where a graph compiled with `encoder` at input_level with `lanes` (0: as compile picks) could
// leave its ring for the half ring (ckks/ring_switch.h): the highest level (the earliest
// point) whose half ring is estimated to run the rest in at most 3/4 of the big ring's
// time (diagonal work, ~60 % of a CryptoFace backbone, halves; key switching, ~40 %,
// scales with degree x digits x (limbs + special primes), what ModUp's NTTs and the key
// products grow with), with the special-prime count that makes it cheapest among the
// 128-bit secure ones, and where a value of the graph can switch (checked by laying the
// graph out with it, Compilation::kLayoutOnly). CryptoFaceNet4: level 15 (the output of
// block 3) with 4 special primes (level 19, after block 2, would leave one special prime
// and 20 digits: measured slower; levels 16-18 are estimated above 3/4). nullopt: no
// level qualifies.
std::optional<RingSwitchChoice> ring_switch_candidate(const Graph& graph, const ckks::Encoder& encoder,
                                                      std::size_t input_level, std::size_t lanes = 0);
// In-memory bytes of the evaluation keys a planned (or compiled) graph needs: the
// relinearization and Galois keys of each ring it runs in, and the ring-switch key.
double evaluation_key_bytes(const CompiledGraph& plan, const ckks::Parameters& params);
// The evaluation keys with `choice` over those without, both from plans of the graph.
double ring_switch_key_growth(const Graph& graph, const ckks::Encoder& encoder, std::size_t input_level,
                              const RingSwitchChoice& choice, std::size_t lanes = 0);
// The switch a graph takes: the candidate, unless it grows the evaluation keys beyond
// kRingSwitchKeyGrowth. Keys are the server's memory and every client's upload, and when
// most rotations are still needed in the big ring the half ring's keys come on top (the
// two-tower-tiny graph: keys 177 -> 278 MB, so `pfhe infer` took 2.87 s against 2.69 s
// although its compute fell 1.57 -> 1.30 s). Growth measured by this estimate:
// CryptoFaceNet4 +3.6 %, the tiny CLI PatchCNN +3.8 %, the two-tower graph -13 % (they
// switch); two-tower-large +12 %, the reduced test PatchCNN +22 %, two-tower-tiny +54 %
// (they do not).
inline constexpr double kRingSwitchKeyGrowth = 1.10;
std::optional<RingSwitchChoice> choose_ring_switch(const Graph& graph, const ckks::Encoder& encoder,
                                                   std::size_t input_level, std::size_t lanes = 0);
// The half ring of that choice (null: none), as `pfhe compile` and a server given a model
// file decide it.
std::shared_ptr<const HalfRing> chosen_half_ring(const Graph& graph, const ckks::Encoder& encoder,
                                                 std::size_t input_level, std::size_t lanes = 0);

// What a model graph needs from its parameters without bootstrapping: the levels it
// consumes and the smallest ring whose slots hold every layout. Measured by planning the
// graph (CompiledGraph, Compilation::kPlanOnly) on throwaway contexts of kPlanLevels
// levels from the smallest ring that holds the input upwards; those contexts are not
// secure and never leave this function (nothing is encrypted under them). A graph deeper
// than kPlanLevels gets levels = kPlanLevels + 1 (only bootstrapping holds it; a deeper
// plan context would hold a base converter per level and digit: gigabytes). Throws
// std::invalid_argument (the compiler's message for the largest ring) when no ring up to
// 2^17 can hold the graph's layouts.
inline constexpr std::size_t kPlanLevels = 64;  // more than any ring up to 2^17 holds at 128 bits
struct GraphNeeds {
  std::size_t levels = 0;  // kPlanLevels + 1: more than kPlanLevels
  int min_log_n = 0;
};
GraphNeeds graph_needs(const Graph& graph);
// GraphNeeds::levels as text for messages: the count, or "more than 64" past the plan.
std::string levels_text(std::size_t levels);
// The parameters `pfhe compile` chooses for a graph without bootstrapping: its levels at a
// 2^scale_bits scale (the CLI: 2^40), q_0 from the output's range on calibration inputs
// (`output_max_abs`, from fit()), in rings up to 2^16 (2^17 only for a graph whose layouts
// need its slots). Throws std::invalid_argument for a scale outside [kMinScaleBits,
// kMaxScaleBits], and, saying so, for a graph too deep for those rings (it needs
// bootstrapping: graph_parameters).
ckks::ParameterSpec parameters_for(const Graph& graph, double output_max_abs, int scale_bits = kDefaultScaleBits);

// Bootstrapping for graph models (issue 24). Decision: a graph whose levels do not fit the
// 128-bit chain of N = 2^16 with at most kMaxDigitsWithoutBootstrapping key-switching
// digits bootstraps at N = 2^16 rather than running without bootstraps at 2^17 or with
// more digits: every operation and every key of 2^17 costs twice as much per limb over
// twice the limbs, and the digits multiply every key's size and every rotation's time. The
// shipped ResNet-20 (depth 39) fits 2^16 only with 2 special primes and 20 digits: 168
// rotation keys of ~0.9 GB each (its bootstrapping chain has 4 digits). The configuration is the one measured best in
// docs/BENCHMARKS.md ("Bootstrapping at N = 2^16"): 2^15 full slots, SlotsToCoeffs first,
// EvalMod with K = 16, a cosine of degree 30 and 4 double angles (until session 32 graphs
// kept 3, 5 bits less precise: "Graph bootstraps with the measured EvalMod" there),
// sparse-secret encapsulation of weight 32 (docs/BOOTSTRAPPING.md), DFT diagonals encoded
// just in time and giant steps chained, in the DFT stages and in every linear layer of the
// graph (memory goes to the keys: ResNet-20's 173 keys of up to 37 limbs and 4 digits took
// 15 GB, chained 78 keys 7.5 GB, and no slower: docs/BENCHMARKS.md); between bootstraps
// as many levels of 2^scale_bits as a 128-bit chain holds with kBootstrapMaxDigits
// key-switching digits (12 at 2^40).
// `precise`: the same with the arcsine step after EvalMod (degree 3), which lets the
// message ratio drop from 2^14 to 2^10 (kPreciseBootstrapMessageRatioBits): a bootstrap
// at N = 2^16 measured 24.2 -> 25.6 mean and 21.3 -> 22.4 worst-slot bits (the standard
// ones reach 25.2 / 22.0 since their chain's larger primes), +21 % time on one thread,
// and its two extra levels take the room of two special primes (docs/BENCHMARKS.md,
// "Precision for levels"). What a precision target falls back on.
ckks::BootstrapConfig graph_bootstrap_config(bool precise = false);
struct GraphParameters {
  ckks::ParameterSpec spec;
  std::optional<ckks::BootstrapConfig> bootstrapping;  // set: compile with it (compile_graph)
  std::size_t graph_levels = 0;                        // the graph's depth without bootstraps
  std::size_t compute_levels = 0;                      // with bootstrapping: levels between bootstraps
};
// parameters_for when the graph fits (and `bootstrap` is false), else the bootstrapping
// chain: q_0 from the output's range with at least kBootstrapMessageRatioBits above the
// scale. `bootstrap` true asks for the bootstrapping chain even when the graph fits
// (bootstraps are then placed only where a value runs out of its levels).
inline constexpr int kBootstrapMessageRatioBits = 14;
inline constexpr int kPreciseBootstrapMessageRatioBits = 10;
// The most key-switching digits a chain without bootstrapping may have (CryptoFaceNet-size
// graphs have 3-6; beyond 8 a graph bootstraps).
inline constexpr int kMaxDigitsWithoutBootstrapping = 8;
// Digits of key switching in the bootstrapping chain, as in the measured set (12 levels at
// 2^40, 4 digits, 6 GB of bootstrapping keys).
inline constexpr int kBootstrapMaxDigits = 4;
// `precise_bootstraps`: graph_bootstrap_config(true) where the graph bootstraps.
// `max_compute_levels` (2..kBootstrapMostComputeLevels; 0: no cap) caps the levels between
// bootstraps of a graph that bootstraps (refused for one that fits without): fewer levels
// make a smaller chain, so smaller keys and less memory, and more bootstraps
// (fastest_levels_between_bootstraps chooses among them; docs/BENCHMARKS.md, "Levels
// between bootstraps").
inline constexpr int kBootstrapMostComputeLevels = 24;
GraphParameters graph_parameters(const Graph& graph, double output_max_abs, int scale_bits = kDefaultScaleBits,
                                 bool bootstrap = false, bool precise_bootstraps = false, int max_compute_levels = 0);

// The levels between bootstraps, chosen by estimated latency. Fewer levels make every prime
// count smaller (the bootstraps' own levels sit on top of them), so each bootstrap, each
// layer and each key is cheaper, while the graph may need more bootstraps; which wins
// depends on the graph (ResNet-20: 12 levels and 3 bootstraps within noise of 14 and 2,
// with 2 GB fewer keys; the `deep` ONNX network keeps its 1 bootstrap down to 10 levels,
// 25 % faster than 14; 8 levels slower on both: docs/BENCHMARKS.md, "Levels between
// bootstraps", "Latency estimate"). So every chain from `chosen`'s
// (graph_parameters' most levels) down to 2 levels with at most kBootstrapMaxDigits digits
// is a candidate: the graph is planned once on `chosen`'s chain (the geometry of its linear
// steps, which does not depend on the chain), laid out on each candidate (a context and a
// bootstrapper each: the bootstraps placed and every step's level), and each step's
// operations weighed at its level (CompiledGraph::step_operations, ckks::estimated_seconds);
// the least estimate wins. About 0.5 s per candidate at N = 2^16 (ResNet-20: 2 s for the
// plan, 11 s in all for 13 candidates). `estimates`, when given, receives each candidate's (the first is
// `chosen`'s). `chosen` without bootstrapping is returned as it is.
struct LevelsEstimate {
  std::size_t levels = 0, bootstraps = 0;
  double seconds = 0;  // one thread, ckks::estimated_seconds
};
GraphParameters fastest_levels_between_bootstraps(const Graph& graph, const FitReport& ranges,
                                                  const GraphParameters& chosen,
                                                  std::vector<LevelsEstimate>* estimates = nullptr);
// The estimate for one bootstrapping choice (`chosen.bootstrapping` must be set): the graph
// planned on its chain, weighed as above.
double estimated_seconds(const Graph& graph, const FitReport& ranges, const GraphParameters& chosen);
// What `pfhe compile`, the Python package and pfhe_resnet20_bench choose for a graph with its
// fit() ranges: graph_parameters with the output's range, then, for a graph that bootstraps,
// `bootstrap_levels` levels between bootstraps when given (not 0), else the fastest by the
// estimate (fastest_levels_between_bootstraps, its candidates' estimates into `estimates`).
GraphParameters graph_parameters_for_compile(const Graph& graph, const FitReport& ranges, int scale_bits, bool bootstrap,
                                             int bootstrap_levels, std::vector<LevelsEstimate>* estimates = nullptr);
// Candidates' estimates as text for progress lines: "12 levels 3 bootstraps 56.2 s, ...".
std::string estimates_text(const std::vector<LevelsEstimate>& estimates);

// How `pfhe compile` and a server given a graph model file compile a graph: inputs at the
// parameters' top level and default scale (parameters_for gives exactly the levels the
// graph needs), `plaintext_budget` bytes of diagonals pre-encoded (the CLI's default:
// 0.5 GB), the rest just in time, switching to the half ring where choose_ring_switch
// finds that it pays (`ring_switch` false: never; an artefact records its choice).
inline constexpr std::size_t kDefaultPlaintextBudget = std::size_t{1} << 29;
// With `bootstrapping` (graph_parameters' choice for the encoder's parameters) and the fit()
// ranges of the graph: inputs at the bootstrapper's output level, bootstraps placed (no
// ring switch then).
CompiledGraph compile_graph(const Graph& graph, const ckks::Encoder& encoder,
                            std::size_t plaintext_budget = kDefaultPlaintextBudget, bool ring_switch = true,
                            const std::optional<ckks::BootstrapConfig>& bootstrapping = std::nullopt,
                            const FitReport* ranges = nullptr);

struct CompileTarget {
  std::size_t level;
  double scale;
};
CompileTarget compile_target(const PatchCNN& model, const ckks::Parameters& params);

}  // namespace pfhe::nn
