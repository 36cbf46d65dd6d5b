#include "nn/patch_cnn.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "ckks/polynomial.h"
#include "ckks/serialization.h"
#include "nn/linear_map.h"

namespace pfhe::nn {

void PatchCNN::validate() const {
  if (grid == 0 || patch_size == 0) throw std::invalid_argument("PatchCNN: empty grid");
  if (backbones.size() != grid * grid)
    throw std::invalid_argument("PatchCNN: " + std::to_string(backbones.size()) + " backbones for a " +
                                std::to_string(grid) + "x" + std::to_string(grid) + " grid");
  for (const auto& b : backbones) b.validate();
  head.validate();
  head_bn.validate();
  const std::size_t features = backbones[0].feature_shape({3, patch_size, patch_size}).size();
  if (head.in_features != grid * grid * features || head_bn.channels() != head.out_features)
    throw std::invalid_argument("PatchCNN: head sizes do not match the backbones");
  if (!head_bn.gamma.empty() || !head_bn.beta.empty())
    throw std::invalid_argument("PatchCNN: the head BatchNorm1d is affine-free in CryptoFace");
}

Tensor extract_patch(const Tensor& image, std::size_t grid, std::size_t size, std::size_t index) {
  expect_shape(image, {3, grid * size, grid * size}, "extract_patch");
  if (index >= grid * grid) throw std::invalid_argument("extract_patch: patch index out of range");
  Tensor p({3, size, size});
  const std::size_t y0 = (index / grid) * size, x0 = (index % grid) * size;
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t y = 0; y < size; ++y)
      for (std::size_t x = 0; x < size; ++x) p.at(c, y, x) = image.at(c, y0 + y, x0 + x);
  return p;
}

Tensor PatchCNN::patch(const Tensor& image, std::size_t index) const {
  return extract_patch(image, grid, patch_size, index);
}

Tensor PatchCNN::features(const Tensor& image, const TensorObserver* observe) const {
  validate();
  Tensor concat({head.in_features, 1, 1});
  std::size_t offset = 0;
  for (std::size_t p = 0; p < backbones.size(); ++p) {
    const Tensor f = backbones[p].forward(patch(image, p), observe, "nets." + std::to_string(p));
    std::copy(f.data.begin(), f.data.end(), concat.data.begin() + static_cast<std::ptrdiff_t>(offset));
    offset += f.data.size();
  }
  return concat;
}

Tensor PatchCNN::embedding(const Tensor& image, const TensorObserver* observe) const {
  return head_bn.forward(head.forward(features(image, observe)));
}

double sum_of_squares(const Tensor& t) { return std::inner_product(t.data.begin(), t.data.end(), t.data.begin(), 0.0); }

Tensor PatchCNN::normalize(Tensor e) const {
  const double factor = l2(sum_of_squares(e));
  for (auto& v : e.data) v *= factor;
  return e;
}

Linear PatchCNN::head_block(std::size_t p) const {
  std::vector<double> scale, shift;
  head_bn.affine_form(scale, shift);
  const std::size_t features = head.in_features / (grid * grid), outs = head.out_features;
  Linear block{features, outs, std::vector<double>(features * outs), std::vector<double>(outs)};
  const double share = 1.0 / static_cast<double>(grid * grid);
  for (std::size_t o = 0; o < outs; ++o) {
    for (std::size_t i = 0; i < features; ++i)
      block.weight[o * features + i] = head.weight[o * head.in_features + p * features + i] * scale[o];
    block.bias[o] = ((head.bias.empty() ? 0.0 : head.bias[o]) * scale[o] + shift[o]) * share;
  }
  return block;
}

