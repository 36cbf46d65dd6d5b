// A Graph (nn/graph.h) compiled for encrypted evaluation. Every linear node (Conv2d,
// AvgPool2d, AdaptiveAvgPool2d, Linear) is one LinearTransform costing one level; a
// Quadratic (a fused HerPN) is the factored quadratic x (x + a1) + a0 (one level); a
// PolynomialActivation costs ceil(log2(degree + 1)) levels; L2Normalize costs 2 + the
// depth of its polynomial; BatchNorm, Scale and Flatten cost none; Add costs none when its
// operands agree. Before lowering, the graph is rewritten by fold_into_linear_layers
// (nn/graph_passes.h).
//
// How BatchNorm and Quadratic become free of levels: the compiler keeps, for each value, an
// element-wise multiplier m next to the ciphertext (value = m * stored). A BatchNorm
// y = s x + t multiplies m by s and adds t / m' to the ciphertext as a plaintext; a Quadratic
// w2 x^2 + w1 x + w0 becomes w2 m^2 * (u (u + a1) + a0) with u the stored value; Scale
// multiplies m. The next linear node folds m into its weights (exactly: per input slot of
// its slot map, which keeps zero padding zero, unlike folding a shift would). Where m
// cannot be folded (an Add whose operands carry different multipliers, layouts or scales;
// a polynomial over a non-uniform m; the model output) one element-wise linear map
// applies it, placed on the operand with more levels left, so that a residual shortcut
// costs no depth. A linear step whose only reader is an Add runs as low as the other
// operand lets it (one level above it): fewer limbs, the same result.
//
// Inputs: the model input is encrypted whole, or, when it is read only by Crop nodes that
// tile it as a grid x grid of equal patches (row-major), the client encrypts the patches
// (nn::PatchCNN::to_graph makes such graphs). Patches whose branches have the same
// structure (each with its own weights; every node of one reads only its patch's nodes;
// each ends in a Linear summed with the others by Adds) share ciphertexts: `lanes` patches
// per input ciphertext, interleaved slot by slot (nn/layout.h), so that they cost one set
// of rotations and diagonals; the Linear at the end of a lane group also sums its lanes,
// and the group sums are added pairwise.
//
// Layouts: each input is fully replicated at gap 1; a strided convolution or a pool
// multiplies the gap (no repacking); Linear outputs (F, 1, 1) at gap 1; all replicated.
// A convolution whose output reaches only convolutions through one Quadratic writes rotated
// copies (nn/layout.h) when it reads several copies or has stride 1, so that the next
// convolution needs fewer diagonals.
//
// The ring switch (given a nn::HalfRing, ckks/ring_switch.h): a value at the half ring's top
// level about to be read by a step that costs levels is switched to the half ring first
// (its layout must repeat with period N/4: two copies or more, not rotated), and every
// step after it runs there, on polynomials half as long, with the half ring's keys. A
// value that goes past that level in the big ring is refused (the switch needs it at the
// half ring's top level). Not combined with bootstrapping.
//
// Bootstrapping (given a ckks::Bootstrapper for N/2 slots and the ranges fit() measured):
// a graph deeper than the chain gets bootstraps where a value runs out of levels. The
// placement is greedy: before a node, its input is bootstrapped when the node would leave
// it with fewer than one level above the bootstrapper's input level (the one level kept
// scales a value into EvalMod's domain); a value read by several nodes whose paths would
// run out of levels before they join again is bootstrapped before its first reader, for
// all of them (a residual block's trunk: nn/bootstrap_placement.h). The value entering a bootstrap is scaled (one
// element-wise step) so that its stored part, value / multiplier, stays within
// [-1/2, 1/2] by its fitted range and a margin of 2, unless it already lies in
// [1/8, 1/2]; the multiplier carries the factor to the next linear node. Levels: the input
// and each bootstrap's output are dropped by the levels the placement leaves unused after
// them (a first pass measures them), so every layer runs at the lowest level it can
// (docs/BOOTSTRAPPING.md, "Placement in the graph compiler").
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "ckks/bootstrapping.h"
#include "ckks/polynomial.h"
#include "nn/compiled_layers.h"
#include "nn/fit.h"
#include "nn/graph.h"
#include "nn/half_ring.h"

