#include "ckks/linear_transform.h"

#include "ckks/serialization.h"
#include "ring/parallel.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>

namespace pfhe::ckks {

namespace {
long normalize(long k, std::size_t slots) {
  const long n = static_cast<long>(slots);
  return ((k % n) + n) % n;
}

// A step in [0, slots) as the offset of smallest magnitude (rotating left by it).
long signed_offset(long k, std::size_t slots) {
  return k > static_cast<long>(slots / 2) ? k - static_cast<long>(slots) : k;
}

// One giant-step row of a chained fold: after the row is added to the accumulator of its
// side of 0, the accumulator is rotated by `rotate_after` (the gap to the next row on that
// side, or the row's own offset for the innermost one, which then `closes` the side).
struct ChainLink {
  long rotate_after;
  bool closes;
};

// The chain of rows taken in fold_order() (the unrotated row 0 is a link rotating by 0):
// what GiantStepSum folds by and what rotation_steps() lists keys for, in one place.
std::vector<ChainLink> chain_links(const std::vector<long>& order, std::size_t slots) {
  std::vector<ChainLink> links;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const long offset = signed_offset(order[i], slots);
    const long next = i + 1 < order.size() ? signed_offset(order[i + 1], slots) : 0;
    const bool same_side = offset != 0 && next != 0 && (next > 0) == (offset > 0);
    links.push_back({same_side ? offset - next : offset, !same_side});
  }
  return links;
}

// sum_g rot(row_g, g) over a transform's giant steps, as its GiantSteps says; rows come in
// fold_order(), the order `links` was made for.
class GiantStepSum {
 public:
  GiantStepSum(const Evaluator& eval, GiantSteps mode, std::vector<ChainLink> links)
      : eval_(eval), mode_(mode), links_(std::move(links)), summed_(eval) {}

  void add(const Ciphertext& row, long step) {
    if (mode_ == GiantSteps::kSummed) return summed_.add(row, step);
    const ChainLink& link = links_.at(next_++);
    if (acc_.polys.empty()) acc_ = row;
    else eval_.add_inplace(acc_, row);
    if (link.rotate_after != 0) acc_ = eval_.rotate(acc_, link.rotate_after);
    if (link.closes) {  // this side of 0 (or the unrotated row) is complete
      if (sum_.polys.empty()) sum_ = std::move(acc_);
      else eval_.add_inplace(sum_, acc_);
      acc_ = Ciphertext{};
    }
  }

  Ciphertext result(bool rescale) {
    if (mode_ == GiantSteps::kSummed) return rescale ? summed_.result_rescaled() : summed_.result();
    if (rescale) eval_.rescale_inplace(sum_);
    return std::move(sum_);
  }

 private:
  const Evaluator& eval_;
  GiantSteps mode_;
  std::vector<ChainLink> links_;
  std::size_t next_ = 0;
  RotationSum summed_;
  Ciphertext acc_, sum_;
};
}  // namespace

std::size_t LinearTransform::optimal_baby_steps(const std::vector<long>& indices, std::size_t slots) {
  std::size_t best = 1, best_cost = SIZE_MAX, best_giants = SIZE_MAX;
  for (std::size_t n1 = 1; n1 <= slots; n1 <<= 1) {
    std::set<long> babies, giants;
    for (long k : indices) {
      const long kk = normalize(k, slots);
      babies.insert(kk % static_cast<long>(n1));
      giants.insert(kk - kk % static_cast<long>(n1));
    }
    // A hoisted baby rotation skips the decomposition, a giant rotation skips the division by
    // P (RotationSum): measured 0.71 / 0.68 (top level) and 0.77 / 0.65 (12 limbs) of a full
    // rotation (docs/BENCHMARKS.md), so a giant step weighs 9/10 of a baby step.
    const std::size_t cost = 10 * (babies.size() - babies.count(0)) + 9 * (giants.size() - giants.count(0));
    // Ties go to fewer giant steps (more hoisted baby steps), then to the smaller n1.
    if (cost < best_cost || (cost == best_cost && giants.size() < best_giants)) {
      best_cost = cost;
      best_giants = giants.size();
      best = n1;
    }
  }
  return best;
}

