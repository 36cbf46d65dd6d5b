// The benchmark's pair stores, in the two formats its harness revisions write
// (docs/SUBMISSION.md): test_pairs.h5, two equally long HDF5 datasets `image0` and `image1`
// of variable-length uint8 (each element one encoded image), read with Debian's libhdf5;
// and test_pairs.npz, a NumPy archive with members pair_NNNNN_img0 / pair_NNNNN_img1, each
// a (3, H, W) uint8 RGB array, read with Debian's libzip and xtensor's .npy reader.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

// The benchmark's instance sizes: argument 0..3 -> directory name and face-pair count.
struct InstanceSize {
  std::string name;
  std::size_t pairs;
};
// Throws std::invalid_argument unless `size` is "0", "1", "2" or "3".
InstanceSize instance_size(const std::string& size);

// One image of a pair: an encoded image file (PNG, JPEG; the .h5 store), or decoded RGB
// pixels (the .npz store), rows of interleaved R, G, B.
struct PairImage {
  std::vector<std::uint8_t> data;
  std::size_t width = 0, height = 0;  // 0 for an encoded image
  bool encoded() const { return width == 0; }
};

struct TestPairs {
  std::vector<PairImage> image0, image1;
};

// The store in `dir` (datasets/<instance>/intermediate/): test_pairs.h5 or test_pairs.npz,
// whichever is there; with both (one left by an older harness), the more recently written.
// Throws std::invalid_argument when neither is.
std::string find_test_pairs(const std::string& dir);
// A pair store opened for reading one pair at a time, so that the client stages' memory
// does not grow with the instance (1,024 pairs of 250 x 250 RGB pixels are 0.4 GB in an
// .npz store). The format is the file's extension; opening checks the store's shape
// (datasets and their type and length, or the archive's member names), reading a pair
// checks its images. Errors (std::invalid_argument) name the file and the problem
// (missing file, not HDF5 / not a zip archive, missing dataset or member, wrong type or
// shape, different lengths).
class PairReader {
 public:
  explicit PairReader(const std::string& path);
  ~PairReader();
  PairReader(const PairReader&) = delete;
  PairReader& operator=(const PairReader&) = delete;
  std::size_t size() const;
  // Images 0 and 1 of pair i < size().
  std::array<PairImage, 2> pair(std::size_t i) const;

  struct Store;  // the open HDF5 file or zip archive (test_pairs.cpp)

 private:
  std::unique_ptr<Store> store_;
};
// For fixtures and tests, by extension: .h5 stores encoded images, .npz decoded pixels.
void write_test_pairs(const std::string& path, const TestPairs& pairs);