namespace pfhe::nn {

class CompiledGraph {
 public:
  // input_level and scale: those of the encrypted input. Throws std::invalid_argument
  // naming the node when the graph needs more levels than input_level provides, or a
  // node cannot be evaluated encrypted (non-square adaptive pooling blocks, a Quadratic
  // channel with w2 = 0). Diagonals are pre-encoded within `plaintext_budget` bytes
  // (with parallel branches, an equal share per branch task), lowest level first, the rest
  // just in time. The encoder must outlive the result.
  // With a bootstrapper (its encoder must outlive the result) and the fit() ranges of `graph`,
  // bootstraps are placed as described above instead of refusing a deep graph.
  // `lanes`: patches per input ciphertext (a power of two; 0: as many as fit, at most the
  // patch count; more than 1 needs patches of the same structure, see above).
  static CompiledGraph compile(const Graph& graph, const ckks::Encoder& encoder, std::size_t input_level, double scale,
                               std::size_t plaintext_budget = SIZE_MAX, Compilation mode = Compilation::kFull,
                               std::shared_ptr<const ckks::Bootstrapper> bootstrapper = nullptr,
                               const FitReport* ranges = nullptr,
                               std::size_t lanes = 0, std::shared_ptr<const HalfRing> half_ring = nullptr);

  // The model input's shape, the grid it is cut into (1: encrypted whole), and the layout
  // of every input ciphertext (patch p in lane p % lanes of input p / lanes).
  const Shape& input_shape() const { return input_shape_; }
  std::size_t grid() const { return grid_; }
  const Layout& input_layout() const { return input_layout_; }
  std::size_t inputs() const { return inputs_; }
  const Layout& output_layout() const { return output_layout_; }
  std::size_t input_level() const { return input_level_; }
  double input_scale() const { return input_scale_; }
  std::size_t output_level() const { return output_level_; }
  double output_scale() const { return output_scale_; }
  std::size_t depth() const { return input_level_ - output_level_; }

  // The slot vectors of the input ciphertexts for a model input, and the output tensor
  // (the graph's output shape) from decrypted and decoded slots.
  std::vector<std::vector<double>> pack_inputs(const Tensor& x) const;
  Tensor unpack_output(const std::vector<double>& slots) const;

  // Rotation keys of the big ring's steps and, with bootstraps, of the bootstrapper (which
  // also needs the conjugation key: Bootstrapper::create_galois_keys makes both); those of
  // the steps after a ring switch. std::logic_error when steps were only laid out.
  std::map<long, std::size_t> rotation_levels() const;
  std::map<long, std::size_t> half_ring_rotation_levels() const;
  // The half ring it switches to (null: it does not); the output is then in that ring.
  const std::shared_ptr<const HalfRing>& half_ring() const { return half_ring_; }
  // Whether value v (an input, inputs() + i the output of step i; a branch's entry or
  // exit) is in the half ring.
  bool in_half_ring(std::size_t v) const { return v >= inputs_ && steps_[v - inputs_].half; }
  // Whether the output is an L2-normalised embedding (the graph ends in L2Normalize).
  bool embeds() const { return output_value_ >= inputs_ && std::holds_alternative<Normalize>(steps_[output_value_ - inputs_].op); }
  // Of two outputs of an embedding graph (normalised embeddings, in the output's ring): the
  // squared distance minus `threshold` in every slot (negative: the same person); one level.
  ckks::Ciphertext match(const ckks::Evaluator& eval, const ckks::Ciphertext& probe, const ckks::Ciphertext& enrolled,
                         double threshold) const;
  // Their inner product in every slot (the cosine similarity of normalised embeddings); one level.
  ckks::Ciphertext similarity(const ckks::Evaluator& eval, const ckks::Ciphertext& a, const ckks::Ciphertext& b) const;
  std::size_t plaintext_bytes() const;
  // What each step performs when it runs (ckks/operation_counts.h), by step name in step
  // order: the geometry of its transforms, polynomials and bootstraps at their levels, so
  // a plan (Compilation::kPlanOnly) gives it too. What the levels between bootstraps are
  // chosen by (nn/parameter_choice.h). Steps only laid out (Compilation::kLayoutOnly) take
  // the geometry of the linear step of the same name in `geometry`, a plan of the same
  // graph on another chain (a node's layouts, so its diagonals and rotations, do not depend
  // on the chain: lowering them is most of a plan's time); a linear step it does not have
  // is one the placement added on this chain, an element-wise map (one diagonal).
  // std::logic_error for steps only laid out without `geometry`, and for a graph that
  // switches rings (its steps run on two chains).
  std::vector<std::pair<std::string, ckks::OperationCounts>> step_operations(
      const CompiledGraph* geometry = nullptr) const;
  std::size_t bootstraps() const;
  // Each bootstrap step: its name (the bootstrapped node's, ".bootstrap"), input and output level.
  struct PlacedBootstrap {
    std::string name;
    std::size_t input_level = 0, output_level = 0;
  };
  std::vector<PlacedBootstrap> placed_bootstraps() const;
  // The bootstrapper its Bootstrap steps run (null without bootstraps): the one it was
  // compiled with, or, loaded, one built from the configuration the artefact stores.
  const ckks::Bootstrapper* bootstrapper() const { return bootstrapper_.get(); }