std::size_t LinearTransform::encoded_bytes(const Context& context, std::size_t diagonals, std::size_t level) {
  return diagonals * (level + 1) * context.n() * sizeof(std::uint64_t);
}

LinearTransform::LinearTransform(const Encoder& encoder, const Diagonals& diagonals, std::size_t slots,
                                 std::size_t level, std::size_t baby_steps, double diagonal_scale,
                                 DiagonalStorage storage, GiantSteps giant_steps)
    : encoder_(&encoder), slots_(slots), level_(level), baby_steps_(baby_steps), diagonal_scale_(diagonal_scale),
      storage_(storage), giant_steps_(giant_steps) {
  if (slots == 0 || (slots & (slots - 1)) != 0)
    throw std::invalid_argument("linear transform: slot count must be a power of two");
  if (diagonals.empty()) throw std::invalid_argument("linear transform: no diagonals");
  if (storage == DiagonalStorage::kPlanOnly) throw std::invalid_argument("linear transform: plans come from plan()");
  if (level == 0) throw std::invalid_argument("linear transform: needs level >= 1 to rescale");
  std::vector<long> indices;
  for (const auto& [k, values] : diagonals) {
    if (values.size() != slots)
      throw std::invalid_argument("linear transform: diagonal " + std::to_string(k) + " has " +
                                  std::to_string(values.size()) + " values, expected " + std::to_string(slots));
    if (k <= -static_cast<long>(slots) || k >= static_cast<long>(slots))
      throw std::invalid_argument("linear transform: diagonal index " + std::to_string(k) + " out of range");
    indices.push_back(k);
  }
  if (baby_steps_ == 0) baby_steps_ = optimal_baby_steps(indices, slots);
  if (baby_steps_ > slots || (baby_steps_ & (baby_steps_ - 1)) != 0)
    throw std::invalid_argument("linear transform: baby steps must be a power of two <= slots");
  if (level > encoder.context().max_level()) throw std::invalid_argument("linear transform: level above the top");
  if (diagonal_scale_ == 0) diagonal_scale_ = static_cast<double>(encoder.context().ring_q().modulus(level).value());
  if (!(diagonal_scale_ > 0) || !std::isfinite(diagonal_scale_))
    throw std::invalid_argument("linear transform: invalid diagonal scale");
  const double scale = diagonal_scale_;
  std::map<long, std::vector<std::complex<double>>> merged;  // k and k - slots are the same diagonal
  for (const auto& [k, values] : diagonals) {
    auto& d = merged[normalize(k, slots)];
    if (d.empty()) d.assign(slots, 0.0);
    for (std::size_t i = 0; i < slots; ++i) d[i] += values[i];
  }
  const long n1 = static_cast<long>(baby_steps_);
  // Each diagonal is encoded independently (the slow part of compiling a model): in
  // parallel, then inserted in index order.
  std::vector<const std::pair<const long, std::vector<std::complex<double>>>*> items;
  for (const auto& item : merged) items.push_back(&item);
  std::vector<Term> built(items.size());
#pragma omp parallel for schedule(dynamic)
  for (std::size_t t = 0; t < items.size(); ++t) {
    const long k = items[t]->first, giant = k - k % n1;
    const auto& values = items[t]->second;
    std::vector<std::complex<double>> rotated(slots);  // rot(diag, -giant)
    for (std::size_t i = 0; i < slots; ++i) rotated[(i + static_cast<std::size_t>(giant)) % slots] = values[i];
    if (storage_ == DiagonalStorage::kEncoded) built[t].encoded = encoder.encode(rotated, level, scale);
    else built[t].coefficients = encoder.round_coefficients(rotated, scale);
  }
  for (std::size_t t = 0; t < items.size(); ++t) {
    const long k = items[t]->first;
    terms_[k - k % n1].emplace(k % n1, std::move(built[t]));
  }
}

