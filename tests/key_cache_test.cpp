// The server's key cache (runtime/key_cache.h): a client's evaluation keys expanded once
// and then used in place from a mapping. The mapped keys are the key file's keys word for
// word (and save back to the same file), evaluate identically, and a cache made for
// other parameters or another ring switch is refused. Its corruptions: FileCorruption.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/serialization.h"
#include "runtime/key_cache.h"
#include "runtime/key_files.h"
#include "test_util.h"

using namespace pfhe;
namespace fs = std::filesystem;

namespace {

class KeyCache : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pfhe_key_cache_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

void expect_same_words(const ckks::SwitchingKey& got, const ckks::SwitchingKey& want, const std::string& what) {
  ASSERT_EQ(got.b.size(), want.b.size()) << what;
  EXPECT_EQ(got.a_seed, want.a_seed) << what;
  for (std::size_t j = 0; j < want.b.size(); ++j)
    for (const auto& [g, w] : {std::pair{&got.b[j], &want.b[j]}, std::pair{&got.a[j], &want.a[j]}})
      for (const auto& [gp, wp] : {std::pair{&g->q, &w->q}, std::pair{&g->p, &w->p}}) {
        EXPECT_TRUE(gp->is_borrowed()) << what;
        ASSERT_EQ(gp->limbs(), wp->limbs()) << what;
        EXPECT_TRUE(std::equal(wp->words().begin(), wp->words().end(), gp->words().begin())) << what << ", digit " << j;
      }
}

void expect_same_keys(const runtime::EvaluationKeys& got, const runtime::EvaluationKeys& want) {
  EXPECT_EQ(got.key_set, want.key_set);
  expect_same_words(got.relin.key, want.relin.key, "relinearization key");
  ASSERT_EQ(got.galois.keys.size(), want.galois.keys.size());
  for (const auto& [g, key] : want.galois.keys) {
    ASSERT_TRUE(got.galois.has(g)) << g;
    expect_same_words(got.galois.keys.at(g), key, "Galois key " + std::to_string(g));
  }
  ASSERT_EQ(got.half.has_value(), want.half.has_value());
  if (!want.half) return;
  expect_same_words(got.half->relin.key, want.half->relin.key, "half-ring relinearization key");
  ASSERT_EQ(got.half->galois.keys.size(), want.half->galois.keys.size());
  for (const auto& [g, key] : want.half->galois.keys)
    expect_same_words(got.half->galois.keys.at(g), key, "half-ring Galois key " + std::to_string(g));
  expect_same_words(got.half->switch_key, want.half->switch_key, "ring-switch key");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ckks::SerializationError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(KeyCache, MappedKeysAreTheKeyFilesWordForWordAndEvaluateAlike) {
  const ckks::Context ctx(test::small_params(11, 6));
  const auto half_ring = nn::HalfRing::make(ctx.params(), {3, 1});
  const runtime::SecretKeyFile secret = runtime::new_secret_keys(ctx, half_ring.get());
  runtime::KeyRequest rotations;
  rotations.big = {{1, 6}, {-3, 4}, {16, 2}};
  rotations.half = {{2, 3}, {-1, 1}};
  runtime::write_evaluation_keys(path("eval.keys"), ctx, half_ring.get(), secret, rotations);
  const runtime::EvaluationKeys read = runtime::read_evaluation_keys(path("eval.keys"), ctx, half_ring.get());

  EXPECT_EQ(runtime::write_key_cache(path("eval.keys"), path("eval.cache"), ctx, half_ring.get()), secret.key_set);
  EXPECT_FALSE(fs::exists(path("eval.cache.partial")));
  const runtime::EvaluationKeys mapped = runtime::map_key_cache(path("eval.cache"), ctx, half_ring.get());
  ASSERT_NE(mapped.storage, nullptr);
  expect_same_keys(mapped, read);
  // The seeds are kept: the mapped keys save back to the key file's very bytes.
  runtime::write_evaluation_keys(path("again.keys"), ctx, half_ring.get(), mapped);
  EXPECT_EQ(ckks::read_file(path("again.keys")), ckks::read_file(path("eval.keys")));

  // A rotation and a relinearized product with the mapped keys give the same bytes.
  const ckks::Encoder enc(ctx);
  ckks::Encryptor encryptor(ctx, secret.key);
  const ckks::Ciphertext x = encryptor.encrypt(enc.encode(test::random_real(ctx.n() / 2, 3), 4, ctx.params().default_scale()));
  const ckks::Evaluator with_read(ctx, &read.relin, &read.galois), with_mapped(ctx, &mapped.relin, &mapped.galois);
  EXPECT_EQ(ckks::save(ctx, with_mapped.rotate(x, -3)), ckks::save(ctx, with_read.rotate(x, -3)));
  EXPECT_EQ(ckks::save(ctx, with_mapped.multiply_relin(x, x)), ckks::save(ctx, with_read.multiply_relin(x, x)));
}

TEST_F(KeyCache, RefusesOtherParametersAndAnotherRingSwitch) {
  const ckks::Context ctx(test::small_params(11, 6));
  const auto half_ring = nn::HalfRing::make(ctx.params(), {3, 1});
  const runtime::SecretKeyFile secret = runtime::new_secret_keys(ctx, nullptr);
  runtime::KeyRequest rotations;
  rotations.big = {{1, 6}};
  runtime::write_evaluation_keys(path("eval.keys"), ctx, nullptr, secret, rotations);
  runtime::write_key_cache(path("eval.keys"), path("eval.cache"), ctx, nullptr);

  const std::string no_half = error_of([&] { runtime::map_key_cache(path("eval.cache"), ctx, half_ring.get()); });
  EXPECT_NE(no_half.find("without the half ring's keys"), std::string::npos) << no_half;
  EXPECT_NE(no_half.find(path("eval.cache")), std::string::npos) << no_half;
  const ckks::Context other(test::small_params(11, 5));
  const std::string params = error_of([&] { runtime::map_key_cache(path("eval.cache"), other, nullptr); });
  EXPECT_NE(params.find("other parameters"), std::string::npos) << params;
  // A key file for a switching model is refused when expanded for a model that does not switch.
  const std::string count = error_of([&] {
    runtime::write_key_cache(path("eval.keys"), path("x.cache"), ctx, half_ring.get());
  });
  EXPECT_NE(count.find("expected 5"), std::string::npos) << count;
  EXPECT_FALSE(fs::exists(path("x.cache")));
  EXPECT_FALSE(fs::exists(path("x.cache.partial")));
  // A key file is not a cache, and a cache is not a key file.
  EXPECT_NE(error_of([&] { runtime::map_key_cache(path("eval.keys"), ctx, nullptr); }).find("not a pfhe key cache"),
            std::string::npos);
  EXPECT_NE(error_of([&] { runtime::read_evaluation_keys(path("eval.cache"), ctx, nullptr); }), "(no error)");
}

}  // namespace
