// Test fixture for the submission stages: writes datasets/<instance>/intermediate/
// test_pairs.h5 (PNG images) or test_pairs.npz (RGB pixels), and test_labels.txt, with N
// pairs of synthetic face-like images, odd pairs "the same face" (a 5 % variation), even
// pairs two different faces.
//   pfhe_make_test_pairs ROOT SIZE(0..3) IMAGE_SIDE [h5|npz]
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "image.h"
#include "nn/synthetic.h"
#include "test_pairs.h"

namespace {
PairImage pixels(const pfhe::nn::Tensor& t) { return {pfhe::app::rgb_pixels(t), t.shape.width, t.shape.height}; }

void write_fixture(const std::string& root, const InstanceSize& size, std::size_t side, const std::string& format) {
  if (format != "h5" && format != "npz") throw std::invalid_argument("format must be h5 or npz");
  const auto dir = std::filesystem::path(root) / "datasets" / size.name / "intermediate";
  std::filesystem::create_directories(dir);
  TestPairs pairs;
  std::ofstream labels(dir / "test_labels.txt");
  for (std::size_t i = 0; i < size.pairs; ++i) {
    const pfhe::nn::Shape shape{3, side, side};
    const auto a = pfhe::nn::synthetic_images(1, shape, 8 + 2 * i)[0];
    auto b = pfhe::nn::synthetic_images(1, shape, i % 2 ? 8 + 2 * i : 9 + 2 * i)[0];
    if (i % 2) {
      const auto other = pfhe::nn::synthetic_images(1, shape, 5000 + i)[0];
      for (std::size_t k = 0; k < b.data.size(); ++k) b.data[k] = 0.95 * b.data[k] + 0.05 * other.data[k];
    }
    const auto stored = [&](const pfhe::nn::Tensor& t) { return format == "h5" ? PairImage{pfhe::app::encode_png(t)} : pixels(t); };
    pairs.image0.push_back(stored(a));
    pairs.image1.push_back(stored(b));
    labels << (i % 2) << "\n";
  }
  write_test_pairs((dir / ("test_pairs." + format)).string(), pairs);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: pfhe_make_test_pairs ROOT SIZE IMAGE_SIDE [h5|npz]\n");
    return 2;
  }
  try {
    write_fixture(argv[1], instance_size(argv[2]), std::stoul(argv[3]), argc == 5 ? argv[4] : "h5");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pfhe_make_test_pairs: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