LinearTransform LinearTransform::plan(const Encoder& encoder, const std::vector<long>& indices, std::size_t slots,
                                      std::size_t level, double diagonal_scale, GiantSteps giant_steps) {
  if (slots == 0 || (slots & (slots - 1)) != 0 || slots > encoder.context().n() / 2)
    throw std::invalid_argument("linear transform plan: invalid slot count");
  if (indices.empty()) throw std::invalid_argument("linear transform plan: no diagonals");
  LinearTransform lt(encoder);
  lt.slots_ = slots;
  lt.level_ = level;
  lt.diagonal_scale_ = diagonal_scale;
  lt.storage_ = DiagonalStorage::kPlanOnly;
  lt.giant_steps_ = giant_steps;
  lt.baby_steps_ = optimal_baby_steps(indices, slots);
  const long n1 = static_cast<long>(lt.baby_steps_);
  for (const long index : indices) {
    const long k = normalize(index, slots);
    lt.terms_[k - k % n1].try_emplace(k % n1);
  }
  return lt;
}

std::size_t LinearTransform::diagonal_count() const {
  std::size_t c = 0;
  for (const auto& [g, row] : terms_) c += row.size();
  return c;
}

std::vector<long> LinearTransform::baby_steps_used() const {
  std::set<long> babies;
  for (const auto& [g, row] : terms_)
    for (const auto& [b, term] : row) babies.insert(b);
  return {babies.begin(), babies.end()};
}

std::size_t LinearTransform::baby_rotations() const {
  const std::vector<long> babies = baby_steps_used();
  return babies.size() - (!babies.empty() && babies.front() == 0 ? 1 : 0);
}

void LinearTransform::count_operations(OperationCounts& counts, std::size_t level) const {
  LevelOperations& ops = counts[level];
  const std::size_t babies = baby_rotations();
  if (babies > 0) ops.decompositions += 1;
  ops.hoisted_rotations += static_cast<double>(babies);
  ops.key_switches += static_cast<double>(giant_rotations());
  for (const auto& [g, row] : terms_)
    for (const auto& [b, term] : row) {
      ops.plaintext_products += 1;
      if (!term.encoded) ops.diagonal_encodings += 1;
    }
  ops.rescales += 1;
}

std::size_t LinearTransform::giant_rotations() const { return terms_.size() - terms_.count(0); }

std::vector<long> LinearTransform::fold_order() const {
  std::vector<long> order;
  for (auto g = terms_.rbegin(); g != terms_.rend(); ++g)  // positive offsets, largest first
    if (signed_offset(g->first, slots_) > 0) order.push_back(g->first);
  for (const auto& [g, row] : terms_)  // negative offsets, most negative first
    if (signed_offset(g, slots_) < 0) order.push_back(g);
  if (terms_.count(0)) order.push_back(0);
  return order;
}

std::vector<long> LinearTransform::rotation_steps() const {
  std::set<long> steps;
  for (const long b : baby_steps_used())
    if (b != 0) steps.insert(b);
  if (giant_steps_ == GiantSteps::kSummed) {
    for (const auto& [g, row] : terms_)
      if (g != 0) steps.insert(g);
  } else {
    for (const ChainLink& link : chain_links(fold_order(), slots_))
      if (link.rotate_after != 0) steps.insert(normalize(link.rotate_after, slots_));
  }
  return {steps.begin(), steps.end()};
}

void LinearTransform::encode_all() {
  if (storage_ == DiagonalStorage::kPlanOnly) throw std::logic_error("linear transform: a plan has nothing to encode");
  std::vector<Term*> pending;
  for (auto& [g, row] : terms_)
    for (auto& [b, term] : row)
      if (!term.encoded) pending.push_back(&term);
#pragma omp parallel for schedule(dynamic)
  for (std::size_t t = 0; t < pending.size(); ++t) {
    pending[t]->encoded = encoder_->to_plaintext(pending[t]->measured(), level_);
    release(*pending[t]);
    pending[t]->coefficients = {};
    pending[t]->in_place = false;
  }
  storage_ = DiagonalStorage::kEncoded;
}

std::size_t LinearTransform::plaintext_bytes() const {
  std::size_t s = 0;
  for (const auto& [g, row] : terms_)
    for (const auto& [b, term] : row)
      s += term.encoded ? term.encoded->poly.byte_size()
                        : term.coefficients.values.size() * sizeof(term.coefficients.values[0]);
  return s;
}

