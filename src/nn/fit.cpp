#include "nn/fit.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <stdexcept>

namespace pfhe::nn {

namespace {

class RangeRecorder {
 public:
  void note(const std::string& name, const Tensor& t) {
    double m = 0;
    for (double v : t.data) {
      if (!std::isfinite(v)) throw std::invalid_argument("fit: non-finite value at " + name);
      m = std::max(m, std::fabs(v));
    }
    note(name, m);
  }
  void merge(const RangeRecorder& other) {
    for (const LayerRange& r : other.ranges_) note(r.name, r.max_abs);
  }
  std::vector<LayerRange> take() { return std::move(ranges_); }

 private:
  void note(const std::string& name, double m) {
    auto it = std::find_if(ranges_.begin(), ranges_.end(), [&](const LayerRange& r) { return r.name == name; });
    if (it == ranges_.end()) ranges_.push_back({name, m});
    else it->max_abs = std::max(it->max_abs, m);
  }
  std::vector<LayerRange> ranges_;
};

}  // namespace

double FitReport::max_abs() const {
  double m = 0;
  for (const auto& r : ranges) m = std::max(m, r.max_abs);
  return m;
}

namespace {

void check_value_limit(const FitReport& report, double value_limit, double headroom_factor) {
  if (report.max_abs() * headroom_factor > value_limit)
    throw std::invalid_argument("fit: values reach " + std::to_string(report.max_abs()) + ", above " +
                                std::to_string(value_limit / headroom_factor) +
                                " (the parameters' limit over the headroom factor)");
}

}  // namespace

namespace {

// One float64 pass over the images recording every range; with refit_l2, the L2
// polynomial is fitted on the pass's embeddings before the normalised ones are recorded.
FitReport record_ranges(PatchCNN& model, const std::vector<Tensor>& images, bool refit_l2, double value_limit,
                        double headroom_factor) {
  model.validate();
  if (images.empty()) throw std::invalid_argument("fit: no calibration images");
  // Images in parallel, one recorder each, merged in image order (the same report).
  struct Pass {
    RangeRecorder ranges;
    Tensor embedding;
  };
  std::vector<Pass> passes = parallel_map(images, [&](const Tensor& img) {
    Pass pass;
    const TensorObserver observe = [&](const std::string& point, const Tensor& t) { pass.ranges.note(point, t); };
    pass.embedding = model.embedding(img, &observe);
    pass.ranges.note("embedding", pass.embedding);
    return pass;
  });
  RangeRecorder rec;
  FitReport report;
  std::vector<Tensor> embeddings;
  std::vector<double> ys;
  for (Pass& pass : passes) {
    rec.merge(pass.ranges);
    ys.push_back(sum_of_squares(pass.embedding));
    embeddings.push_back(std::move(pass.embedding));
  }
  // A classifier's output is its logits: no normalisation to fit or to record (its
  // polynomial on logits could reach any size and fail the limit for nothing).
  if (!model.classifier) {
    if (refit_l2) model.l2 = fit_l2_poly(ys);
    for (const Tensor& e : embeddings) rec.note("normalized embedding", model.normalize(e));
  }
  report.ranges = rec.take();
  report.y_min = *std::min_element(ys.begin(), ys.end());
  report.y_max = *std::max_element(ys.begin(), ys.end());
  const L2FitPoints points = l2_fit_points(ys);
  report.l2_domain_lo = points.lo;
  report.l2_domain_hi = points.hi;
  report.fraction_outside =
      static_cast<double>(std::count_if(ys.begin(), ys.end(), [&](double y) {
        return y < report.l2_domain_lo || y > report.l2_domain_hi;
      })) / static_cast<double>(ys.size());
  check_value_limit(report, value_limit, headroom_factor);
  return report;
}

}  // namespace

FitReport fit(PatchCNN& model, const std::vector<Tensor>& images, double value_limit, double headroom_factor) {
  return record_ranges(model, images, true, value_limit, headroom_factor);
}

FitReport measure_ranges(const PatchCNN& model, const std::vector<Tensor>& images, double value_limit,
                         double headroom_factor) {
  PatchCNN copy = model;  // record_ranges leaves l2 alone without refit_l2
  return record_ranges(copy, images, false, value_limit, headroom_factor);
}

FitReport fit(const Graph& graph, const std::vector<Tensor>& inputs, double value_limit, double headroom_factor) {
  if (inputs.empty()) throw std::invalid_argument("fit: no calibration inputs");
  RangeRecorder rec;
  for (const Tensor& x : inputs) {
    const std::vector<Tensor> values = graph.forward_all(x);
    for (std::size_t n = 0; n < values.size(); ++n) {
      const GraphNode& node = graph.nodes()[n];
      rec.note(node.name, values[n]);
      const auto* p = std::get_if<PolynomialActivation>(&node.op);
      if (!p) continue;
      for (const double v : values[node.inputs[0]].data)
        if (v < p->lower || v > p->upper)
          throw std::invalid_argument("fit: the input of polynomial '" + node.name + "' reaches " + std::to_string(v) +
                                      ", outside its domain [" + std::to_string(p->lower) + ", " +
                                      std::to_string(p->upper) + "]");
    }
  }
  FitReport report;
  report.ranges = rec.take();
  check_value_limit(report, value_limit, headroom_factor);
  return report;
}

}  // namespace pfhe::nn
