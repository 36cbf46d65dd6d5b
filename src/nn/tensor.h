// A dense float64 tensor in channel-major (C, H, W) order; a vector is (F, 1, 1).
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "ring/parallel.h"

namespace pfhe::nn {

struct Shape {
  std::size_t channels = 0, height = 1, width = 1;
  std::size_t size() const { return channels * height * width; }
  bool operator==(const Shape&) const = default;
  // Appended piece by piece: the chained operator+ form trips GCC 12's false -Wrestrict
  // where it is inlined.
  std::string str() const {
    std::string s = "(";
    for (const std::size_t d : {channels, height, width}) (s += std::to_string(d)) += ", ";
    s.resize(s.size() - 2);
    return s += ")";
  }
};

struct Tensor {
  Shape shape;
  std::vector<double> data;

  Tensor() = default;
  explicit Tensor(Shape s, double fill = 0.0) : shape(s), data(s.size(), fill) {}

  double& at(std::size_t c, std::size_t y, std::size_t x) { return data[(c * shape.height + y) * shape.width + x]; }
  double at(std::size_t c, std::size_t y, std::size_t x) const {
    return data[(c * shape.height + y) * shape.width + x];
  }
};

inline void expect_shape(const Tensor& t, const Shape& s, const char* who) {
  if (!(t.shape == s))
    throw std::invalid_argument(std::string(who) + ": input shape " + t.shape.str() + ", expected " + s.str());
}

// f over every element, in parallel, results in input order (exceptions: ring::parallel_for).
template <typename T, typename F>
auto parallel_map(const std::vector<T>& xs, F&& f) {
  std::vector<decltype(f(xs.front()))> out(xs.size());
  ring::parallel_for(xs.size(), [&](std::size_t i) { out[i] = f(xs[i]); });
  return out;
}

}  // namespace pfhe::nn
