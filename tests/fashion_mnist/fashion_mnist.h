// Fashion-MNIST from Debian's package dataset-fashion-mnist (IDX files, gzip), prepared as
// tools/train_fashion_mnist.py does: 28x28 padded to 32x32 with background -1, pixels
// mapped to [-1, 1], the grey channel repeated three times.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace pfhe::test {

inline const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

inline std::vector<std::uint8_t> read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open (apt install dataset-fashion-mnist)");
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  gzclose(f);
  if (n < 0) throw std::runtime_error(path + ": corrupt gzip stream");
  return out;
}

struct FashionMnist {
  std::vector<nn::Tensor> images;
  std::vector<int> labels;
};

// The first `count` images of the test set.
inline FashionMnist load_fashion_mnist_test(std::size_t count) {
  const auto images = read_gzip(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz");
  const auto labels = read_gzip(std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz");
  if (images.size() < 16 + count * 784 || labels.size() < 8 + count) throw std::runtime_error("Fashion-MNIST: short file");
  FashionMnist out;
  for (std::size_t i = 0; i < count; ++i) {
    nn::Tensor t({3, 32, 32});
    for (double& v : t.data) v = -1.0;
    for (std::size_t y = 0; y < 28; ++y)
      for (std::size_t x = 0; x < 28; ++x)
        for (std::size_t c = 0; c < 3; ++c) t.at(c, y + 2, x + 2) = images[16 + i * 784 + y * 28 + x] / 127.5 - 1.0;
    out.images.push_back(std::move(t));
    out.labels.push_back(labels[8 + i]);
  }
  return out;
}

}  // namespace pfhe::test
