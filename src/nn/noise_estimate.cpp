#include "nn/noise_estimate.h"

#include <cmath>
#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

#include "nn/precision.h"

namespace pfhe::nn {

double rounding_noise(std::size_t ring_degree, double scale) {
  if (ring_degree == 0 || !(scale > 1) || !std::isfinite(scale))
    throw std::invalid_argument("noise estimate: invalid ring degree or scale");
  return static_cast<double>(ring_degree) / (6 * scale);
}

double PrecisionEstimate::bits() const { return -std::log2(relative); }

namespace {

// Error standard deviation per channel (one entry: every channel) added at each observed
// point of the forward pass (nn/backbone.h names the points).
using NoisePlan = std::map<std::string, std::vector<double>>;

std::vector<double> herpn_output_noise(const HerPN& herpn, double sigma) {
  std::vector<double> per_channel = herpn.fuse().w2;
  for (double& w : per_channel) w = std::sqrt(2.0) * std::fabs(w) * sigma;
  return per_channel;
}

NoisePlan noise_plan(const PatchCNN& model, double sigma) {
  NoisePlan plan;
  for (std::size_t p = 0; p < model.backbones.size(); ++p) {
    const Backbone& b = model.backbones[p];
    const std::string net = "nets." + std::to_string(p);
    plan[net + ".conv output"] = {sigma};
    for (std::size_t j = 0; j < b.blocks.size(); ++j) {
      const std::string block = net + ".layers." + std::to_string(j);
      plan[block + ".conv1 input"] = herpn_output_noise(b.blocks[j].herpn1, sigma);
      plan[block + ".herpn2 input"] = {sigma};
      plan[block + ".conv2 input"] = herpn_output_noise(b.blocks[j].herpn2, sigma);
      plan[block + " output"] = {std::sqrt(2.0) * sigma};
    }
    plan[net + ".pool input"] = herpn_output_noise(b.pool_herpn, sigma);
  }
  return plan;
}

void add_noise(Tensor& t, const std::vector<double>& stddev, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  const std::size_t per_channel = t.data.size() / t.shape.channels;
  for (std::size_t i = 0; i < t.data.size(); ++i)
    t.data[i] += normal(rng) * stddev[stddev.size() == 1 ? 0 : i / per_channel];
}

}  // namespace

PrecisionEstimate estimate_precision(const PatchCNN& model, const std::vector<Tensor>& images,
                                     std::size_t ring_degree, double scale, std::uint64_t seed) {
  if (images.empty()) throw std::invalid_argument("noise estimate: no images");
  const double sigma = rounding_noise(ring_degree, scale);
  const double fresh = 3.2 * std::sqrt(static_cast<double>(ring_degree) / 2) / scale;
  const NoisePlan plan = noise_plan(model, sigma);
  std::vector<std::size_t> indices(images.size());
  std::iota(indices.begin(), indices.end(), std::size_t{0});
  // Images in parallel, each with its own generator (seed + index): the same estimate for
  // any thread count.
  const std::vector<double> errors = parallel_map(indices, [&](std::size_t i) {
    std::mt19937_64 rng(seed + i);
    const TensorObserver perturb = [&](const std::string& point, Tensor& t) {
      if (const auto it = plan.find(point); it != plan.end()) add_noise(t, it->second, rng);
    };
    Tensor noisy_image = images[i];
    add_noise(noisy_image, {fresh}, rng);
    Tensor noisy = model.embedding(noisy_image, &perturb);
    add_noise(noisy, {std::sqrt(static_cast<double>(model.backbones.size())) * sigma}, rng);
    Tensor exact = model.embedding(images[i]);
    if (!model.classifier) {
      noisy = model.normalize(std::move(noisy));
      add_noise(noisy, {std::sqrt(2.0) * sigma}, rng);
      exact = model.normalize(std::move(exact));
    }
    return precision_of(noisy, exact).relative;
  });
  PrecisionEstimate estimate;
  estimate.relative = *std::max_element(errors.begin(), errors.end());
  return estimate;
}

}  // namespace pfhe::nn
