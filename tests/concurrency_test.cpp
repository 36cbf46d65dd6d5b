// One Evaluator shared by several threads gives the same bytes as sequential use.
#include <gtest/gtest.h>

#include <thread>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

TEST(Concurrency, SharedEvaluatorIsDeterministicAcrossThreads) {
  Context ctx(test::small_params(11, 3));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const RelinKey rlk = kg.create_relin_key();
  const GaloisKeys gk = kg.create_galois_keys({1, 3, 7});
  const Evaluator eval(ctx, &rlk, &gk);
  const Encryptor encryptor(ctx, kg.secret_key());
  std::vector<Ciphertext> inputs;
  for (int i = 0; i < 6; ++i)
    inputs.push_back(encryptor.encrypt(enc.encode(test::random_real(64, i), 3, ctx.params().default_scale())));
  const auto work = [&](const Ciphertext& c) {
    Ciphertext sq = eval.square_relin(c);
    eval.rescale_inplace(sq);
    const auto rotated = eval.rotate_hoisted(sq, {1, 3, 7});
    for (const auto& r : rotated) eval.add_inplace(sq, r);
    return sq;
  };
  std::vector<Ciphertext> sequential;
  for (const auto& c : inputs) sequential.push_back(work(c));
  std::vector<Ciphertext> parallel(inputs.size());
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < inputs.size(); i += 3) parallel[i] = work(inputs[i]);
    });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < inputs.size(); ++i)
    for (std::size_t p = 0; p < 2; ++p)
      ASSERT_TRUE(std::equal(sequential[i].polys[p].words().begin(), sequential[i].polys[p].words().end(),
                             parallel[i].polys[p].words().begin()))
          << "input " << i;
}
