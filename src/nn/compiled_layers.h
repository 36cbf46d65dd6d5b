// The compiled building blocks every encrypted model is made of: a linear layer lowered to
// one LinearTransform landing exactly on a target scale, the factored quadratic
// x (x + a1) + a0, how they are built, stored and loaded, and the rotation keys and
// pre-encoding budget over a set of them (CompiledGraph's steps).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/encoder.h"
#include "ckks/evaluator.h"
#include "ckks/linear_transform.h"
#include "nn/layout.h"
#include "nn/linear_map.h"

namespace pfhe::nn {

// A value ran out of levels while compiling without a bootstrapper (the model is deeper
// than the chain): what the parameter choice tells apart from other compile errors.
class ModelTooDeep : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// kPlanOnly lowers every layer but keeps only which diagonals each transform has: the
// rotation keys and layouts a client needs, in a fraction of the time, and nothing that
// can be evaluated or saved.
// kLayoutOnly (compiled graphs) lowers no layer: levels, layouts and where rings switch,
// without rotation keys (whether a model fits a ring or a switch, in a fraction of a
// plan's time). kPerTask (compiled graphs): see CompiledGraph::compile_task.
enum class Compilation { kFull, kPlanOnly, kLayoutOnly, kPerTask };

struct CompiledLinear {
  std::size_t input_level = 0;
  double output_scale = 0;
  ckks::LinearTransform transform;
  std::optional<ckks::Plaintext> bias;
  Layout in, out;
  std::vector<long> post_sum_steps;  // rotate-and-sum before rescaling (SlotLinearMap)

  // Drops x to input_level, applies the transform, rescales, rotates and sums, adds the bias.
  ckks::Ciphertext apply(const ckks::Evaluator& eval, const ckks::Ciphertext& x) const;
  // The same for several inputs at once (a batch of images), each result byte-identical to
  // its own apply(): diagonals encoded just in time are made once for the batch.
  std::vector<ckks::Ciphertext> apply(const ckks::Evaluator& eval, const std::vector<const ckks::Ciphertext*>& xs) const;
};

// u = x (x + a1) + a0 element-wise (a HerPN divided by its leading coefficient).
struct CompiledQuadratic {
  std::size_t input_level = 0;
  double input_scale = 0, output_scale = 0;
  ckks::Plaintext a1, a0;

  ckks::Ciphertext apply(const ckks::Evaluator& eval, const ckks::Ciphertext& x) const;
};

// x + rot(x, 1) + rot(x, 2) + ... : every slot holds the sum of the `span` slots from it on
// (with a layout replicated every `span` slots: the sum of one copy). Rotations by 1, 2, 4
// ... below span.
ckks::Ciphertext sum_over_span(const ckks::Evaluator& eval, ckks::Ciphertext x, std::size_t span);

// The squared distance of two embeddings (replicated every `span` slots) minus `threshold`
// in every slot: negative for the same person. One level.
ckks::Ciphertext match_embeddings(const ckks::Evaluator& eval, const ckks::Ciphertext& probe,
                                  const ckks::Ciphertext& enrolled, double threshold, std::size_t span);

// The prime q_level as a double (the scale a rescale at that level divides by).
double prime_at(const ckks::Context& ctx, std::size_t level);

// Throws when a compiled step would need a level below 0.
void require_level(std::size_t level);

// A transform from (level, in_scale) landing exactly on (level - 1, target_scale); the
// diagonals are kept for just-in-time encoding (pre_encode_within_budget encodes them).
CompiledLinear make_linear(const ckks::Encoder& enc, Compilation mode, const SlotLinearMap& map, const Layout& in,
                           const Layout& out, std::size_t level, double in_scale, double target_scale,
                           ckks::GiantSteps giant_steps = ckks::GiantSteps::kSummed);

// x (x + a1) + a0 at (level, scale): a1 and a0 given per lane as tensors of layout.shape.
// A plan leaves a1 and a0 unencoded (levels and scales only): a plan of a large grid would
// otherwise hold every group's plaintexts (~5 GB for 8x8 CryptoFace).
CompiledQuadratic make_quadratic(const ckks::Encoder& enc, Compilation mode, const std::vector<Tensor>& a1,
                                 const std::vector<Tensor>& a0, const Layout& layout, std::size_t level, double scale);

// Rotation steps of the layers with the highest level each one is used at.
std::map<long, std::size_t> rotation_levels(const std::vector<const CompiledLinear*>& layers);

// Pre-encodes whole layers, lowest level (fewest limbs per diagonal) first, while their
// encoded size stays within `budget` bytes; the rest stay just in time. Returns the bytes
// encoded.
std::size_t pre_encode_within_budget(std::vector<CompiledLinear*> layers, std::size_t budget);

// Stored forms (docs/FORMAT.md, compiled models); loading validates against the context.
void save_linear(ckks::ByteWriter& w, const CompiledLinear& l);
CompiledLinear load_linear(const ckks::Encoder& enc, ckks::ByteReader& r, const std::shared_ptr<const ckks::Backing>& backing);
void save_quadratic(ckks::ByteWriter& w, const CompiledQuadratic& q);
CompiledQuadratic load_quadratic(const ckks::Context& ctx, ckks::ByteReader& r,
                                 const std::shared_ptr<const ckks::Backing>& backing);
void save_layout(ckks::ByteWriter& w, const Layout& l);
Layout load_layout(ckks::ByteReader& r, std::size_t slots);

}  // namespace pfhe::nn
