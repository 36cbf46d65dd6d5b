// CompiledGraph's stored form (docs/FORMAT.md, compiled graphs): writing it, streamed, and
// loading it with every step checked against the values it reads.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ckks/serialization.h"
#include "nn/compiled_graph.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

namespace {

constexpr char kGraphMagic[4] = {'P', 'F', 'H', 'G'};
// 2: layouts record their grid (nn/layout.h); 3: patch inputs in lanes, L2Normalize;
// 4: the ring switch names no PatchCNN block; 5: pre-encoded diagonals used in place;
// 6: every plaintext (quadratics, shifts, biases, diagonals) stored to be used in place;
// 7: the bootstrapper's configuration (built again on load).
constexpr std::uint32_t kGraphVersion = 9;

}  // namespace

namespace {

enum class StepKind : std::uint8_t {
  kLinear = 0,
  kQuadratic = 1,
  kShift = 2,
  kPoly = 3,
  kSum = 4,
  kBootstrap = 5,
  kNormalize = 6,
  kRingSwitch = 7
};

void put_coeffs(ckks::ByteWriter& w, const std::vector<double>& coeffs) {
  w.put<std::uint64_t>(coeffs.size());
  for (const double c : coeffs) w.put<double>(c);
}

std::vector<double> get_coeffs(ckks::ByteReader& r, const char* what) {
  std::vector<double> coeffs(r.get_count(what, 1 << 12));
  for (double& c : coeffs) c = r.get<double>(what);
  return coeffs;
}

bool finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double c) { return std::isfinite(c); });
}

}  // namespace

ckks::Bytes CompiledGraph::save() const {
  ckks::Bytes out;
  save([&](std::span<const std::uint8_t> piece) { out.insert(out.end(), piece.begin(), piece.end()); });
  return out;
}

void CompiledGraph::save_file(const std::string& path) const {
  ckks::FileWriter f(path);
  save([&](std::span<const std::uint8_t> piece) { f.write(piece); });
  f.commit();
}

void CompiledGraph::save(const ckks::ByteWriter::Sink& sink) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot be saved");
  if (!deferred_.empty()) throw std::logic_error("compiled graph: one compiled per task cannot be saved");
  const ckks::Context& ctx = encoder_->context();
  // The 16-byte head apart (a streaming writer's first insert trips GCC 12's false
  // -Wstringop-overflow); the rest stays 8-aligned in the file.
  ckks::ByteWriter head;
  head.put_bytes(reinterpret_cast<const std::uint8_t*>(kGraphMagic), 4);
  head.put<std::uint32_t>(kGraphVersion);
  head.put<std::uint64_t>(ctx.params().fingerprint());
  sink(head.bytes());
  ckks::ByteWriter w(sink);
  save_ring_switch(w, half_ring_.get());
  w.put<std::uint8_t>(bootstrapper_ ? 1 : 0);
  if (bootstrapper_) ckks::save_bootstrap_config(w, bootstrapper_->config());
  w.put<std::uint64_t>(input_level_);
  w.put<double>(input_scale_);
  save_layout(w, input_layout_);
  for (std::size_t v : {input_shape_.channels, input_shape_.height, input_shape_.width, grid_}) w.put<std::uint64_t>(v);
  w.put<std::uint64_t>(steps_.size());
  for (const Step& s : steps_) {
    w.put<std::uint64_t>(s.name.size());
    w.put_bytes(reinterpret_cast<const std::uint8_t*>(s.name.data()), s.name.size());
    w.put<std::uint64_t>(s.inputs.size());
    for (const std::size_t i : s.inputs) w.put<std::uint64_t>(i);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(s.op.index()));
    w.put<std::uint8_t>(s.half ? 1 : 0);
    std::visit(Overloaded{
                   [&](const CompiledLinear& l) { save_linear(w, l); },
                   [&](const CompiledQuadratic& q) { save_quadratic(w, q); },
                   [&](const Shift& sh) { ckks::put_plaintext_in_place(w, sh.shift); },
                   [&](const Poly& p) {
                     w.put<std::uint64_t>(p.input_level);
                     w.put<double>(p.input_scale);
                     w.put<double>(p.output_scale);
                     put_coeffs(w, p.polynomial.coeffs);
                   },
                   [&](const Sum& sum) { w.put<std::uint64_t>(sum.level); },
                   [&](const Bootstrap& b) {
                     w.put<std::uint64_t>(b.input_level);
                     w.put<double>(b.input_scale);
                     w.put<std::uint64_t>(b.output_level);
                     w.put<std::uint64_t>(bootstrapper_->slots());
                   },
                   [&](const Normalize& n) {
                     w.put<std::uint64_t>(n.input_level);
                     w.put<std::uint64_t>(n.span);
                     w.put<double>(n.input_scale);
                     w.put<double>(n.output_scale);
                     put_coeffs(w, n.polynomial.coeffs);
                   },
                   [&](const RingSwitch&) {},
               },
               s.op);
    w.align(8);  // keeps just-in-time coefficients 8-aligned for in-place use
  }
  w.put<std::uint64_t>(output_value_);
  for (std::size_t v : {output_shape_.channels, output_shape_.height, output_shape_.width}) w.put<std::uint64_t>(v);
  w.flush();
}