Graph PatchCNN::to_graph() const {
  validate();
  Graph g(image_shape(), "image");
  std::size_t sum = 0;
  for (std::size_t p = 0; p < backbones.size(); ++p) {
    const std::string index = std::to_string(p), net = "nets." + index;
    const std::size_t crop =
        g.add(net + ".crop", Crop{p / grid * patch_size, p % grid * patch_size, patch_size, patch_size}, 0);
    const std::size_t head = g.add("head." + index, head_block(p), backbones[p].append_to(g, net, crop));
    std::string sum_name = "embedding";  // the last sum; the partial ones numbered
    if (p + 1 < backbones.size()) sum_name += "." + index;
    sum = p == 0 ? head : g.add(sum_name, Add{}, {sum, head});
  }
  if (!classifier) g.add("l2", L2Normalize{{l2.c, l2.b, l2.a}}, sum);
  return g;
}

L2FitPoints l2_fit_points(std::vector<double> ys) {
  if (ys.size() < 3) throw std::invalid_argument("L2 fit: needs at least 3 samples");
  std::sort(ys.begin(), ys.end());
  ys.resize(ys.size() - ys.size() / 100);  // trim the top 1 %
  const double mu = std::accumulate(ys.begin(), ys.end(), 0.0) / static_cast<double>(ys.size());
  double var = 0;
  for (double y : ys) var += (y - mu) * (y - mu);
  const double sigma = std::sqrt(var / static_cast<double>(ys.size()));
  if (!(sigma > 0) || !(mu > 0))
    throw std::invalid_argument("L2 fit: degenerate sum-of-squares statistics (mean " + std::to_string(mu) +
                                ", deviation " + std::to_string(sigma) + ")");
  // Decision: with heavy-tailed statistics (sigma >= mu/2) the lower point is clamped at
  // mu/2, keeping all three points on positive y where 1/sqrt is defined.
  return {std::max(mu - sigma, mu / 2), mu, mu + sigma};
}

L2NormPoly fit_l2_poly(std::vector<double> ys) {
  const L2FitPoints points = l2_fit_points(std::move(ys));
  // Quadratic through (y_k, 1/sqrt(y_k)), k = 0..2 (Lagrange form, then power coefficients).
  const double xs[3] = {points.lo, points.mid, points.hi};
  double a = 0, b = 0, c = 0;
  for (int k = 0; k < 3; ++k) {
    const double f = 1.0 / std::sqrt(xs[k]);
    const double u = xs[(k + 1) % 3], v = xs[(k + 2) % 3];
    const double denom = (xs[k] - u) * (xs[k] - v);
    a += f / denom;
    b += -f * (u + v) / denom;
    c += f * u * v / denom;
  }
  return {a, b, c};
}

void fit_l2_norm(PatchCNN& model, const std::vector<Tensor>& images) {
  model.l2 = fit_l2_poly(parallel_map(images, [&](const Tensor& img) { return sum_of_squares(model.embedding(img)); }));
}

double match_score(const Tensor& probe, const Tensor& enrolled, double threshold) {
  if (probe.data.size() != enrolled.data.size()) throw std::invalid_argument("match_score: size mismatch");
  double d = 0;
  for (std::size_t i = 0; i < probe.data.size(); ++i) d += (probe.data[i] - enrolled.data[i]) * (probe.data[i] - enrolled.data[i]);
  return d - threshold;
}

std::size_t max_lanes(const Backbone& model, const Shape& patch, std::size_t slots) {
  // Walk the one-lane layouts of every layer and keep the largest span.
  Layout layout{patch, 1, slots};
  std::size_t span = layout.span();
  layout = conv_output_layout(model.conv0, layout);
  span = std::max(span, layout.span());
  for (const auto& b : model.blocks) {
    layout = conv_output_layout(b.conv2, conv_output_layout(b.conv1, layout));
    span = std::max(span, layout.span());
  }
  return std::bit_floor(slots / span);
}

