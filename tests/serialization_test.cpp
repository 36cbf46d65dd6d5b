// Binary format: round trips for every object, and rejection of corrupt or foreign input.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <mutex>
#include <random>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "ckks/serialization.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

namespace {

bool same_poly(const ring::Poly& a, const ring::Poly& b) {
  return a.limbs() == b.limbs() && std::equal(a.words().begin(), a.words().end(), b.words().begin());
}

class SerializationTest : public ::testing::Test {
 protected:
  SerializationTest()
      : context_(test::small_params(10, 3)), encoder_(context_), keygen_(context_),
        decryptor_(context_, keygen_.secret_key()) {}

  Ciphertext sample_ciphertext(std::size_t level = 3) {
    const Encryptor enc(context_, keygen_.secret_key());
    return enc.encrypt(encoder_.encode(values_, level, context_.params().default_scale()));
  }

  const std::vector<double> values_ = test::random_real(64, 3);
  Context context_;
  Encoder encoder_;
  KeyGenerator keygen_;
  Decryptor decryptor_;
};

}  // namespace

TEST_F(SerializationTest, ParametersRoundTripWithFingerprint) {
  for (bool compress : {false, true}) {
    const Bytes b = save_parameters(context_.params(), {compress});
    const Parameters p = load_parameters(b);
    EXPECT_EQ(p.fingerprint(), context_.params().fingerprint());
    EXPECT_EQ(p.q(), context_.params().q());
    EXPECT_TRUE(p.insecure());
  }
  // A secure set round-trips as secure; editing its primes breaks the fingerprint.
  ParameterSpec spec;
  spec.log_n = 12;
  spec.q_bits = {38, 30};
  spec.p_bits = {38};
  Bytes b = save_parameters(Parameters::create(spec));
  EXPECT_FALSE(load_parameters(b).insecure());
  b[40 + 12] ^= 0x02;  // low byte of q_0
  EXPECT_THROW(load_parameters(b), SerializationError);
}

TEST_F(SerializationTest, CiphertextsPlaintextsAndKeysRoundTrip) {
  const Ciphertext ct = sample_ciphertext();
  for (bool compress : {false, true}) {
    const Ciphertext back = load_ciphertext(context_, save(context_, ct, {compress}));
    ASSERT_EQ(back.size(), ct.size());
    for (std::size_t k = 0; k < ct.size(); ++k) EXPECT_TRUE(same_poly(back.polys[k], ct.polys[k]));
    EXPECT_EQ(back.scale, ct.scale);
    EXPECT_EQ(back.log_slots, ct.log_slots);
  }
  const Plaintext pt = encoder_.encode(values_, 2, 1e9);
  const Plaintext pt_back = load_plaintext(context_, save(context_, pt));
  EXPECT_TRUE(same_poly(pt.poly, pt_back.poly));

  const SecretKey sk = load_secret_key(context_, save(context_, keygen_.secret_key()));
  EXPECT_TRUE(same_poly(sk.s.q, keygen_.secret_key().s.q));
  const PublicKey pk = keygen_.create_public_key();
  const PublicKey pk_back = load_public_key(context_, save(context_, pk, {true}));
  EXPECT_TRUE(same_poly(pk.b.q, pk_back.b.q));
  EXPECT_TRUE(same_poly(pk.a.p, pk_back.a.p));

  // Seeded switching keys: a_j regenerated from the seed, so the stored form is about half.
  const RelinKey rk = keygen_.create_relin_key();
  const Bytes rk_bytes = save(context_, rk);
  EXPECT_LT(rk_bytes.size(), rk.byte_size() * 6 / 10);
  const RelinKey rk_back = load_relin_key(context_, rk_bytes);
  for (std::size_t j = 0; j < rk.key.a.size(); ++j) {
    EXPECT_TRUE(same_poly(rk.key.a[j].q, rk_back.key.a[j].q));
    EXPECT_TRUE(same_poly(rk.key.b[j].p, rk_back.key.b[j].p));
  }
  const GaloisKeys gk = keygen_.create_galois_keys({1, -3}, true, 2);
  const GaloisKeys gk_back = load_galois_keys(context_, save(context_, gk));
  ASSERT_EQ(gk_back.keys.size(), 3u);
  Evaluator eval(context_, &rk_back, &gk_back);
  Ciphertext c2 = sample_ciphertext(2);
  const auto rotated = encoder_.decode_real(decryptor_.decrypt(eval.rotate(c2, 1)));
  for (std::size_t i = 0; i < values_.size(); ++i) EXPECT_NEAR(rotated[i], values_[(i + 1) % 64], 1e-5);
}

