// Engine benchmarks at the two reference parameter sets of the engine issue.
//   P16: N = 2^16, q = 60 + 24 x 40 bits, P = 8 x 50 bits, dnum 3   (log2 QP ~ 1420)
//   P15: N = 2^15, q = 60 + 18 x 40 bits, P = 2 x 50 bits, dnum 10  (log2 QP ~ 880)
// Each op runs at the top level and at "mid" (12 primes left), with 1 and 2 OpenMP threads.
//   ./build/bench/pfhe_bench --benchmark_filter=P16   (see docs/BENCHMARKS.md)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <map>
#include <memory>
#include <random>

#include "ckks/checksum.h"
#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/key_switch.h"
#include "ckks/keygen.h"
#include "ckks/linear_transform.h"
#include "ring/kernels.h"
#include "ring/poly.h"

using namespace pfhe::ckks;

namespace {

constexpr std::size_t kMidLimbs = 12;
constexpr int kLtDiagonals = 64;

struct Setup {
  explicit Setup(bool p16) : ctx(Parameters::create(spec(p16))), encoder(ctx), keygen(ctx) {
    pk = keygen.create_public_key();
    rlk = keygen.create_relin_key();
    std::vector<long> steps;
    for (long k = 1; k <= 16; ++k) steps.push_back(k);
    steps.push_back(32);
    steps.push_back(48);
    gk = keygen.create_galois_keys(steps);
    eval = std::make_unique<Evaluator>(ctx, &rlk, &gk);
    pk_encryptor = std::make_unique<Encryptor>(ctx, pk);
    decryptor = std::make_unique<Decryptor>(ctx, keygen.secret_key());
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<double> d(-1, 1);
    values.resize(ctx.n() / 2);
    for (auto& v : values) v = d(rng);
  }

  static ParameterSpec spec(bool p16) {
    ParameterSpec s;
    s.log_n = p16 ? 16 : 15;
    s.q_bits.push_back(60);
    s.q_bits.insert(s.q_bits.end(), p16 ? 24 : 18, 40);
    s.p_bits.assign(p16 ? 8 : 2, 50);
    s.dnum = p16 ? 3 : 10;
    return s;
  }

  std::size_t level(bool mid) const { return mid ? kMidLimbs - 1 : ctx.max_level(); }
  Plaintext plain(std::size_t level) const { return encoder.encode(values, level, ctx.params().default_scale()); }
  Ciphertext cipher(std::size_t level) const { return pk_encryptor->encrypt(plain(level)); }

  const LinearTransform& transform(std::size_t level, DiagonalStorage storage = DiagonalStorage::kEncoded) {
    auto& slot = transforms[{level, storage}];
    if (!slot) {
      Diagonals diags;
      for (long k = 0; k < kLtDiagonals; ++k) diags[k] = std::vector<std::complex<double>>(values.begin(), values.end());
      slot = std::make_unique<LinearTransform>(encoder, diags, ctx.n() / 2, level, 16, 0, storage);
    }
    return *slot;
  }

