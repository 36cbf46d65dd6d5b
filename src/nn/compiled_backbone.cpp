#include "nn/compiled_backbone.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ckks/serialization.h"
#include "nn/linear_map.h"

namespace pfhe::nn {

namespace {

double prime_at(const ckks::Context& ctx, std::size_t level) {
  return static_cast<double>(ctx.ring_q().modulus(level).value());
}

void check_close(double got, double want, const char* what) {
  if (std::fabs(got - want) > 1e-9 * want)
    throw std::logic_error(std::string(what) + ": ciphertext scale differs from the compiled scale");
}

// Every step consumes one level; level 0 has none left.
void require_level(std::size_t level) {
  if (level == 0) throw std::invalid_argument("compile: the model is deeper than the available levels");
}

// A transform from (level, in_scale) landing exactly on (level - 1, target_scale).
CompiledLinear make_linear(const ckks::Encoder& enc, Compilation mode, const SlotLinearMap& map, const Layout& in,
                           const Layout& out, std::size_t level, double in_scale, double target_scale) {
  require_level(level);
  const double diagonal_scale = prime_at(enc.context(), level) * target_scale / in_scale;
  if (mode == Compilation::kPlanOnly)
    return {level, target_scale, ckks::LinearTransform::plan(enc, map.diagonal_indices(), in.slots, level, diagonal_scale),
            std::nullopt, in, out, map.post_sum_steps};
  CompiledLinear c{level, target_scale,
                   ckks::LinearTransform(enc, map.diagonals(), in.slots, level, 0, diagonal_scale,
                                         ckks::DiagonalStorage::kJustInTime),
                   std::nullopt, in, out, map.post_sum_steps};
  if (std::any_of(map.bias.begin(), map.bias.end(), [](double b) { return b != 0.0; }))
    c.bias = enc.encode(map.bias, level - 1, target_scale);
  return c;
}

// Per lane: HerPN as w2 * (x (x + a1) + a0); returns the compiled factored part (every
// lane's a1, a0 side by side) and w2 per lane and channel.
using LaneScales = std::vector<std::vector<double>>;

CompiledQuadratic make_quadratic(const ckks::Encoder& enc, const std::vector<const HerPN*>& herpns, const Layout& layout,
                                 std::size_t level, double scale, LaneScales& w2) {
  require_level(level);
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
  const double output_scale = scale * scale / prime_at(enc.context(), level);
  return CompiledQuadratic{level, scale, output_scale, enc.encode(pack_lanes(a1, layout), level, scale),
                           enc.encode(pack_lanes(a0, layout), level - 1, output_scale)};
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

// bn(conv(x)) as one conv.
Conv2d fold_output_bn(Conv2d conv, const BatchNorm& bn) {
  std::vector<double> scale, shift;
  bn.affine_form(scale, shift);
  if (scale.size() != conv.out_channels) throw std::invalid_argument("compile: BatchNorm after conv: channel mismatch");
  const std::size_t per_out = conv.in_channels * conv.kernel * conv.kernel;
  std::vector<double> bias(conv.out_channels);
  for (std::size_t o = 0; o < conv.out_channels; ++o) {
    for (std::size_t k = 0; k < per_out; ++k) conv.weight[o * per_out + k] *= scale[o];
    bias[o] = shift[o] + (conv.bias.empty() ? 0.0 : conv.bias[o] * scale[o]);
  }
  conv.bias = bias;
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

ckks::Ciphertext CompiledLinear::apply(const ckks::Evaluator& eval, const ckks::Ciphertext& x) const {
  if (x.level() < input_level)
    throw std::invalid_argument("compiled linear layer expects level " + std::to_string(input_level) + ", input at " +
                                std::to_string(x.level()));
  ckks::Ciphertext in = x;
  eval.drop_to_level_inplace(in, input_level);
  ckks::Ciphertext y = transform.apply(eval, in);
  eval.rescale_inplace(y);
  check_close(y.scale, output_scale, "compiled linear layer");
  y.scale = output_scale;
  for (long step : post_sum_steps) eval.add_inplace(y, eval.rotate(y, step));
  if (bias) eval.add_plain_inplace(y, *bias);
  return y;
}

ckks::Ciphertext CompiledQuadratic::apply(const ckks::Evaluator& eval, const ckks::Ciphertext& x) const {
  if (x.level() != input_level) throw std::invalid_argument("compiled HerPN: input level mismatch");
  check_close(x.scale, input_scale, "compiled HerPN");
  ckks::Ciphertext shifted = x;
  eval.add_plain_inplace(shifted, a1);
  ckks::Ciphertext y = eval.multiply_relin(x, shifted);
  eval.rescale_inplace(y);
  check_close(y.scale, output_scale, "compiled HerPN");
  y.scale = output_scale;
  eval.add_plain_inplace(y, a0);
  return y;
}

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

}  // namespace

CompiledBackbone CompiledBackbone::compile(const std::vector<const Backbone*>& models, const ckks::Encoder& enc,
                                           const Shape& patch, std::size_t input_level, double scale,
                                           const std::vector<const Linear*>& heads, std::size_t lanes,
                                           std::size_t plaintext_budget, Compilation mode) {
  if (models.empty() || models.size() > lanes) throw std::invalid_argument("compile: 1 to `lanes` backbones per group");
  if (!heads.empty() && heads.size() != models.size()) throw std::invalid_argument("compile: one head block per backbone");
  if (heads.empty() && lanes > 1) throw std::invalid_argument("compile: lane groups need head blocks (they are summed)");
  check_same_architecture(models);
  const std::size_t slots = enc.context().n() / 2;
  CompiledBackbone cb;
  Layout layout = with_full_replication(Layout{patch, 1, slots, 1, lanes});
  std::size_t level = input_level;
  Layout out = conv_output_layout(models.front()->conv0, layout);
  cb.conv0_ = make_linear(enc, mode, lower_conv(per_lane(models, [](const Backbone& m, std::size_t) { return m.conv0; }), layout, out),
                          layout, out, level, scale, scale);
  layout = out;
  --level;
  LaneScales w2;
  for (std::size_t bi = 0; bi < models.front()->blocks.size(); ++bi) {
    const auto block = [&](std::size_t l) -> const HerPNConvBlock& { return models[l]->blocks[bi]; };
    CompiledQuadratic h1 = make_quadratic(
        enc, per_lane(models, [&](const Backbone&, std::size_t l) { return &block(l).herpn1; }), layout, level, scale, w2);
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
    // four out) gains 1.2 s, blocks 3 and 5 (stride 1) 0.9 s and 2.0 s.
    Layout h_layout = conv_output_layout(conv1.front(), z_layout);
    if (conv1.front().stride == 1 || z_layout.replicas > 1) h_layout = with_rotated_replicas(h_layout);
    CompiledLinear c1 = make_linear(enc, mode, lower_conv(conv1, z_layout, h_layout), z_layout, h_layout, z_level, z_scale, scale);
    CompiledQuadratic h2 = make_quadratic(
        enc, per_lane(models, [&](const Backbone&, std::size_t l) { return &block(l).herpn2; }), h_layout, z_level - 1,
        scale, w2);
    const auto conv2 = per_lane(models, [&](const Backbone&, std::size_t l) { return fold_input_scale(block(l).conv2, w2[l]); });
    const Layout m_layout = conv_output_layout(conv2.front(), h_layout);
    CompiledLinear c2 =
        make_linear(enc, mode, lower_conv(conv2, h_layout, m_layout), h_layout, m_layout, z_level - 2, h2.output_scale, scale);
    // The shortcut reads z (three levels up) and lands where conv2 lands.
    SlotLinearMap shortcut_map;
    if (block(0).shortcut_conv) {
      const auto sc = per_lane(models, [&](const Backbone&, std::size_t l) {
        return fold_output_bn(fold_input_scale(*block(l).shortcut_conv, z_w2[l]), *block(l).shortcut_bn);
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
    CompiledLinear s = make_linear(enc, mode, shortcut_map, z_layout, m_layout, z_level - 2, z_scale, scale);
    cb.blocks_.push_back({std::move(h1), std::move(c1), std::move(h2), std::move(c2), std::move(s)});
    layout = m_layout;
    level = z_level - 3;
  }
  cb.pool_herpn_ = make_quadratic(
      enc, per_lane(models, [](const Backbone& m, std::size_t) { return &m.pool_herpn; }), layout, level, scale, w2);
  const auto fused = per_lane(models, [&](const Backbone& m, std::size_t l) {
    return pool_head_linear(layout.shape, m.pool_size, w2[l], m.bn1d, heads.empty() ? nullptr : heads[l]);
  });
  const Layout head_layout = with_full_replication(Layout{{fused.front().out_features, 1, 1}, 1, slots});
  cb.pool_head_ = make_linear(enc, mode, lower_linear(fused, layout, head_layout), layout, head_layout, level - 1,
                              cb.pool_herpn_->output_scale, scale);
  if (mode == Compilation::kPlanOnly) return cb;
  // Pre-encode within the budget, lowest level (fewest limbs per diagonal) first.
  auto layers = linear_layers_of(cb);
  std::stable_sort(layers.begin(), layers.end(),
                   [](const CompiledLinear* a, const CompiledLinear* b) { return a->input_level < b->input_level; });
  std::size_t used = 0;
  for (CompiledLinear* l : layers) {
    const std::size_t bytes =
        ckks::LinearTransform::encoded_bytes(enc.context(), l->transform.diagonal_count(), l->input_level);
    if (bytes > plaintext_budget - used) break;
    l->transform.encode_all();
    used += bytes;
  }
  return cb;
}

double CompiledBackbone::input_scale() const {
  // The first transform maps the input scale s to its output scale t with diagonals at q_level t / s.
  return prime_at(conv0_->transform.encoder_context(), conv0_->input_level) * conv0_->output_scale /
         conv0_->transform.diagonal_scale();
}

std::map<long, std::size_t> CompiledBackbone::rotation_levels() const {
  std::map<long, std::size_t> levels;
  for (const CompiledLinear* l : linear_layers_of(*this)) {
    for (long step : l->transform.rotation_steps()) levels[step] = std::max(levels[step], l->input_level);
    for (long step : l->post_sum_steps) levels[step] = std::max(levels[step], l->input_level - 1);
  }
  return levels;
}

std::size_t CompiledBackbone::plaintext_bytes() const {
  std::size_t bytes = 0;
  for (const CompiledLinear* l : linear_layers_of(*this))
    bytes += l->transform.plaintext_bytes();
  return bytes;
}

ckks::Ciphertext CompiledBackbone::run(const ckks::Evaluator& eval, const ckks::Ciphertext& patch,
                                       std::vector<StepTiming>* timings) const {
  // Runs one step and, when asked, records its name, input level and time.
  const auto step = [&](const std::string& name, const auto& op, const ckks::Ciphertext& x) {
    const auto start = std::chrono::steady_clock::now();
    ckks::Ciphertext y = op.apply(eval, x);
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
    eval.add_inplace(x, main);
  }
  return step("pool+head", *pool_head_, step("pool.herpn", *pool_herpn_, x));
}

namespace {

void put_layout(ckks::ByteWriter& w, const Layout& l) {
  for (std::size_t v : {l.shape.channels, l.shape.height, l.shape.width, l.gap, l.slots, l.replicas, l.lanes})
    w.put<std::uint64_t>(v);
  w.put<std::uint8_t>(l.rotated ? 1 : 0);
}

Layout get_layout(ckks::ByteReader& r, std::size_t slots) {
  const char* what = "compiled layer layout";
  Layout l;
  l.shape.channels = r.get_count(what, slots);
  l.shape.height = r.get_count(what, slots);
  l.shape.width = r.get_count(what, slots);
  l.gap = r.get_count(what, slots);
  l.slots = r.get_count(what, slots);
  l.replicas = r.get_count(what, slots);
  l.lanes = r.get_count(what, slots);
  const auto rotated = r.get<std::uint8_t>(what);
  if (rotated > 1) throw ckks::SerializationError("compiled layer layout: invalid rotated-copies flag");
  l.rotated = rotated == 1;
  if (l.slots != slots) throw ckks::SerializationError("compiled layer layout: slot count mismatch");
  try {
    l.validate();
  } catch (const std::invalid_argument& e) {
    throw ckks::SerializationError(std::string("compiled layer layout: ") + e.what());
  }
  return l;
}

void put_linear(ckks::ByteWriter& w, const ckks::Context& ctx, const CompiledLinear& l) {
  w.put<std::uint64_t>(l.input_level);
  w.put<double>(l.output_scale);
  l.transform.save(w);
  w.put<std::uint8_t>(l.bias ? 1 : 0);
  if (l.bias) w.put_blob(ckks::save(ctx, *l.bias));
  put_layout(w, l.in);
  put_layout(w, l.out);
  w.put<std::uint64_t>(l.post_sum_steps.size());
  for (long step : l.post_sum_steps) w.put<std::int64_t>(step);
}

CompiledLinear get_linear(const ckks::Encoder& enc, ckks::ByteReader& r, const std::shared_ptr<const void>& backing) {
  const ckks::Context& ctx = enc.context();
  const char* what = "compiled linear layer";
  const std::size_t level = r.get_count(what, ctx.max_level());
  const double scale = r.get<double>(what);
  if (level == 0 || !(scale > 0) || !std::isfinite(scale)) throw ckks::SerializationError("compiled linear layer: bad level or scale");
  ckks::LinearTransform lt = ckks::LinearTransform::load(enc, r, backing);
  if (lt.level() != level) throw ckks::SerializationError("compiled linear layer: transform level mismatch");
  std::optional<ckks::Plaintext> bias;
  const auto has_bias = r.get<std::uint8_t>(what);
  if (has_bias > 1) throw ckks::SerializationError("compiled linear layer: bad bias flag");
  if (has_bias) {
    bias = ckks::load_plaintext(ctx, r.get_blob(what));
    if (bias->level() != level - 1) throw ckks::SerializationError("compiled linear layer: bias level mismatch");
  }
  const Layout in = get_layout(r, ctx.n() / 2), out = get_layout(r, ctx.n() / 2);
  std::vector<long> steps(r.get_count(what, 64));
  for (long& step : steps) {
    step = r.get<std::int64_t>(what);
    if (step <= 0 || step >= static_cast<long>(ctx.n() / 2))
      throw ckks::SerializationError("compiled linear layer: rotate-and-sum step out of range");
  }
  return CompiledLinear{level, scale, std::move(lt), std::move(bias), in, out, std::move(steps)};
}

void put_quadratic(ckks::ByteWriter& w, const ckks::Context& ctx, const CompiledQuadratic& q) {
  w.put<std::uint64_t>(q.input_level);
  w.put<double>(q.input_scale);
  w.put<double>(q.output_scale);
  w.put_blob(ckks::save(ctx, q.a1));
  w.put_blob(ckks::save(ctx, q.a0));
}

CompiledQuadratic get_quadratic(const ckks::Context& ctx, ckks::ByteReader& r) {
  const char* what = "compiled HerPN";
  CompiledQuadratic q;
  q.input_level = r.get_count(what, ctx.max_level());
  q.input_scale = r.get<double>(what);
  q.output_scale = r.get<double>(what);
  q.a1 = ckks::load_plaintext(ctx, r.get_blob(what));
  q.a0 = ckks::load_plaintext(ctx, r.get_blob(what));
  if (q.input_level == 0 || q.a1.level() != q.input_level || q.a0.level() != q.input_level - 1 ||
      !(q.input_scale > 0) || !(q.output_scale > 0))
    throw ckks::SerializationError("compiled HerPN: inconsistent levels or scales");
  return q;
}

}  // namespace

void CompiledBackbone::save(ckks::ByteWriter& w) const {
  const ckks::Context& ctx = conv0_->transform.encoder_context();
  w.reserve_more(plaintext_bytes() + (std::size_t{1} << 24));
  put_linear(w, ctx, *conv0_);
  w.put<std::uint64_t>(blocks_.size());
  for (const auto& b : blocks_) {
    put_quadratic(w, ctx, b.herpn1);
    put_linear(w, ctx, b.conv1);
    put_quadratic(w, ctx, b.herpn2);
    put_linear(w, ctx, b.conv2);
    put_linear(w, ctx, b.shortcut);
  }
  put_quadratic(w, ctx, *pool_herpn_);
  put_linear(w, ctx, *pool_head_);
  w.align(8);  // the next group starts 8-aligned too (coefficients are read in place)
}

CompiledBackbone CompiledBackbone::load(const ckks::Encoder& enc, ckks::ByteReader& r,
                                        const std::shared_ptr<const void>& backing) {
  const ckks::Context& ctx = enc.context();
  CompiledBackbone cb;
  cb.conv0_ = get_linear(enc, r, backing);
  const std::size_t blocks = r.get_count("compiled backbone", 64);
  for (std::size_t i = 0; i < blocks; ++i) {
    CompiledQuadratic h1 = get_quadratic(ctx, r);
    CompiledLinear c1 = get_linear(enc, r, backing);
    CompiledQuadratic h2 = get_quadratic(ctx, r);
    CompiledLinear c2 = get_linear(enc, r, backing);
    CompiledLinear s = get_linear(enc, r, backing);
    cb.blocks_.push_back({std::move(h1), std::move(c1), std::move(h2), std::move(c2), std::move(s)});
  }
  cb.pool_herpn_ = get_quadratic(ctx, r);
  cb.pool_head_ = get_linear(enc, r, backing);
  r.align(8, "compiled backbone");
  return cb;
}

}  // namespace pfhe::nn
