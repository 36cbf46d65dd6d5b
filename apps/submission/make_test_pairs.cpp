// Test fixture for the submission stages: writes datasets/<instance>/intermediate/
// test_pairs.h5 (and test_labels.txt) with N pairs of synthetic face-like PNG images,
// odd pairs "the same face" (a 5 % variation), even pairs two different faces.
//   pfhe_make_test_pairs ROOT SIZE(0..3) IMAGE_SIDE
#include <stb_image_write.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "nn/synthetic.h"
#include "test_pairs.h"

namespace {
std::vector<std::uint8_t> png(const pfhe::nn::Tensor& t) {
  const int side = static_cast<int>(t.shape.width);
  std::vector<unsigned char> rgb(t.data.size());
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x)
      for (int c = 0; c < 3; ++c) {
        const double v = (t.at(c, y, x) + 1.0) * 127.5;
        rgb[(y * side + x) * 3 + c] = static_cast<unsigned char>(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
      }
  std::vector<std::uint8_t> out;
  stbi_write_png_to_func(
      [](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<std::uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
      },
      &out, side, side, 3, rgb.data(), side * 3);
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: pfhe_make_test_pairs ROOT SIZE IMAGE_SIDE\n");
    return 2;
  }
  static const char* names[] = {"single", "small", "medium", "large"};
  static const std::size_t counts[] = {1, 128, 256, 1024};
  const int size = std::stoi(argv[2]);
  const std::size_t side = std::stoul(argv[3]);
  const auto dir = std::filesystem::path(argv[1]) / "datasets" / names[size] / "intermediate";
  std::filesystem::create_directories(dir);
  TestPairs pairs;
  std::ofstream labels(dir / "test_labels.txt");
  for (std::size_t i = 0; i < counts[size]; ++i) {
    const pfhe::nn::Shape shape{3, side, side};
    const auto a = pfhe::nn::synthetic_images(1, shape, 8 + 2 * i)[0];
    auto b = pfhe::nn::synthetic_images(1, shape, i % 2 ? 8 + 2 * i : 9 + 2 * i)[0];
    if (i % 2) {
      const auto other = pfhe::nn::synthetic_images(1, shape, 5000 + i)[0];
      for (std::size_t k = 0; k < b.data.size(); ++k) b.data[k] = 0.95 * b.data[k] + 0.05 * other.data[k];
    }
    pairs.image0.push_back(png(a));
    pairs.image1.push_back(png(b));
    labels << (i % 2) << "\n";
  }
  write_test_pairs((dir / "test_pairs.h5").string(), pairs);
  return 0;
}
