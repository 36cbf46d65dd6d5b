// Image files for the CLI: PNG, PPM/PGM, JPEG and BMP through Debian's libstb.
#pragma once
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace pfhe::app {

// Decodes an image, takes its centred square, resizes it (bilinear) to size x size and
// maps pixels to [-1, 1] as CryptoFace's preprocessing does (x / 127.5 - 1); RGB order.
nn::Tensor load_image(const std::string& path, std::size_t size);
// A model input of `shape` from a file: a .npy array (float32 or float64) of exactly
// (C, H, W) values (or (H, W) for C = 1), used as is; or an image file, preprocessed as
// load_image does into (3, H, H), averaged over R, G, B when C = 1 (square inputs with 1
// or 3 channels only). Errors name the file and what was expected.
nn::Tensor load_input(const std::string& path, const nn::Shape& shape);
// A (1, H, W) tensor: the mean of a (3, H, W) image's channels.
nn::Tensor to_grey(const nn::Tensor& rgb);
// Encoded image bytes (e.g. from an HDF5 dataset), same preprocessing.
nn::Tensor decode_image(const unsigned char* data, std::size_t length, std::size_t size, const std::string& what);
// Decoded RGB pixels (rows of interleaved R, G, B; width x height), same preprocessing.
nn::Tensor pixels_to_tensor(const unsigned char* rgb, std::size_t width, std::size_t height, std::size_t size);
// A (3, H, W) tensor with values in [-1, 1] as 8-bit RGB pixels (rows of interleaved R, G,
// B), as PNG bytes, and as a PNG file.
std::vector<unsigned char> rgb_pixels(const nn::Tensor& image);
std::vector<unsigned char> encode_png(const nn::Tensor& image);
void save_png(const nn::Tensor& image, const std::string& path);

}  // namespace pfhe::app