TEST_F(SerializationTest, SeededCiphertextIsHalfSizeAndDecrypts) {
  const Encryptor enc(context_, keygen_.secret_key());
  const SeededCiphertext s = enc.encrypt_seeded(encoder_.encode(values_, 3, context_.params().default_scale()));
  const Bytes b = save(context_, s);
  const Bytes full = save(context_, expand_seeded(context_, s));
  EXPECT_LT(b.size(), full.size() / 2 + 100);
  const Ciphertext ct = expand_seeded(context_, load_seeded_ciphertext(context_, b));
  const auto got = encoder_.decode_real(decryptor_.decrypt(ct));
  for (std::size_t i = 0; i < values_.size(); ++i) EXPECT_NEAR(got[i], values_[i], 1e-6);
}

TEST_F(SerializationTest, RejectsForeignAndCorruptInput) {
  const Bytes good = save(context_, sample_ciphertext());
  EXPECT_EQ(peek_type(good), ObjectType::kCiphertext);
  auto expect_error = [&](Bytes b, const std::string& fragment) {
    try {
      load_ciphertext(context_, b);
      ADD_FAILURE() << "accepted corrupt input (" << fragment << ")";
    } catch (const SerializationError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  Bytes b = good;
  b[0] = 'X';
  expect_error(b, "magic");
  b = good;
  b[4] = 9;
  expect_error(b, "version");
  b = good;
  b.resize(b.size() - 1);
  expect_error(b, "truncated");
  b = good;
  b.push_back(0);
  expect_error(b, "size mismatch");
  // A coefficient equal to its prime: all-ones bytes are >= every prime below 2^61.
  b = good;
  for (std::size_t i = 0; i < 8; ++i) b[b.size() - 8 + i] = 0xff;
  expect_error(b, "not reduced");
  // Wrong object type and other parameters.
  EXPECT_THROW(load_plaintext(context_, good), SerializationError);
  Context different(test::small_params(10, 4));
  try {
    load_ciphertext(different, good);
    ADD_FAILURE() << "ciphertext of other parameters accepted";
  } catch (const SerializationError& e) {
    EXPECT_NE(std::string(e.what()).find("fingerprint"), std::string::npos);
  }
  EXPECT_THROW(load_galois_keys(different, save(context_, keygen_.create_galois_keys({1}))), SerializationError);
  // Every truncation length is rejected cleanly.
  for (std::size_t len = 0; len < good.size(); len += 97) {
    const Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_THROW(load_ciphertext(context_, cut), SerializationError) << "length " << len;
  }
}

TEST_F(SerializationTest, RandomCorruptionNeverCrashes) {
  std::mt19937_64 rng(5);
  const Bytes plain = save(context_, sample_ciphertext());
  const Bytes packed = save(context_, sample_ciphertext(), {true});
  const Bytes keys = save(context_, keygen_.create_galois_keys({2}), {true});
  for (int trial = 0; trial < 300; ++trial) {
    for (const Bytes* src : {&plain, &packed, &keys}) {
      Bytes b = *src;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) b[rng() % std::min<std::size_t>(b.size(), 4096)] ^= static_cast<std::uint8_t>(1 + rng() % 255);
      try {
        if (src == &keys) load_galois_keys(context_, b);
        else load_ciphertext(context_, b);
      } catch (const SerializationError&) {
      }
    }
  }
  SUCCEED() << "300 x 3 corrupted inputs either loaded or raised SerializationError";
}

// Regression (found by fuzz_loaders): a parameter set whose primes are zero made the
// default-scale computation take log2(0) before the primes were validated.
TEST(SerializationRegression, ParameterSetWithZeroPrimes) {
  const std::vector<std::uint8_t> crash = {
      0x50, 0x46, 0x48, 0x45, 0x1, 0x0, 0x1, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x3a, 0x4b, 0x4a, 0x1f,
      0x9e, 0x68, 0x10, 0x90, 0x36, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x36, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0,
      0x6, 0x0, 0x0, 0x0, 0x2, 0x0, 0x0, 0x0, 0x1, 0x0, 0x0, 0x0, 0x81, 0xee, 0xff, 0xff, 0xff, 0x0, 0x0, 0x8,
      0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x81, 0xeb, 0xff, 0xff, 0xff, 0x0, 0x0, 0x0, 0x2, 0x0, 0x0, 0x0,
      0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0};
  EXPECT_THROW(load_parameters(crash), SerializationError);
}

TEST_F(SerializationTest, FilesAreWrittenAtomically) {
  const std::string path = ::testing::TempDir() + "/pfhe_ct.bin";
  const Bytes b = save(context_, sample_ciphertext());
  write_file(path, b);
  EXPECT_EQ(read_file(path), b);
  EXPECT_THROW(read_file(path + ".missing"), SerializationError);
  // Failures to write are the OS's errors, not corrupt input: FileWriteError with errno.
  try {
    write_file("/nonexistent-dir/x.bin", b);
    ADD_FAILURE() << "written into a missing directory";
  } catch (const FileWriteError& e) {
    EXPECT_EQ(e.code().value(), ENOENT) << e.what();
  }
  // A full disk (the partial file is /dev/full): ENOSPC, which the service answers with
  // HTTP 507 (regression: it was a SerializationError, answered 400 as a bad request), and
  // nothing is left behind.
  const std::string full = ::testing::TempDir() + "/pfhe_full.bin";
  std::filesystem::remove(full + ".partial");
  std::filesystem::create_symlink("/dev/full", full + ".partial");
  try {
    write_file(full, b);
    ADD_FAILURE() << "written to a full disk";
  } catch (const FileWriteError& e) {
    EXPECT_EQ(e.code().value(), ENOSPC) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(full + ".partial")));
  EXPECT_FALSE(std::filesystem::exists(full));
}

