#include "test_pairs.h"

#include <hdf5.h>
#include <zip.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

namespace {

// Closes an HDF5 handle on scope exit.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

namespace fs = std::filesystem;

void write_vlen_bytes(hid_t file, const char* name, const std::vector<PairImage>& rows) {
  const hsize_t count = rows.size();
  const Handle space{H5Screate_simple(1, &count, nullptr), H5Sclose};
  const Handle type{H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose};
  const Handle set{H5Dcreate2(file, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  std::vector<hvl_t> raw;
  for (const auto& r : rows) {
    if (!r.encoded()) throw std::invalid_argument("an .h5 pair store holds encoded images, not pixels");
    raw.push_back({r.data.size(), const_cast<std::uint8_t*>(r.data.data())});
  }
  if (set.id < 0 || H5Dwrite(set.id, type.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) < 0)
    throw std::runtime_error(std::string("cannot write dataset ") + name);
}

void write_h5_pairs(const std::string& path, const TestPairs& pairs) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const Handle file{H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) throw std::runtime_error(path + ": cannot create");
  write_vlen_bytes(file.id, "image0", pairs.image0);
  write_vlen_bytes(file.id, "image1", pairs.image1);
}

using Archive = std::unique_ptr<zip_t, int (*)(zip_t*)>;

std::string member_name(std::size_t pair, int k) {
  char name[64];
  std::snprintf(name, sizeof name, "pair_%05zu_img%d.npy", pair, k);
  return name;
}

// A (3, H, W) uint8 array, as interleaved RGB rows.
PairImage npy_image(const std::string& bytes, const std::string& what) {
  std::istringstream stream(bytes);
  xt::xarray<std::uint8_t> a;
  try {
    a = xt::load_npy<std::uint8_t>(stream);
  } catch (const std::exception& e) {
    throw std::invalid_argument(what + ": not a uint8 .npy array (" + e.what() + ")");
  }
  if (stream.fail() || static_cast<std::size_t>(stream.tellg()) != bytes.size())
    throw std::invalid_argument(what + ": the array's data is truncated or followed by other bytes");
  if (a.dimension() != 3 || a.shape()[0] != 3 || a.shape()[1] == 0 || a.shape()[2] == 0)
    throw std::invalid_argument(what + ": expected a (3, H, W) RGB array");
  PairImage image{{}, a.shape()[2], a.shape()[1]};
  image.data.resize(3 * image.width * image.height);
  for (std::size_t y = 0; y < image.height; ++y)
    for (std::size_t x = 0; x < image.width; ++x)
      for (std::size_t c = 0; c < 3; ++c) image.data[(y * image.width + x) * 3 + c] = a(c, y, x);
  return image;
}

void write_npz_pairs(const std::string& path, const TestPairs& pairs) {
  int error = 0;
  Archive archive(zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error), zip_close);
  if (!archive) throw std::runtime_error(path + ": cannot create");
  std::vector<std::string> arrays;  // zip_close reads the sources: they must live until then
  arrays.reserve(2 * pairs.image0.size());
  for (std::size_t i = 0; i < pairs.image0.size(); ++i)
    for (int k = 0; k < 2; ++k) {
      const PairImage& image = (k == 0 ? pairs.image0 : pairs.image1)[i];
      if (image.encoded()) throw std::invalid_argument("an .npz pair store holds pixels, not encoded images");
      xt::xarray<std::uint8_t> a = xt::zeros<std::uint8_t>({std::size_t{3}, image.height, image.width});
      for (std::size_t y = 0; y < image.height; ++y)
        for (std::size_t x = 0; x < image.width; ++x)
          for (std::size_t c = 0; c < 3; ++c) a(c, y, x) = image.data[(y * image.width + x) * 3 + c];
      arrays.push_back(xt::dump_npy(a));
      zip_source_t* source = zip_source_buffer(archive.get(), arrays.back().data(), arrays.back().size(), 0);
      if (!source || zip_file_add(archive.get(), member_name(i, k).c_str(), source, ZIP_FL_OVERWRITE) < 0) {
        if (source) zip_source_free(source);
        throw std::runtime_error(path + ": cannot add " + member_name(i, k));
      }
    }
  if (zip_close(archive.release()) != 0) throw std::runtime_error(path + ": cannot write");
}

bool has_extension(const std::string& path, const char* ext) { return fs::path(path).extension() == ext; }

}  // namespace