  Context ctx;
  Encoder encoder;
  KeyGenerator keygen;
  PublicKey pk;
  RelinKey rlk;
  GaloisKeys gk;
  std::unique_ptr<Evaluator> eval;
  std::unique_ptr<Encryptor> pk_encryptor;
  std::unique_ptr<Decryptor> decryptor;
  std::vector<double> values;
  std::map<std::pair<std::size_t, DiagonalStorage>, std::unique_ptr<LinearTransform>> transforms;
};

Setup& setup(bool p16) {
  static std::map<bool, std::unique_ptr<Setup>> cache;
  auto& s = cache[p16];
  if (!s) s = std::make_unique<Setup>(p16);
  return *s;
}

// range(0): 16 for P16, 15 for P15; range(1): 1 = mid level; range(2): OpenMP threads.
// Every benchmark runs its operation once untimed first, so that buffer-pool and page-fault
// warm-up is not charged to ops that only get one or two timed iterations.
struct Args {
  explicit Args(const benchmark::State& st)
      : s(setup(st.range(0) == 16)), level(s.level(st.range(1) == 1)) {
    omp_set_num_threads(static_cast<int>(st.range(2)));
  }
  Setup& s;
  std::size_t level;
};

// One forward transform of one limb: ntt_limb on a 40-bit prime (IFMA lanes), ntt_limb60
// on the 60-bit q_0 (64-bit AVX-512 lanes: the path of bootstrapping's EvalMod primes).
void ntt_limb(benchmark::State& st, std::size_t prime) {
  Args a(st);
  std::vector<std::uint64_t> limb(a.s.ctx.n(), 12345);
  const auto& ntt = a.s.ctx.ring_q().ntt(prime);
  for (auto _ : st) {
    ntt.forward(limb.data());
    benchmark::DoNotOptimize(limb.data());
  }
}
void BM_ntt_limb(benchmark::State& st) { ntt_limb(st, 1); }
void BM_ntt_limb60(benchmark::State& st) { ntt_limb(st, 0); }

// One inverse transform of one limb on the 40-bit prime (decompositions, ModDown, rescales).
void BM_intt_limb(benchmark::State& st) {
  Args a(st);
  std::vector<std::uint64_t> limb(a.s.ctx.n(), 12345);
  const auto& ntt = a.s.ctx.ring_q().ntt(1);
  for (auto _ : st) {
    ntt.inverse(limb.data());
    benchmark::DoNotOptimize(limb.data());
  }
}

// Every limb of a ciphertext polynomial at the level, each prime with its own twiddle
// tables (ntt_limb reuses one prime's, which stay in cache): with two threads this is where
// the transforms compete for the shared cache and memory.
void BM_ntt_all_limbs(benchmark::State& st) {
  Args a(st);
  Ciphertext x = a.s.cipher(a.level);
  pfhe::ring::Poly& p = x.polys[0];
  for (auto _ : st) {
    p.set_ntt_form(false);  // the values do not matter, only the transforms
    a.s.ctx.ring_q().to_ntt(p);
    benchmark::DoNotOptimize(p.limb(0));
  }
}

// The last step of a hoisted rotation's ModDown over every limb of a ciphertext polynomial at
// the level: (a - b) w + c read through an automorphism's permutation (blocks of 8 words in
// an order the hardware prefetcher does not follow).
void BM_permuted_mod_down_all_limbs(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level), y = a.s.cipher(a.level);
  Ciphertext out = x;
  const auto& ring = a.s.ctx.ring_q();
  const auto& perm = ring.automorphism_permutation(5);
  for (auto _ : st) {
    for (std::size_t l = 0; l <= a.level; ++l)
      pfhe::ring::kernels::subtract_multiply_add_permute(x.polys[0].limb(l), x.polys[1].limb(l), 12345,
                                                         y.polys[0].limb(l), perm.data(), out.polys[0].limb(l),
                                                         a.s.ctx.n(), ring.modulus(l), pfhe::ring::default_simd_path());
    benchmark::DoNotOptimize(out.polys[0].limb(0));
  }
}

// One limb of a just-in-time diagonal: signed rounded coefficients -> residues -> NTT, as
// a transform's product does for every limb of every diagonal it has not pre-encoded.
void BM_jit_limb(benchmark::State& st) {
  Args a(st);
  const std::vector<std::complex<double>> slots(a.s.values.begin(), a.s.values.end());
  const auto coefficients = a.s.encoder.round_coefficients(slots, a.s.ctx.params().default_scale());
  const int bits = a.s.encoder.coefficient_bits(coefficients, a.level);
  std::vector<std::uint64_t> limb(a.s.ctx.n());
  for (auto _ : st) {
    a.s.encoder.to_limb(coefficients, bits, 1, limb.data());
    benchmark::DoNotOptimize(limb.data());
  }
}

void BM_encode(benchmark::State& st) {
  Args a(st);
  benchmark::DoNotOptimize(a.s.plain(a.level));
  for (auto _ : st) benchmark::DoNotOptimize(a.s.plain(a.level));
}

void BM_encrypt_public(benchmark::State& st) {
  Args a(st);
  const Plaintext pt = a.s.plain(a.level);
  benchmark::DoNotOptimize(a.s.pk_encryptor->encrypt(pt));
  for (auto _ : st) benchmark::DoNotOptimize(a.s.pk_encryptor->encrypt(pt));
}

