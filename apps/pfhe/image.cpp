#include "image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include "ckks/serialization.h"

#include <algorithm>
#include <cmath>
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

}  // namespace pfhe::app