struct PairReader::Store {
  virtual ~Store() = default;
  virtual PairImage image(std::size_t pair, int k) const = 0;
  std::size_t pairs = 0;
};

namespace {

// test_pairs.h5: the datasets image0 and image1 stay open; a pair is one element of each,
// read through a one-element hyperslab.
class H5Store final : public PairReader::Store {
 public:
  explicit H5Store(const std::string& path) : path_(path) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions, not HDF5's stack dump
    if (H5Fis_hdf5(path.c_str()) <= 0) throw std::invalid_argument(path + ": not an HDF5 file");
    file_.id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_.id < 0) throw std::invalid_argument(path + ": cannot open (corrupt HDF5?)");
    const hsize_t first = open(0, "image0"), second = open(1, "image1");
    if (first != second) throw std::invalid_argument(path + ": image0 and image1 differ in length");
    pairs = first;
  }

  PairImage image(std::size_t pair, int k) const override {
    const char* name = k == 0 ? "image0" : "image1";
    const Handle file_space{H5Dget_space(sets_[k].id), H5Sclose};
    const hsize_t start = pair, one = 1;
    const Handle memory_space{H5Screate_simple(1, &one, nullptr), H5Sclose};
    hvl_t v{0, nullptr};
    if (file_space.id < 0 || memory_space.id < 0 ||
        H5Sselect_hyperslab(file_space.id, H5S_SELECT_SET, &start, nullptr, &one, nullptr) < 0 ||
        H5Dread(sets_[k].id, vlen_.id, memory_space.id, file_space.id, H5P_DEFAULT, &v) < 0)
      throw std::invalid_argument(path_ + ": cannot read element " + std::to_string(pair) + " of '" + name +
                                  "' as variable-length uint8");
    const auto* p = static_cast<const std::uint8_t*>(v.p);
    PairImage out{{p, p + v.len}};
    H5Dvlen_reclaim(vlen_.id, memory_space.id, H5P_DEFAULT, &v);
    return out;
  }

 private:
  // Opens dataset k and returns its length after checking its type and rank.
  hsize_t open(int k, const char* name) {
    if (H5Lexists(file_.id, name, H5P_DEFAULT) <= 0) throw std::invalid_argument(path_ + ": no dataset '" + name + "'");
    sets_[k].id = H5Dopen2(file_.id, name, H5P_DEFAULT);
    const Handle type{sets_[k].id < 0 ? -1 : H5Dget_type(sets_[k].id), H5Tclose};
    if (sets_[k].id < 0 || type.id < 0 || H5Tget_class(type.id) != H5T_VLEN)
      throw std::invalid_argument(path_ + ": dataset '" + name + "' is not variable-length");
    const Handle space{H5Dget_space(sets_[k].id), H5Sclose};
    if (H5Sget_simple_extent_ndims(space.id) != 1) throw std::invalid_argument(path_ + ": '" + name + "' is not 1-D");
    hsize_t count = 0;
    H5Sget_simple_extent_dims(space.id, &count, nullptr);
    return count;
  }

  std::string path_;
  Handle file_{-1, H5Fclose};
  std::array<Handle, 2> sets_{Handle{-1, H5Dclose}, Handle{-1, H5Dclose}};
  Handle vlen_{H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose};
};