bool CompiledGraph::has_magic(std::span<const std::uint8_t> bytes) {
  return bytes.size() >= 4 && std::equal(bytes.begin(), bytes.begin() + 4, kGraphMagic);
}

namespace {
// The bootstrapper a stored graph names, built over `encoder` (null: it has none).
std::shared_ptr<const ckks::Bootstrapper> load_bootstrapper(const ckks::Encoder& encoder, ckks::ByteReader& r,
                                                            const char* what) {
  const auto present = r.get<std::uint8_t>(what);
  if (present > 1) throw ckks::SerializationError("compiled graph: bad bootstrapping flag");
  if (present == 0) return nullptr;
  const ckks::BootstrapConfig config = ckks::load_bootstrap_config(r);
  try {
    return std::make_shared<const ckks::Bootstrapper>(encoder, config);
  } catch (const std::invalid_argument& e) {
    throw ckks::SerializationError(std::string("compiled graph: its bootstrapping configuration: ") + e.what());
  }
}
}  // namespace

CompiledGraph CompiledGraph::load(const ckks::Encoder& encoder, std::span<const std::uint8_t> bytes,
                                  const std::shared_ptr<const ckks::Backing>& backing) {
  const char* what = "compiled graph";
  const ckks::Context& ctx = encoder.context();
  const std::size_t slots = ctx.n() / 2;
  // Compiled PatchCNNs of pfhe before session 18 ("PFHC"): the one compiler replaced theirs.
  if (bytes.size() >= 4 && std::equal(bytes.begin(), bytes.begin() + 4, "PFHC"))
    throw ckks::SerializationError("a compiled PatchCNN of an earlier pfhe version (PFHC): compile the model again "
                                   "with `pfhe compile`");
  ckks::ByteReader r(bytes);
  r.expect_magic_and_version(kGraphMagic, kGraphVersion, what);
  if (r.get<std::uint64_t>(what) != ctx.params().fingerprint())
    throw ckks::SerializationError("compiled graph was made for other parameters (fingerprint mismatch)");
  CompiledGraph g;
  g.storage_ = backing;
  g.encoder_ = &encoder;
  g.half_ring_ = load_ring_switch(ctx.params(), r, what);
  const std::shared_ptr<const ckks::Bootstrapper> bootstrapper = load_bootstrapper(encoder, r, what);
  if (bootstrapper && g.half_ring_) throw ckks::SerializationError("compiled graph: a ring switch and bootstraps");
  g.input_level_ = r.get_count(what, ctx.max_level());
  g.input_scale_ = r.get<double>(what);
  if (!(g.input_scale_ > 0) || !std::isfinite(g.input_scale_)) throw ckks::SerializationError("compiled graph: bad scale");
  g.input_layout_ = load_layout(r, slots);
  g.input_shape_.channels = r.get_count(what, slots);
  g.input_shape_.height = r.get_count(what, slots);
  g.input_shape_.width = r.get_count(what, slots);
  g.grid_ = r.get_count(what, 64);
  const Shape& patch = g.input_layout_.shape;
  if (g.grid_ == 0 || !(g.input_shape_ == Shape{patch.channels, g.grid_ * patch.height, g.grid_ * patch.width}))
    throw ckks::SerializationError("compiled graph: the input shape is not its grid of patches");
  g.inputs_ = (g.grid_ * g.grid_ + g.input_layout_.lanes - 1) / g.input_layout_.lanes;
  // Levels and layouts of every value, to check each step against its inputs.
  std::vector<std::size_t> level(g.inputs_, g.input_level_);
  std::vector<Layout> layout(g.inputs_, g.input_layout_);
  std::vector<double> scale(g.inputs_, g.input_scale_);
  std::vector<bool> half(g.inputs_, false);
  const std::size_t count = r.get_count(what, 1 << 20);
  for (std::size_t i = 0; i < count; ++i) {
    Step s{{}, {}, Sum{}};  // the op is read below
    const auto name = r.get_view(r.get_count(what, 4096), what);
    s.name.assign(name.begin(), name.end());
    s.inputs.resize(r.get_count(what, 2));
    for (std::size_t& v : s.inputs) v = r.get_count(what, g.inputs_ + i - 1);  // an earlier value
    const auto kind = static_cast<StepKind>(r.get<std::uint8_t>(what));
    const std::size_t arity = kind == StepKind::kSum ? 2 : 1;
    if (s.inputs.size() != arity) throw ckks::SerializationError("compiled graph: wrong input count for a step");
    const auto ring = r.get<std::uint8_t>(what);
    s.half = ring == 1;
    const bool switches = kind == StepKind::kRingSwitch;
    if (ring > 1 || (s.half && !g.half_ring_) || (switches && !s.half))
      throw ckks::SerializationError("compiled graph: a step in a ring it does not have");
    for (const std::size_t v : s.inputs)
      if (half[v] != (s.half && !switches)) throw ckks::SerializationError("compiled graph: a step reads another ring");
    const ckks::Encoder& enc = s.half ? g.half_ring_->encoder : encoder;
    const ckks::Context& ring_ctx = enc.context();
    const std::size_t in_level = level[s.inputs[0]];
    std::size_t out_level = 0;
    Layout out_layout = layout[s.inputs[0]];
    double out_scale = scale[s.inputs[0]];
    switch (kind) {
      case StepKind::kLinear: {
        CompiledLinear l = load_linear(enc, r, backing);
        if (l.input_level > in_level || !(l.in == layout[s.inputs[0]]))
          throw ckks::SerializationError("compiled graph: linear step does not fit its input");
        out_level = l.input_level - 1;
        out_layout = l.out;
        out_scale = l.output_scale;
        s.op = std::move(l);
        break;
      }
      case StepKind::kQuadratic: {
        CompiledQuadratic q = load_quadratic(ring_ctx, r, backing);
        if (q.input_level != in_level) throw ckks::SerializationError("compiled graph: quadratic level mismatch");
        out_level = in_level - 1;
        out_scale = q.output_scale;
        s.op = std::move(q);
        break;
      }
      case StepKind::kShift: {
        Shift sh{ckks::get_plaintext_in_place(ring_ctx, r, backing, what)};
        if (sh.shift.level() != in_level) throw ckks::SerializationError("compiled graph: shift level mismatch");
        out_level = in_level;
        s.op = std::move(sh);
        break;
      }
      case StepKind::kPoly: {
        Poly p;
        p.input_level = r.get_count(what, ctx.max_level());
        p.input_scale = r.get<double>(what);
        p.output_scale = r.get<double>(what);
        p.polynomial.coeffs = get_coeffs(r, what);
        if (p.input_level != in_level || !finite(p.polynomial.coeffs) || p.polynomial.degree() == 0 ||
            p.polynomial.depth() > p.input_level || !(p.input_scale > 0) || !(p.output_scale > 0))
          throw ckks::SerializationError("compiled graph: malformed polynomial step");
        out_level = in_level - p.polynomial.depth();
        out_scale = p.output_scale;
        s.op = std::move(p);
        break;
      }
      case StepKind::kSum: {
        const Sum sum{r.get_count(what, ctx.max_level())};
        if (sum.level > std::min(in_level, level[s.inputs[1]]) || !(layout[s.inputs[1]] == out_layout))
          throw ckks::SerializationError("compiled graph: sum of values that do not agree");
        out_level = sum.level;
        s.op = sum;
        break;
      }
      case StepKind::kBootstrap: {
        Bootstrap b;
        b.input_level = r.get_count(what, ctx.max_level());
        b.input_scale = r.get<double>(what);
        b.output_level = r.get_count(what, ctx.max_level());
        const std::size_t boot_slots = r.get_count(what, slots);
        if (!bootstrapper) throw ckks::SerializationError("compiled graph: a bootstrap step without a bootstrapper");
        if (s.half) throw ckks::SerializationError("compiled graph: a bootstrap in the half ring");
        if (b.output_level > bootstrapper->output_level() || b.output_level <= bootstrapper->input_level() ||
            boot_slots != bootstrapper->slots())
          throw ckks::SerializationError("compiled graph: a bootstrap step its bootstrapper does not make");
        if (b.input_level != in_level || b.input_level < bootstrapper->input_level() || !(b.input_scale > 0) ||
            !std::isfinite(b.input_scale))
          throw ckks::SerializationError("compiled graph: malformed bootstrap step");
        out_level = b.output_level;
        out_scale = bootstrapper->config().output_scale;
        s.op = b;
        break;
      }
      case StepKind::kNormalize: {
        Normalize n;
        n.input_level = r.get_count(what, ctx.max_level());
        n.span = r.get_count(what, slots);
        n.input_scale = r.get<double>(what);
        n.output_scale = r.get<double>(what);
        n.polynomial.coeffs = get_coeffs(r, what);
        const Layout& in = layout[s.inputs[0]];
        if (n.input_level != in_level || !finite(n.polynomial.coeffs) || n.polynomial.degree() == 0 ||
            n.depth() > n.input_level || in.lanes != 1 || in.rotated || !in.cyclic() || n.span != in.span() ||
            !(n.input_scale > 0) || !(n.output_scale > 0) || !std::isfinite(n.input_scale) ||
            !std::isfinite(n.output_scale))
          throw ckks::SerializationError("compiled graph: malformed normalisation step");
        out_level = in_level - n.depth();
        out_scale = n.output_scale;
        s.op = std::move(n);
        break;
      }
      case StepKind::kRingSwitch: {
        const std::size_t top = g.half_ring_->choice.level;
        out_layout.slots /= 2;
        out_layout.replicas /= 2;
        const Layout& in = layout[s.inputs[0]];
        if (in_level < top || in.rotated || !in.cyclic() || in.replicas < 2)
          throw ckks::SerializationError("compiled graph: a ring switch of a value that cannot switch");
        out_level = top;
        s.op = RingSwitch{};
        break;
      }
      default:
        throw ckks::SerializationError("compiled graph: unknown step kind");
    }
    r.align(8, what);
    level.push_back(out_level);
    layout.push_back(out_layout);
    scale.push_back(out_scale);
    half.push_back(s.half);
    g.steps_.push_back(std::move(s));
  }
  g.output_value_ = r.get_count(what, g.inputs_ + count - 1);
  g.output_level_ = level[g.output_value_];
  g.output_layout_ = layout[g.output_value_];
  g.output_scale_ = scale[g.output_value_];
  if (static_cast<bool>(g.half_ring_) != half[g.output_value_])
    throw ckks::SerializationError("compiled graph: its output is not in the ring it switches to");
  g.output_shape_.channels = r.get_count(what, slots);
  g.output_shape_.height = r.get_count(what, slots);
  g.output_shape_.width = r.get_count(what, slots);
  r.expect_end(what);
  if (g.output_shape_.size() != g.output_layout_.shape.size())
    throw ckks::SerializationError("compiled graph: output shape does not match its layout");
  if (bootstrapper && g.bootstraps() == 0) throw ckks::SerializationError("compiled graph: a bootstrapper and no bootstrap");
  g.bootstrapper_ = bootstrapper;
  g.find_parallel_regions();
  return g;
}

}  // namespace pfhe::nn