  // Independent branches found in the compiled steps: a sum of two or more values each
  // computed by its own steps (at least two of them costing a level) from one value that
  // exists before them (the same for every branch, as in a two-tower network, or not),
  // with no step outside the branch reading its intermediate values. A residual shortcut
  // is not a branch (no steps of its own, or one alignment or 1x1 convolution: cheaper
  // than moving it). A branch inside another one is part of the outer branch. Derived
  // from the steps, so a loaded graph has the same regions.
  struct Branch {
    std::vector<std::size_t> steps;  // ascending (a topological order)
    std::size_t entry = 0;           // the value it starts from
    std::size_t exit = 0;            // the value it delivers to the sum
  };
  struct ParallelRegion {
    std::vector<Branch> branches;
  };
  const std::vector<ParallelRegion>& parallel_regions() const { return regions_; }

  // Of a graph compiled with Compilation::kPerTask (which compiles the steps outside the
  // parallel regions and plans the branches', so their rotation keys are known): branch b
  // of region r compiled from `graph` (the one given to compile; checked), every other
  // step only laid out. What a task runs with run_branch(r, b) when the whole compiled
  // model is not wanted (a server given the model file of a grid whose artefact would not
  // fit): a worker holds one branch at a time, and the output is the same byte for byte.
  // Its diagonals are encoded just in time but for `plaintext_budget` bytes, lowest level first.
  CompiledGraph compile_task(const Graph& graph, std::size_t region, std::size_t branch,
                             std::size_t plaintext_budget = 0) const;
  bool compiles_per_task() const { return !deferred_.empty(); }

  struct StepTiming {
    std::string name;  // the graph node's name (a suffix marks extra steps)
    std::size_t level;
    double seconds;
  };
  // Runs the branches of region r from their entry ciphertexts (in branch order) and
  // returns their exits in the same order: where the branches run (threads, processes,
  // ranks) is the caller's choice; run_branch is what each of them must compute.
  using RegionRunner =
      std::function<std::vector<ckks::Ciphertext>(std::size_t region, const std::vector<ckks::Ciphertext>& entries)>;

