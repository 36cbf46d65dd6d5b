#include "nn/compiled_backbone.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "nn/graph_passes.h"
#include "nn/linear_map.h"

namespace pfhe::nn {

namespace {

// Per lane: HerPN as w2 * (x (x + a1) + a0); returns the compiled factored part (every
// lane's a1, a0 side by side) and w2 per lane and channel.
using LaneScales = std::vector<std::vector<double>>;

CompiledQuadratic make_herpn(const ckks::Encoder& enc, Compilation mode, const std::vector<const HerPN*>& herpns,
                             const Layout& layout, std::size_t level, double scale, LaneScales& w2) {
  std::vector<Tensor> a1, a0;
  w2.clear();
  const std::size_t plane = layout.shape.height * layout.shape.width;
  for (const HerPN* herpn : herpns) {
    const Quadratic q = herpn->fuse();
    if (q.w2.size() != layout.shape.channels) throw std::invalid_argument("compile: HerPN channel count mismatch");
    a1.emplace_back(layout.shape);
    a0.emplace_back(layout.shape);
    for (std::size_t c = 0; c < q.w2.size(); ++c) {
      if (!(std::fabs(q.w2[c]) > 1e-12))
        throw std::invalid_argument("compile: HerPN channel " + std::to_string(c) +
                                    " has a zero quadratic coefficient (gamma = 0); its factored form is undefined");
      std::fill_n(a1.back().data.begin() + static_cast<std::ptrdiff_t>(c * plane), plane, q.w1[c] / q.w2[c]);
      std::fill_n(a0.back().data.begin() + static_cast<std::ptrdiff_t>(c * plane), plane, q.w0[c] / q.w2[c]);
    }
    w2.push_back(q.w2);
  }
  return make_quadratic(enc, mode, a1, a0, layout, level, scale);
}

// conv(w2 (.) x): the input-channel scaling folded into the weights.
Conv2d fold_input_scale(Conv2d conv, const std::vector<double>& w2) {
  if (w2.size() != conv.in_channels) throw std::invalid_argument("compile: channel count mismatch before a conv");
  for (std::size_t o = 0; o < conv.out_channels; ++o)
    for (std::size_t c = 0; c < conv.in_channels; ++c)
      for (std::size_t t = 0; t < conv.kernel * conv.kernel; ++t)
        conv.weight[(o * conv.in_channels + c) * conv.kernel * conv.kernel + t] *= w2[c];
  return conv;
}

// head(bn1d(flatten(avgpool(w2 (.) x)))) as one Linear over the flattened input tensor.
Linear pool_head_linear(const Shape& in, std::size_t pool, const std::vector<double>& w2, const BatchNorm& bn1d,
                        const Linear* head) {
  const AdaptiveAvgPool2d adaptive{pool};
  const Shape pooled = adaptive.output_shape(in);
  const std::size_t features = pooled.size();
  std::vector<double> scale, shift;
  bn1d.affine_form(scale, shift);
  if (scale.size() != features) throw std::invalid_argument("compile: BatchNorm1d size differs from the pooled features");
  const std::size_t outs = head ? head->out_features : features;
  if (head && head->in_features != features) throw std::invalid_argument("compile: head input size mismatch");
  const std::size_t bh = in.height / pool, bw = in.width / pool;
  const double inv_block = 1.0 / static_cast<double>(bh * bw);
  Linear l{in.size(), outs, std::vector<double>(outs * in.size(), 0.0), std::vector<double>(outs, 0.0)};
  for (std::size_t o = 0; o < outs; ++o) {
    double b = head && !head->bias.empty() ? head->bias[o] : 0.0;
    for (std::size_t f = 0; f < features; ++f) {
      const double hw = head ? head->weight[o * features + f] : (o == f ? 1.0 : 0.0);
      if (hw == 0.0) continue;
      b += hw * shift[f];
      const std::size_t c = f / (pool * pool), py = (f / pool) % pool, px = f % pool;
      for (std::size_t y = py * bh; y < (py + 1) * bh; ++y)
        for (std::size_t x = px * bw; x < (px + 1) * bw; ++x)
          l.weight[o * in.size() + (c * in.height + y) * in.width + x] += hw * scale[f] * inv_block * w2[c];
    }
    l.bias[o] = b;
  }
  return l;
}

}  // namespace

template <typename Self>
auto CompiledBackbone::linear_layers_of(Self& self) {
  std::vector<decltype(&*self.conv0_)> layers = {&*self.conv0_};
  for (auto& b : self.blocks_) {
    layers.push_back(&b.conv1);
    layers.push_back(&b.conv2);
    layers.push_back(&b.shortcut);
  }
  layers.push_back(&*self.pool_head_);
  return layers;
}

CompiledBackbone CompiledBackbone::compile(const Backbone& model, const ckks::Encoder& enc, const Shape& patch,
                                           std::size_t input_level, double scale, const Linear* head,
                                           std::size_t plaintext_budget) {
  std::vector<const Linear*> heads;
  if (head) heads.push_back(head);
  return compile({&model}, enc, patch, input_level, scale, heads, 1, plaintext_budget);
}

namespace {

void check_same_architecture(const std::vector<const Backbone*>& models) {
  for (const Backbone* m : models) {
    m->validate();
    const Backbone& first = *models.front();
    bool same = m->blocks.size() == first.blocks.size() && m->conv0.out_channels == first.conv0.out_channels &&
                m->pool_size == first.pool_size;
    for (std::size_t i = 0; same && i < m->blocks.size(); ++i)
      same = m->blocks[i].conv1.out_channels == first.blocks[i].conv1.out_channels &&
             m->blocks[i].conv1.stride == first.blocks[i].conv1.stride &&
             m->blocks[i].shortcut_conv.has_value() == first.blocks[i].shortcut_conv.has_value();
    if (!same) throw std::invalid_argument("compile: the backbones of one lane group differ in architecture");
  }
}

// One layer of every lane's model, transformed.
template <typename F>
auto per_lane(const std::vector<const Backbone*>& models, F&& f) {
  std::vector<decltype(f(*models.front(), std::size_t{0}))> out;
  for (std::size_t l = 0; l < models.size(); ++l) out.push_back(f(*models[l], l));
  return out;
}

// The layout a block output keeps after the switch to the half ring: the first half of its
// slots, which hold the first half of its replicas (nn/layout.h: copies follow each other
// per lane), so the data needs no moving.
Layout half_ring_layout(const Layout& big, const ckks::Context& half, std::size_t level) {
  if (half.max_level() != level)
    throw std::invalid_argument("compile: the half ring starts at level " + std::to_string(half.max_level()) +
                                ", the switch happens at level " + std::to_string(level));
  if (big.rotated || !big.cyclic() || big.replicas < 2 || half.n() / 2 != big.slots / 2)
    throw std::invalid_argument("compile: a ring switch needs a fully replicated layout with at least two copies "
                                "and a half ring of half the slots");
  Layout out = big;
  out.slots = big.slots / 2;
  out.replicas = big.replicas / 2;
  out.validate();
  return out;
}

}  // namespace

CompiledBackbone CompiledBackbone::compile(const std::vector<const Backbone*>& models, const ckks::Encoder& big_encoder,
                                           const Shape& patch, std::size_t input_level, double scale,
                                           const std::vector<const Linear*>& heads, std::size_t lanes,
                                           std::size_t plaintext_budget, Compilation mode,
                                           const RingSwitchPlan* ring_switch) {
  if (models.empty() || models.size() > lanes) throw std::invalid_argument("compile: 1 to `lanes` backbones per group");
  if (!heads.empty() && heads.size() != models.size()) throw std::invalid_argument("compile: one head block per backbone");
  if (heads.empty() && lanes > 1) throw std::invalid_argument("compile: lane groups need head blocks (they are summed)");
  check_same_architecture(models);
  const ckks::Encoder* enc = &big_encoder;  // the half ring's after a switch
  std::size_t slots = enc->context().n() / 2;
  CompiledBackbone cb;
  Layout layout = with_full_replication(Layout{patch, 1, slots, 1, lanes});
  std::size_t level = input_level;
  Layout out = conv_output_layout(models.front()->conv0, layout);
  cb.conv0_ = make_linear(*enc, mode, lower_conv(per_lane(models, [](const Backbone& m, std::size_t) { return m.conv0; }), layout, out),
                          layout, out, level, scale, scale);
  layout = out;
  --level;
  LaneScales w2;
  for (std::size_t bi = 0; bi < models.front()->blocks.size(); ++bi) {
    const auto block = [&](std::size_t l) -> const HerPNConvBlock& { return models[l]->blocks[bi]; };
    CompiledQuadratic h1 = make_herpn(
        *enc, mode, per_lane(models, [&](const Backbone&, std::size_t l) { return &block(l).herpn1; }), layout, level, scale, w2);
    const Layout z_layout = layout;
    const std::size_t z_level = level - 1;
    const double z_scale = h1.output_scale;
    const LaneScales z_w2 = w2;

    const auto conv1 = per_lane(models, [&](const Backbone&, std::size_t l) { return fold_input_scale(block(l).conv1, z_w2[l]); });
    // conv1 writes rotated copies so that conv2 can split its channel offsets over them
    // (conv2 needs 1/copies of its diagonals). A strided conv1 reading a single copy gives
    // up its own rotate-and-sum split for that and doubles its diagonals; measured on
    // CryptoFace's block 2 (one copy in, two out) that costs as much as it saves (6.5 s
    // vs 6.1 s for the pair), so that case keeps plain copies. Block 4 (two copies in,
    // four out) gains 1.2 s, blocks 3 and 5 (stride 1) 0.9 s and 2.0 s. Re-measured in
    // session 9 with the ring switch: rotated copies for every block save 0.4-0.6 s on
    // block 2's pair in one lane group, but through the CLI (threads W=2, three runs each)
    // 24.8-28.1 s against 26.3-26.8 s is no difference, at +0.3 GB peak RSS: kept as is.
    Layout h_layout = conv_output_layout(conv1.front(), z_layout);
    if (conv1.front().stride == 1 || z_layout.replicas > 1) h_layout = with_rotated_replicas(h_layout);
    CompiledLinear c1 = make_linear(*enc, mode, lower_conv(conv1, z_layout, h_layout), z_layout, h_layout, z_level, z_scale, scale);
    CompiledQuadratic h2 = make_herpn(
        *enc, mode, per_lane(models, [&](const Backbone&, std::size_t l) { return &block(l).herpn2; }), h_layout, z_level - 1,
        scale, w2);
    const auto conv2 = per_lane(models, [&](const Backbone&, std::size_t l) { return fold_input_scale(block(l).conv2, w2[l]); });
    const Layout m_layout = conv_output_layout(conv2.front(), h_layout);
    CompiledLinear c2 =
        make_linear(*enc, mode, lower_conv(conv2, h_layout, m_layout), h_layout, m_layout, z_level - 2, h2.output_scale, scale);
    // The shortcut reads z (three levels up) and lands where conv2 lands.
    SlotLinearMap shortcut_map;
    if (block(0).shortcut_conv) {
      const auto sc = per_lane(models, [&](const Backbone&, std::size_t l) {
        return fold_batch_norm(fold_input_scale(*block(l).shortcut_conv, z_w2[l]), *block(l).shortcut_bn);
      });
      if (!(conv_output_layout(sc.front(), z_layout).shape == m_layout.shape))
        throw std::invalid_argument("compile: shortcut and main path shapes differ");
      shortcut_map = lower_conv(sc, z_layout, m_layout);
    } else {
      shortcut_map = lower_channel_affine(
          per_lane(models, [&](const Backbone&, std::size_t l) {
            return ChannelAffine{z_w2[l], std::vector<double>(z_w2[l].size(), 0.0)};
          }),
          z_layout);
    }
    CompiledLinear s = make_linear(*enc, mode, shortcut_map, z_layout, m_layout, z_level - 2, z_scale, scale);
    cb.blocks_.push_back({std::move(h1), std::move(c1), std::move(h2), std::move(c2), std::move(s)});
    layout = m_layout;
    level = z_level - 3;
    if (ring_switch && bi == ring_switch->after_block) {
      layout = half_ring_layout(layout, ring_switch->half_encoder.context(), level);
      enc = &ring_switch->half_encoder;
      slots = layout.slots;
      cb.switch_after_ = bi;
    }
  }
  if (ring_switch && !cb.switches_ring())
    throw std::invalid_argument("compile: no block " + std::to_string(ring_switch->after_block) + " to switch rings after");
  cb.pool_herpn_ = make_herpn(
      *enc, mode, per_lane(models, [](const Backbone& m, std::size_t) { return &m.pool_herpn; }), layout, level, scale, w2);
  const auto fused = per_lane(models, [&](const Backbone& m, std::size_t l) {
    return pool_head_linear(layout.shape, m.pool_size, w2[l], m.bn1d, heads.empty() ? nullptr : heads[l]);
  });
  const Layout head_layout = with_full_replication(Layout{{fused.front().out_features, 1, 1}, 1, slots});
  cb.pool_head_ = make_linear(*enc, mode, lower_linear(fused, layout, head_layout), layout, head_layout, level - 1,
                              cb.pool_herpn_->output_scale, scale);
  if (mode == Compilation::kPlanOnly) return cb;
  auto layers = linear_layers_of(cb);
  pre_encode_within_budget({layers.begin(), layers.end()}, plaintext_budget);
  return cb;
}

double CompiledBackbone::input_scale() const {
  // The first transform maps the input scale s to its output scale t with diagonals at q_level t / s.
  return prime_at(conv0_->transform.encoder_context(), conv0_->input_level) * conv0_->output_scale /
         conv0_->transform.diagonal_scale();
}

std::vector<const CompiledLinear*> CompiledBackbone::layers_in_ring(bool half) const {
  std::vector<const CompiledLinear*> out;
  if (!half) out.push_back(&*conv0_);
  for (std::size_t i = 0; i < blocks_.size(); ++i)
    if (half == (switches_ring() && i > switch_after_))
      for (const CompiledLinear* l : {&blocks_[i].conv1, &blocks_[i].conv2, &blocks_[i].shortcut}) out.push_back(l);
  if (half == switches_ring()) out.push_back(&*pool_head_);
  return out;
}

std::map<long, std::size_t> CompiledBackbone::rotation_levels() const {
  return nn::rotation_levels(layers_in_ring(false));
}

std::map<long, std::size_t> CompiledBackbone::half_ring_rotation_levels() const {
  return nn::rotation_levels(layers_in_ring(true));
}

std::size_t CompiledBackbone::plaintext_bytes() const {
  std::size_t bytes = 0;
  for (const CompiledLinear* l : linear_layers_of(*this))
    bytes += l->transform.plaintext_bytes();
  return bytes;
}

ckks::Ciphertext CompiledBackbone::run(const ckks::Evaluator& big_eval, const ckks::Ciphertext& patch,
                                       std::vector<StepTiming>* timings, const HalfRingEvaluation* half) const {
  if (switches_ring() != (half != nullptr))
    throw std::invalid_argument(switches_ring() ? "run: this lane group switches rings and needs the half-ring keys"
                                                : "run: this lane group does not switch rings");
  const ckks::Evaluator* eval = &big_eval;
  // Runs one step and, when asked, records its name, input level and time.
  const auto step = [&](const std::string& name, const auto& op, const ckks::Ciphertext& x) {
    const auto start = std::chrono::steady_clock::now();
    ckks::Ciphertext y = op.apply(*eval, x);
    if (timings) {
      StepTiming t{name, x.level(), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
      if constexpr (std::is_same_v<std::decay_t<decltype(op)>, CompiledLinear>) {
        t.diagonals = op.transform.diagonal_count();
        t.baby_rotations = op.transform.baby_rotations();
        t.giant_rotations = op.transform.giant_rotations();
        t.sum_rotations = op.post_sum_steps.size();
      }
      timings->push_back(std::move(t));
    }
    return y;
  };
  ckks::Ciphertext x = step("conv0", *conv0_, patch);
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    const auto& b = blocks_[i];
    const std::string name = "block" + std::to_string(i + 1) + ".";
    const ckks::Ciphertext z = step(name + "herpn1", b.herpn1, x);
    const ckks::Ciphertext h = step(name + "conv1", b.conv1, z);
    const ckks::Ciphertext main = step(name + "conv2", b.conv2, step(name + "herpn2", b.herpn2, h));
    x = step(name + "shortcut", b.shortcut, z);
    eval->add_inplace(x, main);
    if (switches_ring() && i == switch_after_) {
      const auto start = std::chrono::steady_clock::now();
      x = ckks::switch_to_half_ring(half->switch_context, half->evaluator.context(), half->switch_key, std::move(x));
      eval = &half->evaluator;
      if (timings)
        timings->push_back({"ring switch", x.level(),
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
    }
  }
  return step("pool+head", *pool_head_, step("pool.herpn", *pool_herpn_, x));
}

void CompiledBackbone::save(ckks::ByteWriter& w) const {
  // Each layer is stored in the ring it runs in (the switch block's successors in the half ring).
  const ckks::Context* ctx = &conv0_->transform.encoder_context();
  w.reserve_more(plaintext_bytes() + (std::size_t{1} << 24));
  w.put<std::uint64_t>(switch_after_);
  save_linear(w, *ctx, *conv0_);
  w.put<std::uint64_t>(blocks_.size());
  for (const auto& b : blocks_) {
    save_quadratic(w, *ctx, b.herpn1);
    save_linear(w, *ctx, b.conv1);
    save_quadratic(w, *ctx, b.herpn2);
    save_linear(w, *ctx, b.conv2);
    save_linear(w, *ctx, b.shortcut);
    if (&b - blocks_.data() == static_cast<std::ptrdiff_t>(switch_after_))
      ctx = &pool_head_->transform.encoder_context();
  }
  save_quadratic(w, *ctx, *pool_herpn_);
  save_linear(w, *ctx, *pool_head_);
  w.align(8);  // the next group starts 8-aligned too (coefficients are read in place)
}

CompiledBackbone CompiledBackbone::load(const ckks::Encoder& big_encoder, ckks::ByteReader& r,
                                        const std::shared_ptr<const ckks::Backing>& backing,
                                        const RingSwitchPlan* ring_switch) {
  const char* what = "compiled backbone";
  CompiledBackbone cb;
  cb.switch_after_ = r.get<std::uint64_t>(what);
  if (cb.switch_after_ != (ring_switch ? ring_switch->after_block : kNoSwitch))
    throw ckks::SerializationError("compiled backbone: its ring switch differs from the model's");
  const ckks::Encoder* enc = &big_encoder;
  cb.conv0_ = load_linear(*enc, r, backing);
  const std::size_t blocks = r.get_count(what, 64);
  if (cb.switches_ring() && cb.switch_after_ >= blocks)
    throw ckks::SerializationError("compiled backbone: it switches rings after a block it does not have");
  for (std::size_t i = 0; i < blocks; ++i) {
    CompiledQuadratic h1 = load_quadratic(enc->context(), r);
    CompiledLinear c1 = load_linear(*enc, r, backing);
    CompiledQuadratic h2 = load_quadratic(enc->context(), r);
    CompiledLinear c2 = load_linear(*enc, r, backing);
    CompiledLinear s = load_linear(*enc, r, backing);
    cb.blocks_.push_back({std::move(h1), std::move(c1), std::move(h2), std::move(c2), std::move(s)});
    if (i == cb.switch_after_) enc = &ring_switch->half_encoder;
  }
  cb.pool_herpn_ = load_quadratic(enc->context(), r);
  cb.pool_head_ = load_linear(*enc, r, backing);
  r.align(8, what);
  return cb;
}

}  // namespace pfhe::nn
