// Model file: round trip through float32, and clear errors on every kind of bad file.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "nn/model_file.h"
#include "nn/synthetic.h"

using namespace pfhe::nn;

namespace {
const PatchCNN& small_model() {
  static const PatchCNN m = [] {
    BackboneShape shape;
    shape.stem_channels = 4;
    shape.blocks = {{4, 1}, {8, 2}};
    return make_synthetic_patch_cnn(shape, 2, 8, 8, 3, synthetic_images(128, {3, 16, 16}, 6));
  }();
  return m;
}

void expect_error(std::vector<std::uint8_t> bytes, const std::string& fragment) {
  try {
    load_model(bytes);
    ADD_FAILURE() << "accepted a bad model (" << fragment << ")";
  } catch (const ModelFormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

// Replaces the first occurrence of `from` in the JSON header (same length keeps offsets).
std::vector<std::uint8_t> patch_json(std::vector<std::uint8_t> bytes, const std::string& from, const std::string& to) {
  std::string s(bytes.begin(), bytes.end());
  const auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  EXPECT_EQ(from.size(), to.size());
  std::copy(to.begin(), to.end(), bytes.begin() + static_cast<std::ptrdiff_t>(pos));
  return bytes;
}
}  // namespace

TEST(ModelFile, RoundTripKeepsTheModelToFloatPrecision) {
  const PatchCNN& m = small_model();
  const auto bytes = save_model(m);
  const PatchCNN back = load_model(bytes);
  EXPECT_EQ(save_model(back), bytes);  // float32 values are stable from the second save on
  const Tensor img = synthetic_images(1, m.image_shape(), 9)[0];
  const Tensor a = m.normalized(img), b = back.normalized(img);
  for (std::size_t i = 0; i < a.data.size(); ++i) EXPECT_NEAR(a.data[i], b.data[i], 1e-4 * (1 + std::fabs(a.data[i])));
  const std::string path = ::testing::TempDir() + "/pfhe_model.pfhm";
  save_model_file(m, path);
  EXPECT_EQ(save_model(load_model_file(path)), bytes);
  EXPECT_THROW(load_model_file(path + ".missing"), ModelFormatError);
}

TEST(ModelFile, RejectsBadFilesWithClearErrors) {
  const auto good = save_model(small_model());
  auto b = good;
  b[0] = 'X';
  expect_error(b, "magic");
  b = good;
  b[4] = 7;
  expect_error(b, "version");
  b = good;
  b.resize(b.size() - 4);
  expect_error(b, "size");
  expect_error(std::vector<std::uint8_t>(good.begin(), good.begin() + 10), "magic");
  expect_error(patch_json(good, "\"architecture\":\"cryptoface_pcnn\"", "\"architecture\":\"cryptoface_xxxx\""),
               "\"cryptoface_xxxx\" is not a PatchCNN");
  expect_error(patch_json(good, "nets.0.conv.weight", "nets.0.conv.WEIGHT"), "missing tensor nets.0.conv.weight");
  expect_error(patch_json(good, "{", "["), "JSON");
  // A NaN in the data section and a negative variance.
  b = good;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(b.data() + b.size() - sizeof(float), &nan, sizeof(float));
  expect_error(b, "non-finite");
  const PatchCNN& m = small_model();
  PatchCNN bad = m;
  bad.head_bn.var[0] = -1;
  EXPECT_THROW(save_model(bad), std::invalid_argument);  // refused before writing
}
