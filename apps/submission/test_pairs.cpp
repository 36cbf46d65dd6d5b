#include "test_pairs.h"

#include <hdf5.h>

#include <filesystem>
#include <stdexcept>

namespace {

// Closes an HDF5 handle on scope exit.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

std::vector<std::vector<std::uint8_t>> read_vlen_bytes(hid_t file, const char* name, const std::string& path) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) throw std::invalid_argument(path + ": no dataset '" + name + "'");
  const Handle set{H5Dopen2(file, name, H5P_DEFAULT), H5Dclose};
  const Handle type{H5Dget_type(set.id), H5Tclose};
  if (set.id < 0 || type.id < 0 || H5Tget_class(type.id) != H5T_VLEN)
    throw std::invalid_argument(path + ": dataset '" + name + "' is not variable-length");
  const Handle space{H5Dget_space(set.id), H5Sclose};
  if (H5Sget_simple_extent_ndims(space.id) != 1) throw std::invalid_argument(path + ": '" + name + "' is not 1-D");
  hsize_t count = 0;
  H5Sget_simple_extent_dims(space.id, &count, nullptr);
  const Handle mem_type{H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose};
  std::vector<hvl_t> raw(count);
  if (count > 0 && H5Dread(set.id, mem_type.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) < 0)
    throw std::invalid_argument(path + ": cannot read '" + name + "' as variable-length uint8");
  std::vector<std::vector<std::uint8_t>> out;
  for (const hvl_t& v : raw) {
    const auto* p = static_cast<const std::uint8_t*>(v.p);
    out.emplace_back(p, p + v.len);
  }
  if (count > 0) H5Dvlen_reclaim(mem_type.id, space.id, H5P_DEFAULT, raw.data());
  return out;
}

void write_vlen_bytes(hid_t file, const char* name, const std::vector<std::vector<std::uint8_t>>& rows) {
  const hsize_t count = rows.size();
  const Handle space{H5Screate_simple(1, &count, nullptr), H5Sclose};
  const Handle type{H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose};
  const Handle set{H5Dcreate2(file, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  std::vector<hvl_t> raw;
  for (const auto& r : rows) raw.push_back({r.size(), const_cast<std::uint8_t*>(r.data())});
  if (set.id < 0 || H5Dwrite(set.id, type.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) < 0)
    throw std::runtime_error(std::string("cannot write dataset ") + name);
}

}  // namespace

InstanceSize instance_size(const std::string& size) {
  static const InstanceSize sizes[] = {{"single", 1}, {"small", 128}, {"medium", 256}, {"large", 1024}};
  if (size.size() != 1 || size[0] < '0' || size[0] > '3') throw std::invalid_argument("size must be 0, 1, 2 or 3");
  return sizes[size[0] - '0'];
}

TestPairs read_test_pairs(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::invalid_argument(path + ": no such file");
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions, not HDF5's stack dump
  if (H5Fis_hdf5(path.c_str()) <= 0) throw std::invalid_argument(path + ": not an HDF5 file");
  const Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) throw std::invalid_argument(path + ": cannot open (corrupt HDF5?)");
  TestPairs pairs{read_vlen_bytes(file.id, "image0", path), read_vlen_bytes(file.id, "image1", path)};
  if (pairs.image0.size() != pairs.image1.size())
    throw std::invalid_argument(path + ": image0 and image1 differ in length");
  return pairs;
}

void write_test_pairs(const std::string& path, const TestPairs& pairs) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const Handle file{H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) throw std::runtime_error(path + ": cannot create");
  write_vlen_bytes(file.id, "image0", pairs.image0);
  write_vlen_bytes(file.id, "image1", pairs.image1);
}