CompiledBackbone CompiledPatchCNN::compile_group(const PatchCNN& model, const ckks::Encoder& encoder,
                                                std::size_t input_level, double scale, std::size_t plaintext_budget,
                                                std::size_t lanes, std::size_t g, Compilation mode,
                                                const HalfRing* half_ring) {
  const std::size_t patches = model.backbones.size();
  if (lanes == 0 || g * lanes >= patches)
    throw std::invalid_argument("compile_group: lane group " + std::to_string(g) + " of " + std::to_string(lanes) +
                                " lanes is beyond the model's " + std::to_string(patches) + " patches");
  std::vector<Linear> head_blocks;
  std::vector<const Backbone*> members;
  for (std::size_t p = g * lanes; p < std::min(patches, (g + 1) * lanes); ++p) {
    members.push_back(&model.backbones[p]);
    head_blocks.push_back(model.head_block(p));
  }
  std::vector<const Linear*> heads;
  for (const Linear& h : head_blocks) heads.push_back(&h);
  const Shape patch{3, model.patch_size, model.patch_size};
  return CompiledBackbone::compile(members, encoder, patch, input_level, scale, heads, lanes, plaintext_budget, mode,
                                   half_ring ? &half_ring->plan : nullptr);
}

CompiledPatchCNN CompiledPatchCNN::compile(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                                           double scale, std::size_t plaintext_budget, std::size_t lanes,
                                           std::shared_ptr<const HalfRing> half_ring) {
  return build(model, encoder, input_level, scale, plaintext_budget, lanes, Compilation::kFull, std::move(half_ring));
}

CompiledPatchCNN CompiledPatchCNN::plan(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                                        double scale, std::size_t lanes, std::shared_ptr<const HalfRing> half_ring) {
  return build(model, encoder, input_level, scale, 0, lanes, Compilation::kPlanOnly, std::move(half_ring));
}

CompiledPatchCNN CompiledPatchCNN::build(const PatchCNN& model, const ckks::Encoder& encoder, std::size_t input_level,
                                         double scale, std::size_t plaintext_budget, std::size_t lanes,
                                         Compilation mode, std::shared_ptr<const HalfRing> half_ring) {
  model.validate();
  CompiledPatchCNN c;
  c.encoder_ = &encoder;
  c.half_ring_ = std::move(half_ring);
  if (c.half_ring_ && c.half_ring_->big_fingerprint != encoder.context().params().fingerprint())
    throw std::invalid_argument("compile: the half ring was derived from other parameters than the encoder's");
  c.patches_ = model.backbones.size();
  const Shape patch{3, model.patch_size, model.patch_size};
  const std::size_t fit = max_lanes(model.backbones.front(), patch, encoder.context().n() / 2);
  if (lanes == 0) lanes = std::min(fit, std::bit_ceil(c.patches_));
  if (lanes == 0 || (lanes & (lanes - 1)) != 0 || lanes > fit)
    throw std::invalid_argument("compile: lanes must be a power of two up to " + std::to_string(fit) + " for this model");
  const std::size_t groups = (c.patches_ + lanes - 1) / lanes;
  for (std::size_t g = 0; g < groups; ++g)
    c.groups_.push_back(
        compile_group(model, encoder, input_level, scale, plaintext_budget / groups, lanes, g, mode, c.half_ring_.get()));
  c.l2_ = model.l2;
  c.features_ = model.head.out_features;
  c.classifier_ = model.classifier;
  if (!c.classifier_ && c.groups_.front().output_level() < 5)
    throw std::invalid_argument("compile: " + std::to_string(input_level) +
                                " levels leave too few for normalisation and matching (need backbone depth + 5)");
  return c;
}

std::map<long, std::size_t> CompiledPatchCNN::slot_sum_levels() const {
  std::map<long, std::size_t> levels;
  if (classifier_) return levels;
  // Slot sums over one replica of the embedding, after the first squaring.
  for (std::size_t step = 1; step < embedding_layout().span(); step <<= 1)
    levels[static_cast<long>(step)] = groups_.front().output_level() - 1;
  return levels;
}

