// A Backbone compiled for encrypted evaluation: BatchNorms folded, each HerPN evaluated in
// the factored form x (x + a1) + a0 with its leading coefficient w2 folded into the next
// linear layer (conv, shortcut or pooling head), every linear layer lowered to one
// LinearTransform on fully replicated slot layouts, and every step's level and scale fixed
// at compile time (each linear layer lands exactly on the target scale, so scale drift
// never accumulates).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/encoder.h"
#include "ckks/evaluator.h"
#include "ckks/linear_transform.h"
#include "nn/backbone.h"
#include "nn/compiled_layers.h"
#include "nn/half_ring.h"
#include "nn/layout.h"

namespace pfhe::nn {

struct CompiledBlock {
  CompiledQuadratic herpn1;
  CompiledLinear conv1;
  CompiledQuadratic herpn2;
  CompiledLinear conv2;
  CompiledLinear shortcut;  // conv1x1 + BN, or the per-channel w2 of an identity shortcut
};

class CompiledBackbone {
 public:
  // patch: input tensor shape; input_level/scale: of the encrypted patch. `head` (optional)
  // is a linear layer applied to the backbone features, fused with the pooling and
  // BatchNorm1d into the last transform. Diagonals are pre-encoded, lowest level first
  // (cheapest per diagonal), while their encoded size stays within `plaintext_budget`
  // bytes; the rest are encoded just in time. The encoder must outlive the result.
  static CompiledBackbone compile(const Backbone& model, const ckks::Encoder& encoder, const Shape& patch,
                                  std::size_t input_level, double scale, const Linear* head = nullptr,
                                  std::size_t plaintext_budget = SIZE_MAX);
  // A lane group: up to `lanes` backbones of the same architecture (the patches of one
  // group, each with its own weights and head block) evaluated together in one ciphertext
  // with interleaved lanes (nn/layout.h); the output is the sum of their head outputs.
  static CompiledBackbone compile(const std::vector<const Backbone*>& models, const ckks::Encoder& encoder,
                                  const Shape& patch, std::size_t input_level, double scale,
                                  const std::vector<const Linear*>& heads, std::size_t lanes,
                                  std::size_t plaintext_budget = SIZE_MAX, Compilation mode = Compilation::kFull,
                                  const RingSwitchPlan* ring_switch = nullptr);

  const Layout& input_layout() const { return conv0_->in; }
  const Layout& output_layout() const { return pool_head_->out; }
  std::size_t input_level() const { return conv0_->input_level; }
  double input_scale() const;  // the scale patches are encrypted at
  std::size_t output_level() const { return pool_head_->input_level - 1; }
  double output_scale() const { return pool_head_->output_scale; }
  std::size_t depth() const { return input_level() - output_level(); }

  // Rotation steps of all transforms with the highest level each one is used at; with a
  // ring switch, those of the big ring (before it) and of the half ring (after it).
  std::map<long, std::size_t> rotation_levels() const;
  std::map<long, std::size_t> half_ring_rotation_levels() const;
  bool switches_ring() const { return switch_after_ != kNoSwitch; }
  std::size_t plaintext_bytes() const;

  // Per-step report of run(): what ran, at which input level, how long, and for linear
  // steps the plaintext diagonals and rotations (hoisted baby, giant, post-sum) it used.
  struct StepTiming {
    std::string name;
    std::size_t level;
    double seconds;
    std::size_t diagonals = 0, baby_rotations = 0, giant_rotations = 0, sum_rotations = 0;
  };
  // `half` is required exactly when the group switches rings.
  ckks::Ciphertext run(const ckks::Evaluator& eval, const ckks::Ciphertext& patch,
                       std::vector<StepTiming>* timings = nullptr, const HalfRingEvaluation* half = nullptr) const;

  // Stored form inside a compiled model file; load validates and needs the same parameters
  // and the same ring switch (the model file's).
  void save(ckks::ByteWriter& w) const;
  // `backing` keeps the reader's bytes alive (a file mapping): coefficients are then used
  // in place (ckks::LinearTransform::load).
  static CompiledBackbone load(const ckks::Encoder& encoder, ckks::ByteReader& r,
                               const std::shared_ptr<const ckks::Backing>& backing = {},
                               const RingSwitchPlan* ring_switch = nullptr);

 private:
  // Pointers to every compiled linear layer (const-ness follows `self`).
  template <typename Self>
  static auto linear_layers_of(Self& self);
  // The linear layers evaluated in the big ring (half = false) or after the switch.
  std::vector<const CompiledLinear*> layers_in_ring(bool half) const;
  static constexpr std::size_t kNoSwitch = SIZE_MAX;
  std::size_t switch_after_ = kNoSwitch;
  std::optional<CompiledLinear> conv0_;
  std::vector<CompiledBlock> blocks_;
  std::optional<CompiledQuadratic> pool_herpn_;
  std::optional<CompiledLinear> pool_head_;
};

}  // namespace pfhe::nn