Ciphertext LinearTransform::apply(const Evaluator& eval, const Ciphertext& input) const {
  return std::move(evaluate(eval, std::span(&input, 1), false).front());
}

Ciphertext LinearTransform::apply_rescaled(const Evaluator& eval, const Ciphertext& input) const {
  return std::move(evaluate(eval, std::span(&input, 1), true).front());
}

std::vector<Ciphertext> LinearTransform::apply(const Evaluator& eval, std::span<const Ciphertext> inputs,
                                               bool rescale) const {
  return evaluate(eval, inputs, rescale);
}

std::vector<Ciphertext> LinearTransform::evaluate(const Evaluator& eval, std::span<const Ciphertext> inputs,
                                                  bool rescale) const {
  if (storage_ == DiagonalStorage::kPlanOnly)
    throw std::logic_error("linear transform: a plan (rotation steps only) cannot be evaluated");
  if (inputs.empty()) throw std::invalid_argument("linear transform: no input");
  for (const Ciphertext& input : inputs) {
    if (input.level() != level_)
      throw std::invalid_argument("linear transform encoded for level " + std::to_string(level_) +
                                  ", input at level " + std::to_string(input.level()));
    if (input.slots() != slots_)
      throw std::invalid_argument("linear transform for " + std::to_string(slots_) + " slots, input has " +
                                  std::to_string(input.slots()));
  }
  const std::size_t batch = inputs.size();
  const std::vector<long> babies = baby_steps_used();
  std::vector<GiantStepSum> giant_steps;
  for (std::size_t i = 0; i < batch; ++i) giant_steps.emplace_back(eval, giant_steps_, chain_links(fold_order(), slots_));
  if (babies.size() <= terms_.size()) {
    // All baby rotations at once, then one giant step after the other.
    std::vector<std::vector<Ciphertext>> rotated;
    for (const Ciphertext& input : inputs) rotated.push_back(eval.rotate_hoisted(input, babies));
    std::map<long, std::size_t> baby_index;
    for (std::size_t j = 0; j < babies.size(); ++j) baby_index[babies[j]] = j;
    for (const long g : fold_order()) {
      std::vector<Ciphertext> inner(batch);  // one row into one accumulator per input
      std::vector<Product> products;
      for (const auto& [b, term] : terms_.at(g))
        for (std::size_t i = 0; i < batch; ++i) products.push_back({&inner[i], &rotated[i][baby_index.at(b)], &term});
      accumulate(eval, products);
      for (std::size_t i = 0; i < batch; ++i) giant_steps[i].add(inner[i], g);
    }
  } else {
    // More baby steps than giant steps: one baby rotation at a time into one accumulator
    // per giant step, so that the transform holds min(baby, giant) ciphertexts per input
    // (modular sums: the result is the same in either order).
    std::vector<Decomposition> hoisted;
    for (const Ciphertext& input : inputs) hoisted.push_back(eval.hoist(input));
    std::vector<std::map<long, Ciphertext>> inner(batch);
    for (const long b : babies) {
      std::vector<Ciphertext> rotated;  // one input, many accumulators
      for (std::size_t i = 0; i < batch; ++i) rotated.push_back(eval.rotate_hoisted(inputs[i], hoisted[i], b));
      std::vector<Product> products;
      for (const auto& [g, row] : terms_)
        if (const auto term = row.find(b); term != row.end())
          for (std::size_t i = 0; i < batch; ++i) products.push_back({&inner[i][g], &rotated[i], &term->second});
      accumulate(eval, products);
    }
    for (const long g : fold_order())
      for (std::size_t i = 0; i < batch; ++i) giant_steps[i].add(inner[i].at(g), g);
  }
  std::vector<Ciphertext> results;
  for (GiantStepSum& sum : giant_steps) results.push_back(sum.result(rescale));
  return results;
}

