// Checksums of pfhe's files and messages (ckks/checksum.h): the trailer itself, and 100
// random corruptions of every file kind the CLI and the service read (parameters, secret
// and evaluation keys, the service's key cache, ciphertexts, model files of both kinds, the
// compiled model), each of which must be
// refused with an error naming the file: no corruption may load silently.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "ckks/checksum.h"
#include "ckks/encryptor.h"
#include "ckks/serialization.h"
#include "nn/compiled_graph.h"
#include "nn/graph_file.h"
#include "nn/model_file.h"
#include "nn/patch_cnn.h"
#include "nn/synthetic.h"
#include "nn_test_util.h"
#include "runtime/bundle.h"
#include "runtime/key_cache.h"
#include "runtime/key_files.h"
#include "runtime/mapped_file.h"
#include "runtime/transport.h"
#include "test_util.h"

namespace pfhe {
namespace {

namespace fs = std::filesystem;
using ckks::Bytes;

Bytes raw_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Corruption `k` of the file at `path`, whose intact content is `intact`, four kinds in
// turn: a flipped bit, a truncation, a run of overwritten bytes (at least one changed),
// bytes appended. Made in place, so that 100 corruptions of a large file cost no copies;
// undo_corruption restores the file.
struct Corruption {
  std::size_t at = 0;
  Bytes written;  // for flips and overwrites
};

void write_at(const fs::path& path, std::size_t at, std::span<const std::uint8_t> bytes) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

Corruption corrupt(const fs::path& path, const Bytes& intact, std::uint64_t k) {
  std::mt19937_64 rng(k);
  const auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  Corruption c;
  switch (k % 4) {
    case 0:
      c.at = pick(intact.size());
      c.written = {static_cast<std::uint8_t>(intact[c.at] ^ (1u << pick(8)))};
      break;
    case 1:
      c.at = pick(intact.size());
      fs::resize_file(path, c.at);
      return c;
    case 2: {
      c.at = pick(intact.size());
      c.written.resize(std::min<std::size_t>(1 + pick(32), intact.size() - c.at));
      for (auto& b : c.written) b = static_cast<std::uint8_t>(rng());
      c.written[0] = static_cast<std::uint8_t>(intact[c.at] + 1 + pick(255));  // certainly changed
      break;
    }
    default: {
      c.at = intact.size();
      Bytes extra(1 + pick(32));
      for (auto& b : extra) b = static_cast<std::uint8_t>(rng());
      std::ofstream(path, std::ios::binary | std::ios::app).write(reinterpret_cast<const char*>(extra.data()),
                                                                  static_cast<std::streamsize>(extra.size()));
      return c;
    }
  }
  write_at(path, c.at, c.written);
  return c;
}

void undo_corruption(const fs::path& path, const Bytes& intact, const Corruption& c) {
  if (!c.written.empty()) {
    write_at(path, c.at, std::span(intact).subspan(c.at, c.written.size()));
  } else if (c.at < intact.size()) {  // truncated
    std::ofstream(path, std::ios::binary | std::ios::app)
        .write(reinterpret_cast<const char*>(intact.data() + c.at), static_cast<std::streamsize>(intact.size() - c.at));
  } else {  // appended
    fs::resize_file(path, intact.size());
  }
}

TEST(Checksum, StreamedDigestEqualsOneShotAndTrailerRoundTrips) {
  Bytes data(100'000);
  std::mt19937_64 rng(1);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  ckks::Checksum sum;
  sum.update(std::span(data).first(12'345));
  sum.update(std::span(data).subspan(12'345));
  EXPECT_EQ(sum.digest(), ckks::checksum(data));
  Bytes framed = data;
  ckks::append_trailer(framed);
  ASSERT_EQ(framed.size(), data.size() + ckks::kTrailerSize);
  const auto content = ckks::verify_trailer(framed, "test data");
  EXPECT_TRUE(std::equal(content.begin(), content.end(), data.begin(), data.end()));
}

TEST(Checksum, MissingTrailerAndMismatchAreNamedErrors) {
  const Bytes data(64, 7);
  try {
    ckks::verify_trailer(data, "alice.cts");
    FAIL() << "no trailer accepted";
  } catch (const ckks::SerializationError& e) {
    EXPECT_NE(std::string(e.what()).find("alice.cts: not a pfhe file, or truncated"), std::string::npos) << e.what();
  }
  Bytes framed = data;
  ckks::append_trailer(framed);
  framed[3] ^= 1;
  try {
    ckks::verify_trailer(framed, "alice.cts");
    FAIL() << "corruption accepted";
  } catch (const ckks::SerializationError& e) {
    EXPECT_NE(std::string(e.what()).find("alice.cts: checksum mismatch"), std::string::npos) << e.what();
  }
}

TEST(Checksum, TextFilesHaveNoTrailerAndBinaryFilesDo) {
  const fs::path dir = fs::temp_directory_path() / ("pfhe_integrity_text_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ckks::write_text_file((dir / "a.json").string(), "{}\n");
  EXPECT_EQ(ckks::read_text_file((dir / "a.json").string()), "{}\n");
  EXPECT_EQ(fs::file_size(dir / "a.json"), 3u);
  const Bytes payload{1, 2, 3};
  ckks::write_file((dir / "b.bin").string(), payload);
  EXPECT_EQ(fs::file_size(dir / "b.bin"), 3 + ckks::kTrailerSize);
  EXPECT_EQ(ckks::read_file((dir / "b.bin").string()), payload);
  const runtime::MappedFile mapped((dir / "b.bin").string());
  EXPECT_TRUE(std::equal(mapped.bytes().begin(), mapped.bytes().end(), payload.begin(), payload.end()));
  fs::remove_all(dir);
}

// A frame corrupted on its way between two processes is refused by the receiver.
TEST(Checksum, TransportFramesCarryAChecksum) {
  runtime::Frame frame;
  frame.task = 3;
  frame.payload = Bytes(1000, 42);
  for (const bool damage : {false, true}) {
    int wire[2], relay[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, wire), 0);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, relay), 0);
    runtime::send_frame(wire[0], frame);
    ::close(wire[0]);
    Bytes sent(4096);
    const ssize_t n = ::read(wire[1], sent.data(), sent.size());
    ASSERT_GT(n, 500);
    sent.resize(static_cast<std::size_t>(n));
    if (damage) sent[600] ^= 0x10;  // inside the payload
    ASSERT_EQ(::write(relay[0], sent.data(), sent.size()), n);
    ::close(relay[0]);
    runtime::Frame got;
    if (damage) {
      EXPECT_THROW(runtime::receive_frame(relay[1], got, 1 << 20), std::runtime_error);
    } else {
      ASSERT_TRUE(runtime::receive_frame(relay[1], got, 1 << 20));
      EXPECT_EQ(got.task, 3u);
      EXPECT_EQ(got.payload, frame.payload);
    }
    ::close(wire[1]);
    ::close(relay[1]);
  }
}

// One file of every kind the CLI reads, made on a small insecure ring, with its loader.
class FileCorruption : public ::testing::Test {
 protected:
  static constexpr std::size_t kModelLevels = 28;

  struct Kind {
    std::string name;
    std::function<void(const std::string&)> load;
  };

  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pfhe_integrity_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Loads every corruption of the file at `path` and expects a refusal naming the file.
  void expect_every_corruption_refused(const std::string& name, const fs::path& path,
                                       const std::function<void(const std::string&)>& load) {
    load(path.string());  // the intact file loads
    const Bytes intact = raw_bytes(path);
    const fs::path damaged = dir_ / ("damaged_" + name);
    fs::copy_file(path, damaged);
    int silent = 0;
    for (std::uint64_t k = 0; k < 100; ++k) {
      const Corruption c = corrupt(damaged, intact, k);
      try {
        load(damaged.string());
        ++silent;
        ADD_FAILURE() << name << ": corruption " << k << " loaded silently";
      } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find(damaged.string()), std::string::npos)
            << name << ", corruption " << k << ": the error does not name the file: " << e.what();
      }
      undo_corruption(damaged, intact, c);
    }
    EXPECT_EQ(raw_bytes(damaged), intact) << name << ": the corruptions were not undone";
    EXPECT_EQ(silent, 0) << name;
  }

  fs::path dir_;
};

TEST_F(FileCorruption, EveryKindOfFileRefusesAHundredCorruptions) {
  // Keys and ciphertexts on a ring with few levels, the compiled model on one deep enough
  // for it (its diagonals as just-in-time coefficients, the smaller storage): small files,
  // each copied 100 times.
  const ckks::Context ctx(test::small_params(10, 3));
  const ckks::Encoder enc(ctx);
  const ckks::Context model_ctx(test::small_params(11, kModelLevels));
  const ckks::Encoder model_enc(model_ctx);
  const std::vector<nn::Tensor> images = nn::synthetic_images(16, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const auto compiled = nn::CompiledGraph::compile(model.to_graph(), model_enc, kModelLevels,
                                                   model_ctx.params().default_scale(), 0, nn::Compilation::kFull,
                                                   nullptr, nullptr, 2);

  const fs::path params = dir_ / "params.pfhe", secret = dir_ / "secret.key", eval = dir_ / "eval.keys",
                 cts = dir_ / "alice.cts", model_file = dir_ / "model.pfhm", graph_file = dir_ / "graph.pfhm",
                 compiled_file = dir_ / "model.pfhc";
  ckks::write_file(params.string(), ckks::save_parameters(ctx.params()));
  const runtime::SecretKeyFile sk = runtime::new_secret_keys(ctx, nullptr);
  runtime::write_secret_key(secret.string(), ctx, nullptr, sk);
  runtime::KeyRequest rotations;
  rotations.big = {{1, 3}, {-4, 3}};
  runtime::write_evaluation_keys(eval.string(), ctx, nullptr, sk, rotations);
  ckks::Encryptor encryptor(ctx, sk.key);
  runtime::write_ciphertexts(cts.string(), ctx,
                             {sk.key_set, {encryptor.encrypt(enc.encode(test::random_real(ctx.n() / 2, 1), 3,
                                                                        ctx.params().default_scale()))}});
  nn::save_model_file(model, model_file.string());
  nn::Graph graph({2, 4, 4});
  std::size_t x = graph.add("square", nn::PolynomialActivation{{0.0, 1.0, 1.0}}, 0);
  x = graph.add("gap", nn::AdaptiveAvgPool2d{1}, x);
  x = graph.add("flatten", nn::Flatten{}, x);
  graph.add("head", nn::Linear{2, 3, {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, {0.0, 0.1, 0.2}}, x);
  nn::save_graph_file(graph, graph_file.string());
  compiled.save_file(compiled_file.string());

  expect_every_corruption_refused("parameters", params, [](const std::string& p) {
    runtime::load_mapped(p, [](std::span<const std::uint8_t> b) { return ckks::load_parameters(b); });
  });
  expect_every_corruption_refused("secret key", secret,
                                  [&](const std::string& p) { runtime::read_secret_key(p, ctx, nullptr); });
  expect_every_corruption_refused("evaluation keys", eval,
                                  [&](const std::string& p) { runtime::read_evaluation_keys(p, ctx, nullptr); });
  const fs::path cache = dir_ / "eval.cache";
  runtime::write_key_cache(eval.string(), cache.string(), ctx, nullptr);
  expect_every_corruption_refused("key cache", cache,
                                  [&](const std::string& p) { runtime::map_key_cache(p, ctx, nullptr); });
  expect_every_corruption_refused("ciphertexts", cts, [&](const std::string& p) { runtime::read_ciphertexts(p, ctx); });
  expect_every_corruption_refused("model file", model_file, [](const std::string& p) { nn::load_model_file(p); });
  expect_every_corruption_refused("graph model file", graph_file, [](const std::string& p) { nn::load_graph_file(p); });
  expect_every_corruption_refused("compiled model", compiled_file, [&](const std::string& p) {
    runtime::load_mapped_in_place(p, [&](std::span<const std::uint8_t> b, const std::shared_ptr<const ckks::Backing>& m) {
      return nn::CompiledGraph::load(model_enc, b, m);
    });
  });
}

}  // namespace
}  // namespace pfhe