namespace {
// Union of key sets, each step at the highest level any of them needs.
void merge_levels(std::map<long, std::size_t>& into, const std::map<long, std::size_t>& more) {
  for (const auto& [step, level] : more) into[step] = std::max(into[step], level);
}
}  // namespace

std::map<long, std::size_t> CompiledPatchCNN::rotation_levels() const {
  std::map<long, std::size_t> levels;
  for (const auto& b : groups_) merge_levels(levels, b.rotation_levels());
  if (!switches_ring()) merge_levels(levels, slot_sum_levels());
  return levels;
}

std::map<long, std::size_t> CompiledPatchCNN::half_ring_rotation_levels() const {
  std::map<long, std::size_t> levels;
  if (!switches_ring()) return levels;
  for (const auto& b : groups_) merge_levels(levels, b.half_ring_rotation_levels());
  merge_levels(levels, slot_sum_levels());
  return levels;
}

std::size_t CompiledPatchCNN::plaintext_bytes() const {
  std::size_t bytes = 0;
  for (const auto& b : groups_) bytes += b.plaintext_bytes();
  return bytes;
}

std::size_t CompiledPatchCNN::depth() const { return groups_.front().depth() + (classifier_ ? 0 : 5); }

ckks::Ciphertext CompiledPatchCNN::aggregate(const ckks::Evaluator& eval, std::vector<ckks::Ciphertext> heads) const {
  if (heads.size() != groups_.size())
    throw std::invalid_argument("aggregate: " + std::to_string(heads.size()) + " head outputs for " +
                                std::to_string(groups_.size()) + " lane groups");
  // Pairwise tree: the same association order whatever executor produced the heads.
  while (heads.size() > 1) {
    std::vector<ckks::Ciphertext> next;
    for (std::size_t i = 0; i + 1 < heads.size(); i += 2) next.push_back(eval.add(heads[i], heads[i + 1]));
    if (heads.size() % 2) next.push_back(std::move(heads.back()));
    heads = std::move(next);
  }
  return std::move(heads.front());
}

ckks::Ciphertext CompiledPatchCNN::normalize(const ckks::Evaluator& eval, const ckks::Ciphertext& embedding) const {
  if (classifier_) throw std::logic_error("normalize: a classifier's output is its logits");
  ckks::Ciphertext sq = eval.square_relin(embedding);
  eval.rescale_inplace(sq);
  const ckks::Ciphertext y = sum_over_span(eval, sq, embedding_layout().span());
  ckks::Polynomial p;
  p.coeffs = {l2_.c, l2_.b, l2_.a};
  const ckks::Ciphertext factor = ckks::evaluate_polynomial(eval, y, p, embedding.scale);
  ckks::Ciphertext e = embedding;
  eval.drop_to_level_inplace(e, factor.level());
  ckks::Ciphertext out = eval.multiply_relin(e, factor);
  eval.rescale_inplace(out);
  return out;
}

ckks::Ciphertext CompiledPatchCNN::similarity(const ckks::Evaluator& eval, const ckks::Ciphertext& a,
                                              const ckks::Ciphertext& b) const {
  if (classifier_) throw std::logic_error("similarity: a classifier has no embeddings");
  ckks::Ciphertext product = eval.multiply_relin(a, b);
  eval.rescale_inplace(product);
  return sum_over_span(eval, product, embedding_layout().span());
}

ckks::Ciphertext CompiledPatchCNN::match(const ckks::Evaluator& eval, const ckks::Ciphertext& probe,
                                         const ckks::Ciphertext& enrolled, double threshold) const {
  return match_embeddings(eval, probe, enrolled, threshold, embedding_layout().span());
}

namespace {
constexpr char kCompiledMagic[4] = {'P', 'F', 'H', 'C'};
// 2: rotate-and-sum steps per linear layer; 3: rotated copies; 4: the ring switch; 5:
// layouts record their grid (nn/layout.h).
constexpr std::uint32_t kCompiledVersion = 5;
}  // namespace