void LinearTransform::accumulate(const Evaluator& eval, const std::vector<Product>& products) const {
  // Products of one term follow each other (one per input of a batch): a just-in-time
  // diagonal is then made once per limb for all of them. Encoded products go input by
  // input instead, so that a row's products into one accumulator stay adjacent and run as
  // one dot product per limb (Evaluator::multiply_plain_accumulate).
  std::vector<const Ciphertext*> accumulators;  // in order of first appearance
  for (const Product& p : products)
    if (p.term->encoded && std::find(accumulators.begin(), accumulators.end(), p.acc) == accumulators.end())
      accumulators.push_back(p.acc);
  std::vector<const Product*> order;
  for (const Ciphertext* acc : accumulators)
    for (const Product& p : products)
      if (p.term->encoded && p.acc == acc) order.push_back(&p);
  for (const Product& p : products)
    if (!p.term->encoded) order.push_back(&p);
  std::vector<Evaluator::PlainProduct> batch;
  batch.reserve(products.size());
  const Term* previous = nullptr;
  for (const Product* p : order) {
    const Term& term = *p->term;
    if (term.encoded) {
      batch.push_back({p->acc, p->rotated, &*term.encoded, 0, {}});
    } else if (&term == previous) {
      batch.push_back({p->acc, p->rotated, nullptr, term.coefficients.scale, {}, true});
    } else {
      const int bits = encoder_->coefficient_bits(term.measured(), level_);
      batch.push_back({p->acc, p->rotated, nullptr, term.coefficients.scale,
                       [this, &term, bits](std::size_t l, ring::u64* out) { encoder_->to_limb(term.coefficients, bits, l, out); }});
    }
    previous = &term;
  }
  eval.multiply_plain_accumulate(batch);
  previous = nullptr;
  for (const Product* p : order) {
    if (p->term != previous) release(*p->term);
    previous = p->term;
  }
}

Encoder::RoundedCoefficients LinearTransform::Term::measured() const {
  if (!in_place) return coefficients;  // measured when made or copied
  Encoder::RoundedCoefficients c = coefficients;
  c.magnitude_bits = width.bits.load(std::memory_order_relaxed);
  if (c.magnitude_bits < 0) {
    c.magnitude_bits = Encoder::RoundedCoefficients::width_of_largest(c.values);
    // Magnitudes below 2^62 are what round_coefficients produces.
    if (c.magnitude_bits > 62) throw SerializationError("linear transform: a diagonal's coefficient is out of range");
    width.bits.store(c.magnitude_bits, std::memory_order_relaxed);
  }
  return c;
}

void LinearTransform::release(const Term& term) const {
  if (!term.in_place) return;
  const auto& values = term.coefficients.values;
  backing_->release({reinterpret_cast<const std::uint8_t*>(values.data()), values.size() * sizeof(values[0])});
}

void LinearTransform::save(ByteWriter& w) const {
  if (storage_ == DiagonalStorage::kPlanOnly)
    throw std::logic_error("linear transform: a plan (rotation steps only) cannot be saved");
  w.put<std::uint64_t>(slots_);
  w.put<std::uint64_t>(level_);
  w.put<std::uint64_t>(baby_steps_);
  w.put<double>(diagonal_scale_);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(giant_steps_));
  w.put<std::uint64_t>(diagonal_count());
  for (const auto& [g, row] : terms_)
    for (const auto& [b, term] : row) {
      w.put<std::int64_t>(g);
      w.put<std::int64_t>(b);
      w.put<std::uint8_t>(term.encoded ? 0 : 1);
      if (term.encoded) {  // at the transform's level and slots
        put_plaintext_in_place(w, *term.encoded);
      } else {
        w.put<double>(term.coefficients.scale);
        w.put<std::int32_t>(term.coefficients.log_slots);
        w.put<std::uint64_t>(term.coefficients.values.size());
        w.align(sizeof(std::int64_t));  // so that a mapped file can be read in place
        w.put_bytes(reinterpret_cast<const std::uint8_t*>(term.coefficients.values.data()),
                    term.coefficients.values.size() * sizeof(std::int64_t));
      }
    }
}

