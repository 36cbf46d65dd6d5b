#include "nn/fit.h"

#include <algorithm>
#include <cmath>
#include <numeric>
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
    auto it = std::find_if(ranges_.begin(), ranges_.end(), [&](const LayerRange& r) { return r.name == name; });
    if (it == ranges_.end()) ranges_.push_back({name, m});
    else it->max_abs = std::max(it->max_abs, m);
  }
  std::vector<LayerRange> take() { return std::move(ranges_); }

 private:
  std::vector<LayerRange> ranges_;
};

// The backbone forward of Backbone::forward, noting every polynomial input and output.
Tensor traced_forward(const Backbone& b, const Tensor& patch, const std::string& prefix, RangeRecorder& rec) {
  Tensor x = b.conv0.forward(patch);
  rec.note(prefix + ".conv output", x);
  for (std::size_t j = 0; j < b.blocks.size(); ++j) {
    const auto& blk = b.blocks[j];
    const std::string layer = prefix + ".layers." + std::to_string(j);
    rec.note(layer + ".herpn1 input", x);
    const Tensor z = blk.herpn1.forward(x);
    const Tensor h = blk.conv1.forward(z);
    rec.note(layer + ".herpn2 input", h);
    x = blk.forward(x);
    rec.note(layer + " output", x);
  }
  rec.note(prefix + ".herpnpool input", x);
  return b.forward(patch);
}

}  // namespace

double FitReport::max_abs() const {
  double m = 0;
  for (const auto& r : ranges) m = std::max(m, r.max_abs);
  return m;
}

FitReport fit(PatchCNN& model, const std::vector<Tensor>& images, double value_limit, double headroom_factor) {
  model.validate();
  fit_l2_norm(model, images);
  RangeRecorder rec;
  FitReport report;
  std::vector<double> ys;
  for (const auto& img : images) {
    Tensor concat({model.head.in_features, 1, 1});
    std::size_t offset = 0;
    for (std::size_t p = 0; p < model.backbones.size(); ++p) {
      const Tensor f = traced_forward(model.backbones[p], model.patch(img, p), "nets." + std::to_string(p), rec);
      std::copy(f.data.begin(), f.data.end(), concat.data.begin() + static_cast<std::ptrdiff_t>(offset));
      offset += f.data.size();
    }
    const Tensor e = model.head_bn.forward(model.head.forward(concat));
    rec.note("embedding", e);
    ys.push_back(std::inner_product(e.data.begin(), e.data.end(), e.data.begin(), 0.0));
    rec.note("normalized embedding", model.normalized(img));
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
  if (report.max_abs() * headroom_factor > value_limit)
    throw std::invalid_argument("fit: values reach " + std::to_string(report.max_abs()) + ", above " +
                                std::to_string(value_limit / headroom_factor) +
                                " (the parameters' limit over the headroom factor)");
  return report;
}

}  // namespace pfhe::nn
