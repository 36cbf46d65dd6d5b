// CryptoFace's PatchCNN: a G x G grid of P x P patches, one Backbone per patch, per-patch
// blocks of one linear head summed (with BatchNorm1d(affine=False) folded in), then L2
// normalisation by the polynomial e * (a y^2 + b y + c), y = sum e_i^2, and matching by
// squared distance to an enrolled template.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nn/backbone.h"
#include "nn/compiled_backbone.h"
#include "nn/graph.h"
#include "nn/half_ring.h"

namespace pfhe::nn {

struct L2NormPoly {
  double a = 0, b = 0, c = 1;  // 1/sqrt(y) ~ a y^2 + b y + c
  double operator()(double y) const { return (a * y + b) * y + c; }
};

// Patch `index` (row-major) of a (3, grid * size, grid * size) image.
Tensor extract_patch(const Tensor& image, std::size_t grid, std::size_t size, std::size_t index);

struct PatchCNN {
  std::size_t grid = 2, patch_size = 32;
  std::vector<Backbone> backbones;  // grid * grid, row-major over patches
  Linear head;                      // (grid^2 * F) -> E over the concatenated features
  BatchNorm head_bn;                // affine-free BatchNorm1d(E)
  L2NormPoly l2;
  // A classifier's output is its logits (head_bn(head(...))): no L2 normalisation and no
  // matching, so the encrypted program needs 5 levels less.
  bool classifier = false;

  Shape image_shape() const { return {3, grid * patch_size, grid * patch_size}; }
  Tensor patch(const Tensor& image, std::size_t index) const;
  // The backbone features of every patch, concatenated (the head's input); `observe` sees
  // each backbone's intermediate values under "nets.<p>".
  Tensor features(const Tensor& image, const TensorObserver* observe = nullptr) const;
  // head_bn(head(concat backbone features)) before normalisation; `observe` as for features.
  Tensor embedding(const Tensor& image, const TensorObserver* observe = nullptr) const;
  // embedding * l2(sum of squares): what the encrypted pipeline computes.
  Tensor normalized(const Tensor& image) const { return normalize(embedding(image)); }
  Tensor normalize(Tensor embedding) const;
  // Head block of patch p with the BatchNorm folded in and the bias shared 1/grid^2 per patch.
  Linear head_block(std::size_t p) const;
  void validate() const;
  // The model as a graph: a Crop per patch ("nets.<p>.crop"), its backbone (nodes named as
  // Backbone::append_to does under "nets.<p>"), its head block ("head.<p>"), the sum of the
  // head blocks ("embedding", the last Add) and, unless a classifier, the normalisation
  // ("l2"). Its forward equals normalized() (embedding() for a classifier).
  Graph to_graph() const;
};

// The three fit points of the L2 polynomial from sum-of-squares samples: mu - sigma (clamped
// at mu / 2), mu, mu + sigma, with the top 1 % of samples trimmed first.
struct L2FitPoints {
  double lo = 0, mid = 0, hi = 0;
};
L2FitPoints l2_fit_points(std::vector<double> sums_of_squares);

// The quadratic through (y, 1/sqrt(y)) at the fit points of these samples.
L2NormPoly fit_l2_poly(std::vector<double> sums_of_squares);
double sum_of_squares(const Tensor& t);

// Fits l2 through y in {mu - sigma, mu, mu + sigma} of sum-of-squares statistics over the
// given images (top 1 % of y trimmed), as CryptoFace does; the lower point is clamped at
// mu / 2 when sigma > mu / 2.
void fit_l2_norm(PatchCNN& model, const std::vector<Tensor>& images);

// Squared distance minus threshold (negative: same person).
double match_score(const Tensor& probe, const Tensor& enrolled, double threshold);

// The most lanes (patches per ciphertext) every layer of this backbone leaves room for.
std::size_t max_lanes(const Backbone& model, const Shape& patch, std::size_t slots);

class CompiledPatchCNN {
 public:
  // lanes: patches evaluated together per ciphertext (a power of two); 0 picks the most
  // that fit, capped at the patch count. Fewer lanes give more, smaller tasks to spread
  // over workers; more lanes less total work. With `half_ring` every group runs its
  // blocks after the switch block in the half ring, and so do aggregation, normalisation
  // and matching.
  static CompiledPatchCNN compile(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                                  double scale, std::size_t plaintext_budget = SIZE_MAX, std::size_t lanes = 0,
                                  std::shared_ptr<const HalfRing> half_ring = nullptr);