// FileWriter hands the kernel whole chunks (so that the page cache keeps the file in 2 MiB
// folios); pieces that end short of, exactly at and across chunk boundaries, empty ones
// and several chunks at once must still give the file the same bytes, with and without
// the trailer.
TEST_F(SerializationTest, FileWriterChunksKeepEveryByte) {
  const std::size_t c = FileWriter::kChunkBytes;
  const std::vector<std::size_t> pieces = {0, 1, c - 2, 1, c, 3, 0, 2 * c + 5, 7, c - 15};
  Bytes all;
  for (std::size_t size : pieces)
    for (std::size_t i = 0; i < size; ++i) all.push_back(static_cast<std::uint8_t>((all.size() * 131) >> 3));
  const std::string path = ::testing::TempDir() + "/pfhe_chunks.bin";
  for (const auto trailer : {FileWriter::Trailer::kChecksum, FileWriter::Trailer::kNone}) {
    FileWriter w(path, trailer);
    std::size_t at = 0;
    for (std::size_t size : pieces) {
      w.write(std::span<const std::uint8_t>(all).subspan(at, size));
      at += size;
    }
    w.commit();
    if (trailer == FileWriter::Trailer::kChecksum) {
      EXPECT_EQ(read_file(path), all);
    } else {
      const std::string raw = read_text_file(path);
      EXPECT_EQ(Bytes(raw.begin(), raw.end()), all);
    }
  }
  std::filesystem::remove(path);
}