void BM_decrypt_decode(benchmark::State& st) {
  Args a(st);
  const Ciphertext ct = a.s.cipher(a.level);
  benchmark::DoNotOptimize(a.s.encoder.decode(a.s.decryptor->decrypt(ct)));
  for (auto _ : st) benchmark::DoNotOptimize(a.s.encoder.decode(a.s.decryptor->decrypt(ct)));
}

void BM_add(benchmark::State& st) {
  Args a(st);
  Ciphertext x = a.s.cipher(a.level);
  const Ciphertext y = a.s.cipher(a.level);
  for (auto _ : st) a.s.eval->add_inplace(x, y);
}

void BM_mul_plain(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  const Plaintext p = a.s.plain(a.level);
  for (auto _ : st) {
    Ciphertext c = x;
    a.s.eval->multiply_plain_inplace(c, p);
    benchmark::DoNotOptimize(c);
  }
}

// A transform's row: 8 ciphertexts times 8 plaintexts summed into one accumulator by one
// batched multiply_plain_accumulate (limb by limb; bound by memory bandwidth, BENCHMARKS.md).
void BM_mul_plain_row8(benchmark::State& st) {
  Args a(st);
  std::vector<Ciphertext> xs;
  std::vector<Plaintext> ps;
  for (int i = 0; i < 8; ++i) {
    xs.push_back(a.s.cipher(a.level));
    ps.push_back(a.s.plain(a.level));
  }
  for (auto _ : st) {
    Ciphertext acc;
    std::vector<Evaluator::PlainProduct> row;
    for (int i = 0; i < 8; ++i) row.push_back({&acc, &xs[i], &ps[i], 0, {}});
    a.s.eval->multiply_plain_accumulate(row);
    benchmark::DoNotOptimize(acc);
  }
}

void BM_mul_plain_rescale(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  const Plaintext p = a.s.plain(a.level);
  for (auto _ : st) {
    Ciphertext c = x;
    a.s.eval->multiply_plain_inplace(c, p);
    a.s.eval->rescale_inplace(c);
    benchmark::DoNotOptimize(c);
  }
}

void BM_rescale(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  for (auto _ : st) {
    st.PauseTiming();
    Ciphertext c = x;
    st.ResumeTiming();
    a.s.eval->rescale_inplace(c);
  }
}

void BM_mul_relin(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level), y = a.s.cipher(a.level);
  benchmark::DoNotOptimize(a.s.eval->multiply_relin(x, y));
  for (auto _ : st) benchmark::DoNotOptimize(a.s.eval->multiply_relin(x, y));
}

void BM_rotate(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  benchmark::DoNotOptimize(a.s.eval->rotate(x, 1));
  for (auto _ : st) benchmark::DoNotOptimize(a.s.eval->rotate(x, 1));
}

// ModUp of one polynomial (the digits over Q_l x P that every key switch starts from): the
// exact base conversions and their NTTs.
void BM_decompose(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  benchmark::DoNotOptimize(decompose(a.s.ctx, x.polys[1]));
  for (auto _ : st) benchmark::DoNotOptimize(decompose(a.s.ctx, x.polys[1]));
}

// The key-switching inner product alone (a decomposition times one Galois key, both
// halves, over Q·P): what each extra hoisted rotation pays before its ModDown.
void BM_key_switch_product(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  const Decomposition d = decompose(a.s.ctx, x.polys[1]);
  const SwitchingKey& key = a.s.gk.keys.begin()->second;
  QPPoly acc0, acc1;
  key_switch_product(a.s.ctx, d, key, acc0, acc1);
  for (auto _ : st) {
    key_switch_product(a.s.ctx, d, key, acc0, acc1);
    benchmark::DoNotOptimize(acc0.q.limb(0));
  }
}

void BM_rotate_hoisted16(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  std::vector<long> steps;
  for (long k = 1; k <= 16; ++k) steps.push_back(k);
  benchmark::DoNotOptimize(a.s.eval->rotate_hoisted(x, steps));
  for (auto _ : st) benchmark::DoNotOptimize(a.s.eval->rotate_hoisted(x, steps));
}