// test_pairs.npz: the archive stays open; a pair is its two members, read when asked for.
class NpzStore final : public PairReader::Store {
 public:
  explicit NpzStore(const std::string& path) : path_(path), archive_(nullptr, zip_close) {
    int error = 0;
    archive_.reset(zip_open(path.c_str(), ZIP_RDONLY, &error));
    if (!archive_) throw std::invalid_argument(path + ": not a zip (.npz) archive");
    const auto members = static_cast<std::size_t>(zip_get_num_entries(archive_.get(), 0));
    const auto has = [&](std::size_t i, int k) { return zip_name_locate(archive_.get(), member_name(i, k).c_str(), 0) >= 0; };
    while (has(pairs, 0) || has(pairs, 1)) {
      if (!has(pairs, 0) || !has(pairs, 1))
        throw std::invalid_argument(path + ": pair " + std::to_string(pairs) + " lacks one of its images");
      ++pairs;
    }
    if (members != 2 * pairs)
      throw std::invalid_argument(path + ": " + std::to_string(members) + " members, expected pair_00000_img0.npy ... "
                                  "numbered without gaps (" + std::to_string(2 * pairs) + " found)");
  }

  PairImage image(std::size_t pair, int k) const override {
    const std::string name = member_name(pair, k);
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat(archive_.get(), name.c_str(), 0, &st) != 0) throw std::invalid_argument(path_ + ": no member " + name);
    if (!(st.valid & ZIP_STAT_SIZE) || st.size > (std::uint64_t{1} << 30))
      throw std::invalid_argument(path_ + ": member " + name + " has no size or is over 1 GB");
    const std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> f(zip_fopen(archive_.get(), name.c_str(), 0), zip_fclose);
    std::string bytes(st.size, '\0');
    if (!f || zip_fread(f.get(), bytes.data(), st.size) != static_cast<zip_int64_t>(st.size))
      throw std::invalid_argument(path_ + ": cannot read member " + name + " (corrupt archive?)");
    return npy_image(bytes, path_ + ": " + name);
  }

 private:
  std::string path_;
  Archive archive_;
};

}  // namespace

InstanceSize instance_size(const std::string& size) {
  static const InstanceSize sizes[] = {{"single", 1}, {"small", 128}, {"medium", 256}, {"large", 1024}};
  if (size.size() != 1 || size[0] < '0' || size[0] > '3') throw std::invalid_argument("size must be 0, 1, 2 or 3");
  return sizes[size[0] - '0'];
}

std::string find_test_pairs(const std::string& dir) {
  const fs::path h5 = fs::path(dir) / "test_pairs.h5", npz = fs::path(dir) / "test_pairs.npz";
  const bool has_h5 = fs::exists(h5), has_npz = fs::exists(npz);
  if (!has_h5 && !has_npz) throw std::invalid_argument(dir + ": no test_pairs.h5 or test_pairs.npz (no such file)");
  if (has_h5 && has_npz) return (fs::last_write_time(npz) > fs::last_write_time(h5) ? npz : h5).string();
  return (has_h5 ? h5 : npz).string();
}

PairReader::PairReader(const std::string& path) {
  if (!fs::exists(path)) throw std::invalid_argument(path + ": no such file");
  if (has_extension(path, ".h5")) store_ = std::make_unique<H5Store>(path);
  else if (has_extension(path, ".npz")) store_ = std::make_unique<NpzStore>(path);
  else throw std::invalid_argument(path + ": a pair store is .h5 or .npz");
}

PairReader::~PairReader() = default;

std::size_t PairReader::size() const { return store_->pairs; }

std::array<PairImage, 2> PairReader::pair(std::size_t i) const {
  if (i >= size()) throw std::out_of_range("pair " + std::to_string(i) + " of " + std::to_string(size()));
  return {store_->image(i, 0), store_->image(i, 1)};
}

void write_test_pairs(const std::string& path, const TestPairs& pairs) {
  if (has_extension(path, ".npz")) write_npz_pairs(path, pairs);
  else write_h5_pairs(path, pairs);
}
