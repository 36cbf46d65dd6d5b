// The benchmark's input file: HDF5 with two equally long datasets `image0` and `image1` of
// variable-length uint8 (each element one encoded image), read with Debian's libhdf5.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

// The benchmark's instance sizes: argument 0..3 -> directory name and face-pair count.
struct InstanceSize {
  std::string name;
  std::size_t pairs;
};
// Throws std::invalid_argument unless `size` is "0", "1", "2" or "3".
InstanceSize instance_size(const std::string& size);

struct TestPairs {
  std::vector<std::vector<std::uint8_t>> image0, image1;
};

// Throws std::invalid_argument naming the file and the problem (missing file, not HDF5,
// missing dataset, wrong type, different lengths).
TestPairs read_test_pairs(const std::string& path);
// For fixtures and tests.
void write_test_pairs(const std::string& path, const TestPairs& pairs);
