#include "image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "ckks/serialization.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <vector>

namespace pfhe::app {

namespace {

nn::Tensor to_tensor(const unsigned char* rgb, int w, int h, std::size_t size) {
  const int side = std::min(w, h), x0 = (w - side) / 2, y0 = (h - side) / 2;
  nn::Tensor t({3, size, size});
  const double step = static_cast<double>(side) / static_cast<double>(size);
  const auto pixel = [&](int x, int y, std::size_t c) {
    x = std::clamp(x, 0, side - 1);
    y = std::clamp(y, 0, side - 1);
    return static_cast<double>(rgb[(static_cast<std::size_t>(y0 + y) * w + (x0 + x)) * 3 + c]);
  };
  for (std::size_t y = 0; y < size; ++y)
    for (std::size_t x = 0; x < size; ++x) {
      // Sample at the output pixel's centre in source coordinates.
      const double sx = (static_cast<double>(x) + 0.5) * step - 0.5, sy = (static_cast<double>(y) + 0.5) * step - 0.5;
      const int ix = static_cast<int>(std::floor(sx)), iy = static_cast<int>(std::floor(sy));
      const double fx = sx - ix, fy = sy - iy;
      for (std::size_t c = 0; c < 3; ++c) {
        const double v = (1 - fy) * ((1 - fx) * pixel(ix, iy, c) + fx * pixel(ix + 1, iy, c)) +
                         fy * ((1 - fx) * pixel(ix, iy + 1, c) + fx * pixel(ix + 1, iy + 1, c));
        t.at(c, y, x) = v / 127.5 - 1.0;
      }
    }
  return t;
}

using StbPixels = std::unique_ptr<unsigned char, void (*)(void*)>;

}  // namespace

nn::Tensor decode_image(const unsigned char* data, std::size_t length, std::size_t size, const std::string& what) {
  if (size == 0) throw std::invalid_argument("decode_image: zero output size");
  if (length > static_cast<std::size_t>(INT32_MAX)) throw std::invalid_argument(what + ": image too large");
  int w = 0, h = 0, channels = 0;
  StbPixels pixels(stbi_load_from_memory(data, static_cast<int>(length), &w, &h, &channels, 3), stbi_image_free);
  if (!pixels) throw std::invalid_argument(what + ": cannot decode image (" + stbi_failure_reason() + ")");
  return to_tensor(pixels.get(), w, h, size);
}

nn::Tensor pixels_to_tensor(const unsigned char* rgb, std::size_t width, std::size_t height, std::size_t size) {
  if (size == 0 || width == 0 || height == 0) throw std::invalid_argument("pixels_to_tensor: empty image or output");
  if (width > static_cast<std::size_t>(INT32_MAX) / 4 || height > static_cast<std::size_t>(INT32_MAX) / 4)
    throw std::invalid_argument("pixels_to_tensor: image too large");
  return to_tensor(rgb, static_cast<int>(width), static_cast<int>(height), size);
}

nn::Tensor load_image(const std::string& path, std::size_t size) {
  int w = 0, h = 0, channels = 0;
  StbPixels pixels(stbi_load(path.c_str(), &w, &h, &channels, 3), stbi_image_free);
  if (!pixels) throw std::invalid_argument(path + ": cannot read image (" + stbi_failure_reason() + ")");
  return to_tensor(pixels.get(), w, h, size);
}

std::vector<unsigned char> rgb_pixels(const nn::Tensor& image) {
  const std::size_t h = image.shape.height, w = image.shape.width;
  if (image.shape.channels != 3) throw std::invalid_argument("rgb_pixels: needs 3 channels");
  std::vector<unsigned char> rgb(h * w * 3);
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x)
      for (std::size_t c = 0; c < 3; ++c)
        rgb[(y * w + x) * 3 + c] =
            static_cast<unsigned char>(std::lround(std::clamp((image.at(c, y, x) + 1.0) * 127.5, 0.0, 255.0)));
  return rgb;
}

std::vector<unsigned char> encode_png(const nn::Tensor& image) {
  const std::size_t h = image.shape.height, w = image.shape.width;
  const std::vector<unsigned char> rgb = rgb_pixels(image);
  std::vector<unsigned char> png;
  const auto append = [](void* out, void* data, int size) {
    auto* bytes = static_cast<unsigned char*>(data);
    static_cast<std::vector<unsigned char>*>(out)->insert(static_cast<std::vector<unsigned char>*>(out)->end(), bytes,
                                                          bytes + size);
  };
  if (!stbi_write_png_to_func(append, &png, static_cast<int>(w), static_cast<int>(h), 3, rgb.data(),
                              static_cast<int>(w * 3)))
    throw std::runtime_error("encode_png: PNG encoding failed");
  return png;
}

void save_png(const nn::Tensor& image, const std::string& path) {
  const std::vector<unsigned char> png = encode_png(image);
  ckks::write_raw_file(path, {png.data(), png.size()});
}

namespace {

template <typename T>
bool try_load_npy(const std::string& path, xt::xarray<double>& out) {
  std::ifstream in(path, std::ios::binary);
  try {
    out = xt::load_npy<T>(in);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

nn::Tensor npy_input(const std::string& path, const nn::Shape& shape) {
  xt::xarray<double> a;
  if (!try_load_npy<double>(path, a) && !try_load_npy<float>(path, a))
    throw std::invalid_argument(path + ": not a float32 or float64 .npy array");
  const std::vector<std::size_t> dims(a.shape().begin(), a.shape().end());
  const bool chw = dims == std::vector<std::size_t>{shape.channels, shape.height, shape.width};
  const bool hw = shape.channels == 1 && dims == std::vector<std::size_t>{shape.height, shape.width};
  if (!chw && !hw)
    throw std::invalid_argument(path + ": the model takes a " + shape.str() + " array (C, H, W), the file has " +
                                std::to_string(dims.size()) + " dimensions of other sizes");
  nn::Tensor t(shape);
  std::copy(a.begin(), a.end(), t.data.begin());  // row-major, as nn::Tensor
  if (!std::all_of(t.data.begin(), t.data.end(), [](double v) { return std::isfinite(v); }))
    throw std::invalid_argument(path + ": the array holds a value that is not finite");
  return t;
}

}  // namespace

nn::Tensor load_input(const std::string& path, const nn::Shape& shape) {
  if (std::filesystem::path(path).extension() == ".npy") return npy_input(path, shape);
  if (shape.height != shape.width || (shape.channels != 1 && shape.channels != 3))
    throw std::invalid_argument(path + ": the model takes a " + shape.str() +
                                " tensor; images give square 1- or 3-channel inputs: pass a .npy array");
  const nn::Tensor rgb = load_image(path, shape.height);
  return shape.channels == 3 ? rgb : to_grey(rgb);
}

nn::Tensor to_grey(const nn::Tensor& rgb) {
  nn::expect_shape(rgb, {3, rgb.shape.height, rgb.shape.width}, "to_grey");
  nn::Tensor grey({1, rgb.shape.height, rgb.shape.width});
  const std::size_t plane = grey.data.size();
  for (std::size_t i = 0; i < plane; ++i)
    grey.data[i] = (rgb.data[i] + rgb.data[i + plane] + rgb.data[i + 2 * plane]) / 3;
  return grey;
}

}  // namespace pfhe::app