LinearTransform LinearTransform::load(const Encoder& encoder, ByteReader& r, const std::shared_ptr<const Backing>& backing) {
  const Context& ctx = encoder.context();
  const char* what = "linear transform";
  LinearTransform lt(encoder);
  lt.slots_ = r.get_count(what, ctx.n() / 2);
  lt.level_ = r.get_count(what, ctx.max_level());
  lt.baby_steps_ = r.get_count(what, lt.slots_);
  lt.diagonal_scale_ = r.get<double>(what);
  const auto giant_steps = r.get<std::uint8_t>(what);
  if (giant_steps > static_cast<std::uint8_t>(GiantSteps::kChained))
    throw SerializationError("linear transform: unknown giant-step mode");
  lt.giant_steps_ = static_cast<GiantSteps>(giant_steps);
  const auto pow2 = [](std::size_t v) { return v != 0 && (v & (v - 1)) == 0; };
  if (!pow2(lt.slots_) || !pow2(lt.baby_steps_) || lt.level_ == 0 || !(lt.diagonal_scale_ > 0) ||
      !std::isfinite(lt.diagonal_scale_))
    throw SerializationError("linear transform: invalid geometry");
  const std::size_t count = r.get_count(what, lt.slots_);
  std::size_t coefficient_terms = 0;  // the diagonals kept as coefficients
  for (std::size_t t = 0; t < count; ++t) {
    const auto giant = r.get<std::int64_t>(what), baby = r.get<std::int64_t>(what);
    const auto n1 = static_cast<std::int64_t>(lt.baby_steps_);
    if (giant < 0 || giant >= static_cast<std::int64_t>(lt.slots_) || giant % n1 != 0 || baby < 0 || baby >= n1)
      throw SerializationError("linear transform: diagonal index out of range");
    Term term;
    const auto kind = r.get<std::uint8_t>(what);
    if (kind == 0) {
      term.encoded = get_plaintext_in_place(ctx, r, backing, what);
      if (term.encoded->level() != lt.level_ || term.encoded->slots() != lt.slots_)
        throw SerializationError("linear transform: a diagonal at another level or slot count");
      if (term.encoded->poly.is_borrowed()) lt.backing_ = backing;
    } else if (kind == 1) {
      term.coefficients.scale = r.get<double>(what);
      term.coefficients.log_slots = r.get<std::int32_t>(what);
      const std::size_t n = r.get_count(what, ctx.n());
      // log_slots is range-checked before it is used as a shift (a stored 255 was UB).
      if (n != 2 * lt.slots_ || term.coefficients.log_slots < 0 || term.coefficients.log_slots >= 63 ||
          (std::size_t{1} << term.coefficients.log_slots) != lt.slots_ || !(term.coefficients.scale > 0))
        throw SerializationError("linear transform: malformed diagonal coefficients");
      r.align(sizeof(std::int64_t), what);
      const std::span<const std::uint8_t> bytes = r.get_view(n * sizeof(std::int64_t), what);
      if (backing && reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(std::int64_t) == 0) {
        // In place: the pages stay those of the mapped file (shared, reclaimable); the
        // magnitude is measured at first use (Term::measured).
        term.coefficients.values = {reinterpret_cast<const std::int64_t*>(bytes.data()), n};
        term.coefficients.owner = backing;
        term.in_place = true;
        lt.backing_ = backing;
      } else {
        std::vector<std::int64_t> copy(n);
        std::memcpy(copy.data(), bytes.data(), bytes.size());
        term.coefficients = Encoder::RoundedCoefficients::owning(std::move(copy), term.coefficients.scale,
                                                                 term.coefficients.log_slots);
      }
    } else {
      throw SerializationError("linear transform: unknown diagonal storage");
    }
    const auto [stored, inserted] = lt.terms_[giant].emplace(baby, std::move(term));
    if (!inserted) throw SerializationError("linear transform: repeated diagonal");
    if (!stored->second.encoded) ++coefficient_terms;
    // Copies are measured as they are made; in-place values at first use (Term::measured).
    if (!stored->second.in_place && stored->second.coefficients.magnitude_bits > 62)
      throw SerializationError("linear transform: a diagonal's coefficient is out of range");
  }
  lt.storage_ = coefficient_terms != 0 ? DiagonalStorage::kJustInTime : DiagonalStorage::kEncoded;
  return lt;
}

}  // namespace pfhe::ckks