  // `encapsulation`: the bootstrapper's encapsulation keys, when it uses them; `half`: the
  // half ring's keys, required exactly when the graph switches rings. Without a runner,
  // branches run one after another here (their steps timed too); the output is the same
  // byte for byte either way.
  ckks::Ciphertext run(const ckks::Evaluator& eval, const std::vector<ckks::Ciphertext>& inputs,
                       std::vector<StepTiming>* timings = nullptr,
                       const ckks::EncapsulationKeys* encapsulation = nullptr, const RegionRunner& runner = {},
                       const HalfRingEvaluation* half = nullptr) const;
  // The regions of a batch run: entries[i] are batch item i's branch entries (branch
  // order), the result its exits in the same layout.
  using BatchRegionRunner = std::function<std::vector<std::vector<ckks::Ciphertext>>(
      std::size_t region, const std::vector<std::vector<ckks::Ciphertext>>& entries)>;
  // run() of several inputs at once (batch[i]: the input ciphertexts of item i, e.g. the
  // two images of a face pair), outputs in their order, each byte-identical to its own
  // run: every linear step takes the batch at once, so that its just-in-time diagonals are
  // encoded once for all (run_branch of a batch). Without a runner the branches run here,
  // each on the whole batch.
  std::vector<ckks::Ciphertext> run_batch(const ckks::Evaluator& eval,
                                          std::span<const std::vector<ckks::Ciphertext>> batch,
                                          std::vector<StepTiming>* timings = nullptr,
                                    const ckks::EncapsulationKeys* encapsulation = nullptr,
                                    const BatchRegionRunner& runner = {},
                                    const HalfRingEvaluation* half = nullptr) const;
  // Branch b of region r from its entry value.
  ckks::Ciphertext run_branch(const ckks::Evaluator& eval, std::size_t region, std::size_t branch,
                              const ckks::Ciphertext& entry, std::vector<StepTiming>* timings = nullptr,
                              const ckks::EncapsulationKeys* encapsulation = nullptr,
                              const HalfRingEvaluation* half = nullptr) const;
  // The same branch from several entries at once (the same branch of several images),
  // exits in their order, each byte-identical to its own run: a linear step takes the
  // batch at once, so that its diagonals are encoded once for all (the encoding is about a
  // quarter of a CryptoFaceNet4 lane group's time), the other steps run item by item.
  std::vector<ckks::Ciphertext> run_branch(const ckks::Evaluator& eval, std::size_t region, std::size_t branch,
                                           std::span<const ckks::Ciphertext> entries,
                                           std::vector<StepTiming>* timings = nullptr,
                                           const ckks::EncapsulationKeys* encapsulation = nullptr,
                                           const HalfRingEvaluation* half = nullptr) const;

  // A plan (kPlanOnly, kLayoutOnly) can neither run nor be saved (std::logic_error); a
  // kPerTask graph runs its branches only through a runner (tasks from compile_task) and
  // cannot be saved.
  // One self-contained stored form (magic "PFHG", parameter fingerprint; docs/FORMAT.md).
  ckks::Bytes save() const;
  // Streamed in pieces of 64 MB (ckks::ByteWriter): a multi-GB artefact is never one buffer.
  void save(const ckks::ByteWriter::Sink& sink) const;
  void save_file(const std::string& path) const;
  // `backing` keeps `bytes` alive (a file mapping) so just-in-time diagonals are used in place.
  // A stored graph with bootstraps stores its bootstrapper's configuration and builds it
  // on load (seconds at N = 2^16: the DFT diagonals are computed again).
  // Whether `bytes` start like a stored compiled graph.
  static bool has_magic(std::span<const std::uint8_t> bytes);
  static CompiledGraph load(const ckks::Encoder& encoder, std::span<const std::uint8_t> bytes,
                            const std::shared_ptr<const ckks::Backing>& backing = {});

  // The step kinds besides linear layers and quadratics.
  struct Shift {  // x + plaintext (a BatchNorm's shift), no level
    ckks::Plaintext shift;
  };
  struct Poly {  // p(x) landing on output_scale, depth levels
    std::size_t input_level = 0;
    double input_scale = 0, output_scale = 0;
    ckks::Polynomial polynomial;
  };
  struct Sum {  // both inputs dropped to `level`, then added
    std::size_t level = 0;
  };
  // The bootstrapper's output scale from this input, dropped to `output_level` (at most the
  // bootstrapper's: the placement's level assignment, above).
  struct Bootstrap {
    std::size_t input_level = 0;
    double input_scale = 0;
    std::size_t output_level = 0;
  };
  // x * p(sum of squares of x): square and rescale, sum over the span by rotations
  // (steps 1, 2, 4, ... below it), p landing where the product rescales onto output_scale.
  struct Normalize {
    std::size_t input_level = 0, span = 0;
    double input_scale = 0, output_scale = 0;
    ckks::Polynomial polynomial;
    std::size_t depth() const { return polynomial.depth() + 2; }
  };
  struct RingSwitch {};  // to the half ring's top level (ckks::switch_to_half_ring)
  using StepOp = std::variant<CompiledLinear, CompiledQuadratic, Shift, Poly, Sum, Bootstrap, Normalize, RingSwitch>;
  struct Step {
    std::string name;
    std::vector<std::size_t> inputs;  // value indices: k < inputs() is input k, inputs() + i step i
    StepOp op;
    bool half = false;  // its output is in the half ring (so are its inputs, but a switch's)
  };