// Galois keys written key by key (client key generation without the set in memory) are
// byte for byte the stored form of the whole set, at every key's own level, and load back.
TEST_F(SerializationTest, StreamedGaloisKeysEqualTheWholeSet) {
  const std::map<long, std::size_t> step_levels = {{1, 3}, {2, 1}, {-1, 2}, {5, 3}, {3, 0}};
  const GaloisKeys whole = keygen_.create_galois_keys(step_levels);
  const StreamedGaloisKeys streamed{context_, galois_element_levels(context_, step_levels)};
  ASSERT_EQ(streamed.element_levels.size(), whole.keys.size());
  Bytes out;
  std::atomic<std::size_t> made = 0;  // keys are made in parallel
  streamed.write(
      [&](std::uint64_t g, std::size_t level) {
        ++made;
        EXPECT_EQ(whole.keys.at(g).max_level(), level);
        return whole.keys.at(g);
      },
      [&](std::span<const std::uint8_t> piece) { out.insert(out.end(), piece.begin(), piece.end()); });
  EXPECT_EQ(made.load(), whole.keys.size());
  EXPECT_EQ(out.size(), streamed.stored_size());
  EXPECT_EQ(out, save(context_, whole));
  EXPECT_EQ(load_galois_keys(context_, out).keys.size(), whole.keys.size());
}

// Loading from a backing (a file mapping) hands each key's stored bytes back to it once
// parsed, in order and without gaps, up to the end of the set; compressed sets are not
// read in place and give nothing back.
TEST_F(SerializationTest, GaloisKeyLoadingGivesBackWhatItHasRead) {
  // Keys are decoded in parallel: releases come from several threads, in any order.
  struct Recorder final : Backing {
    void release(std::span<const std::uint8_t> used) const override {
      const std::lock_guard lock(mutex);
      ranges.push_back(used);
    }
    mutable std::mutex mutex;
    mutable std::vector<std::span<const std::uint8_t>> ranges;
  };
  const GaloisKeys keys = keygen_.create_galois_keys({1, 2, 3, 4, 5, 6, 7, 8});
  const Bytes stored = save(context_, keys);
  Recorder recorder;
  const GaloisKeys loaded = load_galois_keys(context_, stored, &recorder);
  ASSERT_EQ(recorder.ranges.size(), keys.keys.size());
  std::sort(recorder.ranges.begin(), recorder.ranges.end(),
            [](const auto& x, const auto& y) { return x.data() < y.data(); });
  for (std::size_t k = 1; k < recorder.ranges.size(); ++k)
    EXPECT_EQ(recorder.ranges[k].data(), recorder.ranges[k - 1].data() + recorder.ranges[k - 1].size());
  EXPECT_GE(recorder.ranges.front().data(), stored.data());
  EXPECT_EQ(recorder.ranges.back().data() + recorder.ranges.back().size(), stored.data() + stored.size());
  EXPECT_EQ(save(context_, loaded), stored);
  Recorder compressed;
  load_galois_keys(context_, save(context_, keys, {true}), &compressed);
  EXPECT_TRUE(compressed.ranges.empty());
}

// A streaming writer hands on the same bytes as one that keeps them, in pieces no larger
// than one piece plus the largest single write, with alignment counted from its start.
TEST_F(SerializationTest, StreamingWriterHandsOnTheSameBytesInPieces) {
  const Ciphertext ct = sample_ciphertext();
  const auto write = [&](ByteWriter& w) {
    w.put<std::uint8_t>(7);
    w.align(8);
    for (int i = 0; i < 3; ++i) {
      w.put_poly(ct.polys[0]);
      w.put<std::uint16_t>(static_cast<std::uint16_t>(i));
      w.put_blob(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>("abc"), 3));
    }
    w.align(8);
  };
  ByteWriter whole;
  write(whole);
  Bytes streamed;
  std::size_t pieces = 0, largest = 0;
  const ByteWriter::Sink sink = [&](std::span<const std::uint8_t> piece) {
    streamed.insert(streamed.end(), piece.begin(), piece.end());
    ++pieces;
    largest = std::max(largest, piece.size());
  };
  ByteWriter w(sink, 1000);
  write(w);
  EXPECT_EQ(w.size(), whole.bytes().size());
  w.flush();
  EXPECT_EQ(streamed, whole.bytes());
  EXPECT_GE(pieces, 3u);
  EXPECT_LE(largest, 1000 + ct.polys[0].byte_size() + 64);
  EXPECT_THROW(w.bytes(), std::logic_error);
}