void CompiledPatchCNN::save(const std::function<void(std::span<const std::uint8_t>)>& sink) const {
  ckks::ByteWriter head;
  head.put_bytes(reinterpret_cast<const std::uint8_t*>(kCompiledMagic), 4);
  head.put<std::uint32_t>(kCompiledVersion);
  head.put<std::uint64_t>(encoder_->context().params().fingerprint());
  // Whole words: every group starts 8-aligned in the file (its coefficients are read in place).
  save_ring_switch(head, half_ring_.get());
  head.put<std::uint64_t>(patches_);
  head.put<std::uint64_t>(groups_.size());
  sink(head.bytes());
  for (const auto& b : groups_) {  // streamed: a group's bytes are never one buffer
    ckks::ByteWriter w(sink);
    b.save(w);
    w.flush();
  }
  ckks::ByteWriter tail;
  tail.put<double>(l2_.a);
  tail.put<double>(l2_.b);
  tail.put<double>(l2_.c);
  tail.put<std::uint64_t>(features_);
  tail.put<std::uint8_t>(classifier_ ? 1 : 0);
  sink(tail.bytes());
}

ckks::Bytes CompiledPatchCNN::save() const {
  ckks::Bytes out;
  save([&](std::span<const std::uint8_t> piece) { out.insert(out.end(), piece.begin(), piece.end()); });
  return out;
}

void CompiledPatchCNN::save_file(const std::string& path) const {
  ckks::FileWriter f(path);
  save([&](std::span<const std::uint8_t> piece) { f.write(piece); });
  f.commit();
}

CompiledPatchCNN CompiledPatchCNN::load(const ckks::Encoder& encoder, std::span<const std::uint8_t> bytes,
                                        const std::shared_ptr<const ckks::Backing>& backing) {
  const char* what = "compiled model";
  ckks::ByteReader r(bytes);
  r.expect_magic_and_version(kCompiledMagic, kCompiledVersion, what);
  if (r.get<std::uint64_t>(what) != encoder.context().params().fingerprint())
    throw ckks::SerializationError("compiled model was made for other parameters (fingerprint mismatch)");
  CompiledPatchCNN c;
  c.encoder_ = &encoder;
  c.half_ring_ = load_ring_switch(encoder.context().params(), r, "compiled model");
  c.patches_ = r.get_count(what, 256);
  const std::size_t groups = r.get_count(what, 256);
  if (c.patches_ == 0 || groups == 0) throw ckks::SerializationError("compiled model: no backbones");
  for (std::size_t g = 0; g < groups; ++g)
    c.groups_.push_back(CompiledBackbone::load(encoder, r, backing, c.half_ring_ ? &c.half_ring_->plan : nullptr));
  const std::size_t lanes = c.groups_.front().input_layout().lanes;
  for (const auto& g : c.groups_)
    if (!(g.input_layout().shape == c.groups_.front().input_layout().shape) || g.input_layout().lanes != lanes ||
        !(g.output_layout().shape == c.groups_.front().output_layout().shape) ||
        g.output_level() != c.groups_.front().output_level())
      throw ckks::SerializationError("compiled model: lane groups disagree in layout or level");
  if ((c.patches_ + lanes - 1) / lanes != groups)
    throw ckks::SerializationError("compiled model: patch count does not match the lane groups");
  c.l2_ = {r.get<double>(what), r.get<double>(what), r.get<double>(what)};
  c.features_ = r.get_count(what, encoder.context().n() / 2);
  const auto classifier = r.get<std::uint8_t>(what);
  if (classifier > 1) throw ckks::SerializationError("compiled model: bad output kind");
  c.classifier_ = classifier == 1;
  r.expect_end(what);
  for (double v : {c.l2_.a, c.l2_.b, c.l2_.c})
    if (!std::isfinite(v)) throw ckks::SerializationError("compiled model: L2 polynomial is not finite");
  return c;
}

}  // namespace pfhe::nn