// The giant steps of a transform: 16 ciphertexts rotated by 1..16 and summed, one ModDown.
void BM_rotation_sum16(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  const auto run = [&] {
    RotationSum sum(*a.s.eval);
    for (long k = 1; k <= 16; ++k) sum.add(x, k);
    return sum.result();
  };
  benchmark::DoNotOptimize(run());
  for (auto _ : st) benchmark::DoNotOptimize(run());
}

void BM_linear_transform64(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  const LinearTransform& lt = a.s.transform(a.level);
  benchmark::DoNotOptimize(lt.apply(*a.s.eval, x));
  for (auto _ : st) benchmark::DoNotOptimize(lt.apply(*a.s.eval, x));
}

// The same transform with its diagonals encoded inside apply (the compiled CNN's layers
// over the pre-encoding budget): reduction + NTT per limb of every diagonal.
void BM_linear_transform64_jit(benchmark::State& st) {
  Args a(st);
  const Ciphertext x = a.s.cipher(a.level);
  const LinearTransform& lt = a.s.transform(a.level, DiagonalStorage::kJustInTime);
  benchmark::DoNotOptimize(lt.apply(*a.s.eval, x));
  for (auto _ : st) benchmark::DoNotOptimize(lt.apply(*a.s.eval, x));
}

// Two inputs through the just-in-time transform at once (LinearTransform::apply of a
// batch): each diagonal encoded once for both. Compare with twice linear_transform64_jit.
void BM_linear_transform64_jit_batch2(benchmark::State& st) {
  Args a(st);
  const std::vector<Ciphertext> x = {a.s.cipher(a.level), a.s.cipher(a.level)};
  const LinearTransform& lt = a.s.transform(a.level, DiagonalStorage::kJustInTime);
  benchmark::DoNotOptimize(lt.apply(*a.s.eval, x, false));
  for (auto _ : st) benchmark::DoNotOptimize(lt.apply(*a.s.eval, x, false));
}

// The checksum every file and message carries (ckks/checksum.h): bytes per second over a
// 256 MB buffer, the cost it adds to loading a multi-GB key file.
void BM_checksum(benchmark::State& st) {
  std::vector<std::uint8_t> data(std::size_t{256} << 20);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 2654435761u >> 13);
  for (auto _ : st) benchmark::DoNotOptimize(pfhe::ckks::checksum(data));
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * data.size()));
}

void register_all() {
  benchmark::RegisterBenchmark("checksum_256MB", BM_checksum)->Unit(benchmark::kMillisecond)->UseRealTime();
  const std::vector<std::pair<const char*, void (*)(benchmark::State&)>> ops = {
      {"ntt_limb", BM_ntt_limb},         {"ntt_limb60", BM_ntt_limb60},     {"intt_limb", BM_intt_limb},
      {"ntt_all_limbs", BM_ntt_all_limbs},
      {"permuted_mod_down_all_limbs", BM_permuted_mod_down_all_limbs},
      {"jit_limb", BM_jit_limb},         {"encode", BM_encode},
      {"encrypt_pk", BM_encrypt_public}, {"decrypt_decode", BM_decrypt_decode},
      {"add", BM_add},                   {"mul_plain", BM_mul_plain},
      {"mul_plain_row8", BM_mul_plain_row8},
      {"mul_plain_rescale", BM_mul_plain_rescale}, {"rescale", BM_rescale},
      {"mul_relin", BM_mul_relin},       {"decompose", BM_decompose},       {"rotate", BM_rotate},
      {"key_switch_product", BM_key_switch_product},
      {"rotate_hoisted16", BM_rotate_hoisted16}, {"rotation_sum16", BM_rotation_sum16},
      {"linear_transform64", BM_linear_transform64}, {"linear_transform64_jit", BM_linear_transform64_jit},
      {"linear_transform64_jit_batch2", BM_linear_transform64_jit_batch2}};
  for (int log_n : {16, 15})
    for (int mid : {0, 1})
      for (int threads : {1, 2})
        for (const auto& [name, fn] : ops) {
          const std::string full = std::string("P") + std::to_string(log_n) + (mid ? "/mid/" : "/top/") + name +
                                   "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(full.c_str(), fn)
              ->Args({log_n, mid, threads})
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
}

}  // namespace

int main(int argc, char** argv) {
  pfhe::ring::keep_freed_memory_for_reuse();
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
