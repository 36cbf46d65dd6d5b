#include "nn/compiled_layers.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "ckks/serialization.h"

namespace pfhe::nn {

namespace {

void check_close(double got, double want, const char* what) {
  if (std::fabs(got - want) > 1e-9 * want)
    throw std::logic_error(std::string(what) + ": ciphertext scale differs from the compiled scale");
}

// Pins a rescaled y's scale to the compiled one (equal within 1e-9 by construction).
void pin_scale(ckks::Ciphertext& y, double output_scale, const char* what) {
  check_close(y.scale, output_scale, what);
  y.scale = output_scale;
}

}  // namespace

ckks::Ciphertext sum_over_span(const ckks::Evaluator& eval, ckks::Ciphertext x, std::size_t span) {
  for (std::size_t step = 1; step < span; step <<= 1) eval.add_inplace(x, eval.rotate(x, static_cast<long>(step)));
  return x;
}

ckks::Ciphertext match_embeddings(const ckks::Evaluator& eval, const ckks::Ciphertext& probe,
                                  const ckks::Ciphertext& enrolled, double threshold, std::size_t span) {
  ckks::Ciphertext d = eval.sub(probe, enrolled);
  ckks::Ciphertext sq = eval.multiply_relin_rescale(d, d);
  ckks::Ciphertext score = sum_over_span(eval, sq, span);
  eval.add_const_inplace(score, -threshold);
  return score;
}

double prime_at(const ckks::Context& ctx, std::size_t level) {
  return static_cast<double>(ctx.ring_q().modulus(level).value());
}

// Every step consumes one level; level 0 has none left.
void require_level(std::size_t level) {
  if (level == 0) throw ModelTooDeep("compile: the model is deeper than the available levels");
}

// A transform from (level, in_scale) landing exactly on (level - 1, target_scale).
CompiledLinear make_linear(const ckks::Encoder& enc, Compilation mode, const SlotLinearMap& map, const Layout& in,
                           const Layout& out, std::size_t level, double in_scale, double target_scale,
                           ckks::GiantSteps giant_steps) {
  require_level(level);
  const double diagonal_scale = prime_at(enc.context(), level) * target_scale / in_scale;
  if (mode == Compilation::kPlanOnly)
    return {level, target_scale,
            ckks::LinearTransform::plan(enc, map.diagonal_indices(), in.slots, level, diagonal_scale, giant_steps),
            std::nullopt, in, out, map.post_sum_steps};
  CompiledLinear c{level, target_scale,
                   ckks::LinearTransform(enc, map.diagonals(), in.slots, level, 0, diagonal_scale,
                                         ckks::DiagonalStorage::kJustInTime, giant_steps),
                   std::nullopt, in, out, map.post_sum_steps};
  if (std::any_of(map.bias.begin(), map.bias.end(), [](double b) { return b != 0.0; }))
    c.bias = enc.encode(map.bias, level - 1, target_scale);
  return c;
}


CompiledQuadratic make_quadratic(const ckks::Encoder& enc, Compilation mode, const std::vector<Tensor>& a1,
                                 const std::vector<Tensor>& a0, const Layout& layout, std::size_t level, double scale) {
  require_level(level);
  const double output_scale = scale * scale / prime_at(enc.context(), level);
  if (mode == Compilation::kPlanOnly) return CompiledQuadratic{level, scale, output_scale, {}, {}};
  return CompiledQuadratic{level, scale, output_scale, enc.encode(pack_lanes(a1, layout), level, scale),
                           enc.encode(pack_lanes(a0, layout), level - 1, output_scale)};
}

ckks::Ciphertext CompiledLinear::apply(const ckks::Evaluator& eval, const ckks::Ciphertext& x) const {
  return std::move(apply(eval, std::vector<const ckks::Ciphertext*>{&x}).front());
}

std::vector<ckks::Ciphertext> CompiledLinear::apply(const ckks::Evaluator& eval,
                                                    const std::vector<const ckks::Ciphertext*>& xs) const {
  std::vector<ckks::Ciphertext> in;
  for (const ckks::Ciphertext* x : xs) {
    if (x->level() < input_level)
      throw std::invalid_argument("compiled linear layer expects level " + std::to_string(input_level) + ", input at " +
                                  std::to_string(x->level()));
    in.push_back(*x);
    eval.drop_to_level_inplace(in.back(), input_level);
  }
  // Rotate-and-sum before rescaling: each step adds up 2^k copies of the error already in
  // y, and the product's scale (input scale x q_level) makes those ModDown errors ~2^-40
  // of what they would be after the rescale, whose single rounding then comes last.
  std::vector<ckks::Ciphertext> ys = transform.apply(eval, in, post_sum_steps.empty());
  for (ckks::Ciphertext& y : ys) {
    if (!post_sum_steps.empty()) {
      for (long step : post_sum_steps) eval.add_inplace(y, eval.rotate(y, step));
      eval.rescale_inplace(y);
    }
    pin_scale(y, output_scale, "compiled linear layer");
    if (bias) eval.add_plain_inplace(y, *bias);
  }
  return ys;
}

ckks::Ciphertext CompiledQuadratic::apply(const ckks::Evaluator& eval, const ckks::Ciphertext& x) const {
  if (x.level() != input_level) throw std::invalid_argument("compiled quadratic: input level mismatch");
  check_close(x.scale, input_scale, "compiled quadratic");
  ckks::Ciphertext shifted = x;
  eval.add_plain_inplace(shifted, a1);
  ckks::Ciphertext y = eval.multiply(x, shifted);
  eval.relinearize_rescale_inplace(y);  // one division by P q_l
  pin_scale(y, output_scale, "compiled quadratic");
  eval.add_plain_inplace(y, a0);
  return y;
}


std::map<long, std::size_t> rotation_levels(const std::vector<const CompiledLinear*>& layers) {
  std::map<long, std::size_t> levels;
  for (const CompiledLinear* l : layers) {
    for (long step : l->transform.rotation_steps()) levels[step] = std::max(levels[step], l->input_level);
    for (long step : l->post_sum_steps) levels[step] = std::max(levels[step], l->input_level);
  }
  return levels;
}

std::size_t pre_encode_within_budget(std::vector<CompiledLinear*> layers, std::size_t budget) {
  std::stable_sort(layers.begin(), layers.end(),
                   [](const CompiledLinear* a, const CompiledLinear* b) { return a->input_level < b->input_level; });
  std::size_t used = 0;
  for (CompiledLinear* l : layers) {
    const std::size_t bytes = ckks::LinearTransform::encoded_bytes(l->transform.encoder_context(),
                                                                   l->transform.diagonal_count(), l->input_level);
    if (bytes > budget - used) break;
    l->transform.encode_all();
    used += bytes;
  }
  return used;
}

void save_layout(ckks::ByteWriter& w, const Layout& l) {
  for (std::size_t v :
       {l.shape.channels, l.shape.height, l.shape.width, l.gap, l.slots, l.replicas, l.lanes, l.grid_rows, l.grid_cols})
    w.put<std::uint64_t>(v);
  w.put<std::uint8_t>(l.rotated ? 1 : 0);
}

Layout load_layout(ckks::ByteReader& r, std::size_t slots) {
  const char* what = "compiled layer layout";
  Layout l;
  l.shape.channels = r.get_count(what, slots);
  l.shape.height = r.get_count(what, slots);
  l.shape.width = r.get_count(what, slots);
  l.gap = r.get_count(what, slots);
  l.slots = r.get_count(what, slots);
  l.replicas = r.get_count(what, slots);
  l.lanes = r.get_count(what, slots);
  l.grid_rows = r.get_count(what, slots);
  l.grid_cols = r.get_count(what, slots);
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

void save_linear(ckks::ByteWriter& w, const CompiledLinear& l) {
  w.put<std::uint64_t>(l.input_level);
  w.put<double>(l.output_scale);
  l.transform.save(w);
  w.put<std::uint8_t>(l.bias ? 1 : 0);
  if (l.bias) ckks::put_plaintext_in_place(w, *l.bias);
  save_layout(w, l.in);
  save_layout(w, l.out);
  w.put<std::uint64_t>(l.post_sum_steps.size());
  for (long step : l.post_sum_steps) w.put<std::int64_t>(step);
}

CompiledLinear load_linear(const ckks::Encoder& enc, ckks::ByteReader& r, const std::shared_ptr<const ckks::Backing>& backing) {
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
    bias = ckks::get_plaintext_in_place(ctx, r, backing, what);
    if (bias->level() != level - 1) throw ckks::SerializationError("compiled linear layer: bias level mismatch");
  }
  const Layout in = load_layout(r, ctx.n() / 2), out = load_layout(r, ctx.n() / 2);
  std::vector<long> steps(r.get_count(what, 64));
  for (long& step : steps) {
    step = r.get<std::int64_t>(what);
    if (step <= 0 || step >= static_cast<long>(ctx.n() / 2))
      throw ckks::SerializationError("compiled linear layer: rotate-and-sum step out of range");
  }
  return CompiledLinear{level, scale, std::move(lt), std::move(bias), in, out, std::move(steps)};
}


void save_quadratic(ckks::ByteWriter& w, const CompiledQuadratic& q) {
  w.put<std::uint64_t>(q.input_level);
  w.put<double>(q.input_scale);
  w.put<double>(q.output_scale);
  ckks::put_plaintext_in_place(w, q.a1);
  ckks::put_plaintext_in_place(w, q.a0);
}

CompiledQuadratic load_quadratic(const ckks::Context& ctx, ckks::ByteReader& r,
                                 const std::shared_ptr<const ckks::Backing>& backing) {
  const char* what = "compiled quadratic";
  CompiledQuadratic q;
  q.input_level = r.get_count(what, ctx.max_level());
  q.input_scale = r.get<double>(what);
  q.output_scale = r.get<double>(what);
  q.a1 = ckks::get_plaintext_in_place(ctx, r, backing, what);
  q.a0 = ckks::get_plaintext_in_place(ctx, r, backing, what);
  if (q.input_level == 0 || q.a1.level() != q.input_level || q.a0.level() != q.input_level - 1 ||
      !(q.input_scale > 0) || !(q.output_scale > 0))
    throw ckks::SerializationError("compiled quadratic: inconsistent levels or scales");
  return q;
}

}  // namespace pfhe::nn