 private:
  class Builder;
  // What the compiler makes of one step: its plaintexts (kFull); only which diagonals it
  // has (kPlan: its rotation keys); or its place, level and layout alone (kLayout: its
  // linear map is not even lowered; the steps a per-task compilation leaves to others).
  enum class Lowering { kFull, kPlan, kLayout };
  using LoweringOf = std::function<Lowering(std::size_t step)>;
  // compile()'s arguments besides the graph and the budget (compile_task rebuilds them).
  struct Recipe {
    const ckks::Encoder* encoder;
    std::size_t input_level;
    double scale;
    std::shared_ptr<const ckks::Bootstrapper> bootstrapper;
    const FitReport* ranges;
    std::size_t lanes;
    std::shared_ptr<const HalfRing> half_ring;
    std::vector<std::size_t> bootstrap_drops;  // levels the k-th bootstrap's output drops by (index k)
  };
  // The steps and regions of a graph already rewritten by fold_into_linear_layers; with
  // `slack`, the builder's slack per origin of a level (input 0, bootstrap k).
  static CompiledGraph build(const Graph& graph, const Recipe& recipe, const LoweringOf& lowering_of,
                             std::vector<std::size_t>* slack = nullptr);
  // The recipe with its input and its bootstraps' outputs at the lowest levels that keep
  // the placement (the level assignment described above).
  static Recipe at_lowest_levels(const Graph& graph, Recipe recipe);
  // The same steps by name, inputs and kind, in the same order (two compilations of one
  // graph; their levels and layouts may differ).
  bool same_step_structure(const CompiledGraph& other) const;
  // Throws when `other` has other steps or inputs, or its linear steps another geometry
  // (compile_task given another graph).
  void check_same_steps(const CompiledGraph& other) const;
  // Throws std::logic_error when the step is left to a per-task compilation.
  void check_compiled(std::size_t step) const;
  // A unit of the run order: one step, or a whole region (index into regions_).
  struct Unit {
    bool region = false;
    std::size_t index = 0;
  };
  void find_parallel_regions();
  // Pre-encodes diagonals within `budget` bytes (compile(); after the regions are known).
  void pre_encode(std::size_t budget);
  void order_units();
  std::vector<ParallelRegion> regions_;
  std::vector<Unit> order_;  // steps outside every branch and the regions, in a topological order
  const ckks::Encoder* encoder_ = nullptr;
  std::shared_ptr<const ckks::Bootstrapper> bootstrapper_;  // set when there are Bootstrap steps
  std::shared_ptr<const HalfRing> half_ring_;         // set when there are RingSwitch steps
  // What a loaded graph's plaintexts borrow their words from (a file mapping), if anything.
  std::shared_ptr<const ckks::Backing> storage_;
  // The step computing value v, or none for an input.
  std::optional<std::size_t> step_of(std::size_t v) const {
    return v < inputs_ ? std::nullopt : std::optional<std::size_t>(v - inputs_);
  }
  std::vector<Step> steps_;
  Layout input_layout_, output_layout_;
  Shape input_shape_, output_shape_;
  std::size_t grid_ = 1, inputs_ = 1;
  std::size_t input_level_ = 0, output_level_ = 0, output_value_ = 0;
  double input_scale_ = 0, output_scale_ = 0;
  bool plan_ = false;  // kPlanOnly or kLayoutOnly: nothing to run or save
  bool keys_unknown_ = false;  // steps only laid out (kLayoutOnly, compile_task): no rotation keys
  std::vector<bool> deferred_;  // per step, not compiled here (kPerTask, compile_task); empty: none
};

}  // namespace pfhe::nn