  // Lane group g alone, exactly as compile() builds it (same diagonals, so the same
  // outputs): for workers that compile what they run instead of inheriting a compiled model.
  // plaintext_budget is this group's share.
  static CompiledBackbone compile_group(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                                        double scale, std::size_t plaintext_budget, std::size_t lanes, std::size_t g,
                                        Compilation mode = Compilation::kFull,
                                        const HalfRing* half_ring = nullptr);
  // What a client needs to make its keys (rotation steps and levels, layouts, depth) without
  // any diagonal values: the same lowering as compile(), none of its encoding. The result
  // can be described (runtime::ClientSpec::of) but neither run nor saved.
  static CompiledPatchCNN plan(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                               double scale, std::size_t lanes = 0, std::shared_ptr<const HalfRing> half_ring = nullptr);

  std::size_t patches() const { return patches_; }
  std::size_t lanes() const { return groups_.front().input_layout().lanes; }
  // One task per lane group: group g holds patches g * lanes ... (g + 1) * lanes - 1.
  std::size_t groups() const { return groups_.size(); }
  const CompiledBackbone& group(std::size_t g) const { return groups_[g]; }
  const Layout& input_layout() const { return groups_.front().input_layout(); }
  const Layout& embedding_layout() const { return groups_.front().output_layout(); }
  // Rotation keys by ring: the big ring's, and with a ring switch the half ring's (where the
  // embedding's slot sums then happen too).
  std::map<long, std::size_t> rotation_levels() const;
  std::map<long, std::size_t> half_ring_rotation_levels() const;
  bool switches_ring() const { return half_ring_ != nullptr; }
  // Where the groups switch rings (null: they do not); its context is then the one of the
  // embedding, the scores and the half-ring keys.
  const std::shared_ptr<const HalfRing>& half_ring() const { return half_ring_; }
  std::size_t depth() const;  // backbone (+ normalisation + matching unless a classifier)
  bool classifier() const { return classifier_; }
  std::size_t plaintext_bytes() const;  // memory held by every backbone's diagonals

  // Server side: sum of the groups' head outputs (tree reduction), then normalisation.
  ckks::Ciphertext aggregate(const ckks::Evaluator& eval, std::vector<ckks::Ciphertext> heads) const;
  ckks::Ciphertext normalize(const ckks::Evaluator& eval, const ckks::Ciphertext& embedding) const;
  // Encrypted inner product of two normalised embeddings (their cosine similarity when
  // both have unit norm), in every slot.
  ckks::Ciphertext similarity(const ckks::Evaluator& eval, const ckks::Ciphertext& a, const ckks::Ciphertext& b) const;
  // Encrypted squared distance minus threshold, in every slot.
  ckks::Ciphertext match(const ckks::Evaluator& eval, const ckks::Ciphertext& probe, const ckks::Ciphertext& enrolled,
                         double threshold) const;

  // The compiled artefact as one file ("PFHC", version, parameter fingerprint, the ring
  // switch if any, then every backbone, the L2 polynomial and the embedding size;
  // docs/FORMAT.md). Loading checks the fingerprints (the half ring's is derived again from
  // the encoder's parameters and the stored switch) and validates every part; it is much
  // faster than compiling (no lowering, no FFTs).
  ckks::Bytes save() const;
  void save_file(const std::string& path) const;  // streamed in pieces of 64 MB (ckks::ByteWriter)
  void save(const std::function<void(std::span<const std::uint8_t>)>& sink) const;
  // With `backing` (what keeps `bytes` alive, e.g. the file mapping), the just-in-time
  // diagonals are read in place: processes mapping the same file share those pages.
  static CompiledPatchCNN load(const ckks::Encoder& encoder, std::span<const std::uint8_t> bytes,
                               const std::shared_ptr<const ckks::Backing>& backing = {});

 private:
  static CompiledPatchCNN build(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                                double scale, std::size_t plaintext_budget, std::size_t lanes, Compilation mode,
                                std::shared_ptr<const HalfRing> half_ring);
  // The embedding's slot-sum steps (normalisation, matching) with their level.
  std::map<long, std::size_t> slot_sum_levels() const;
  const ckks::Encoder* encoder_ = nullptr;
  std::shared_ptr<const HalfRing> half_ring_;
  std::vector<CompiledBackbone> groups_;
  std::size_t patches_ = 0;
  L2NormPoly l2_;
  bool classifier_ = false;
  std::size_t features_ = 0;
};

}  // namespace pfhe::nn
