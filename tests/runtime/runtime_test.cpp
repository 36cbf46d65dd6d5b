// Executors: sequential, threads and fork pool give byte-identical results on a reduced
// PatchCNN; scheduling of 4/9/16/64 tasks over W workers; failures (a killed worker, a
// throwing task, a multi-threaded parent at fork time) end in clear errors, no zombies.
// These tests run with OMP_NUM_THREADS=1 (tests/CMakeLists.txt) so that the fork pool's
// parent is single-threaded.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "ckks/serialization.h"
#include "reduced_server.h"
#include "runtime/client_server.h"
#include "runtime/executor.h"
#include "runtime/key_cache.h"
#include "nn/fit.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "nn/synthetic.h"

using namespace pfhe;

namespace {

std::vector<ckks::Bytes> serialized(const ckks::Context& ctx, const std::vector<ckks::Ciphertext>& cts) {
  std::vector<ckks::Bytes> out;
  for (const auto& c : cts) out.push_back(ckks::save(ctx, c));
  return out;
}

bool no_children_left() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// A small test ring with a secret key, for the executor tests that need cheap ciphertexts.
struct SmallRing {
  ckks::Context ctx{test::small_params(10, 2)};
  ckks::Encoder enc{ctx};
  ckks::KeyGenerator kg{ctx};
  ckks::Encryptor encryptor{ctx, kg.secret_key()};
  ckks::Evaluator eval{ctx};

  ckks::Ciphertext encrypt(double value) const {
    return encryptor.encrypt(enc.encode(std::vector<double>(ctx.n() / 2, value), 2, ctx.params().default_scale()));
  }
};

// A cheap task for scheduling tests: multiply the input by (task + 1).
runtime::TaskFunction scaling_tasks(const ckks::Evaluator& eval) {
  return [&eval](std::size_t t, const ckks::Ciphertext& x) {
    ckks::Ciphertext y = x;
    eval.multiply_const_inplace(y, static_cast<double>(t + 1));
    return y;
  };
}

}  // namespace

// The whole graph with its region's branches on `executor`.
ckks::Ciphertext run_on(const test::ReducedServer& s, runtime::Executor& executor, const runtime::TaskFunction& task,
                        const std::vector<ckks::Ciphertext>& inputs) {
  return s.compiled.run(s.eval, inputs, nullptr, nullptr,
                        [&](std::size_t, const std::vector<ckks::Ciphertext>& entries) {
                          return executor.run({s.ctx, s.ctx}, task, entries);
                        });
}

TEST(Runtime, ExecutorsGiveByteIdenticalBranchOutputs) {
  const test::ReducedServer s;
  const auto patches = s.encrypt_patches(s.images[3]);
  const auto inputs = s.branch_entries(patches);
  const runtime::TaskFunction task = runtime::graph_tasks(s.compiled, s.eval);
  const auto reference = serialized(s.ctx, runtime::make_sequential_executor()->run({s.ctx, s.ctx}, task, inputs));
  ASSERT_EQ(reference.size(), 4u);
  std::vector<std::unique_ptr<runtime::Executor>> executors;
  executors.push_back(runtime::make_thread_executor(2));
  executors.push_back(runtime::make_thread_executor(3));
  executors.push_back(runtime::make_fork_executor(2));
  executors.push_back(runtime::make_fork_executor(3));
  executors.push_back(runtime::make_fork_executor(8));  // more workers than patches
  for (const auto& ex : executors) {
    runtime::RunStats stats;
    const auto got = serialized(s.ctx, ex->run({s.ctx, s.ctx}, task, inputs, &stats));
    EXPECT_EQ(got, reference) << ex->name() << " W=" << ex->workers();
    EXPECT_EQ(stats.task_seconds.size(), 4u);
    if (ex->name() == "fork") {
      EXPECT_GT(stats.transfer_bytes, 0u);
    }
  }
  EXPECT_TRUE(no_children_left());
  // The summed, normalised embedding is the same bytes too.
  EXPECT_EQ(ckks::save(s.ctx, run_on(s, *runtime::make_fork_executor(2), task, patches)),
            ckks::save(s.ctx, s.compiled.run(s.eval, patches)));
}

// A memory budget too small for any pre-encoded diagonal only moves work to just-in-time
// encoding: the outputs are the same bytes.
TEST(Runtime, ZeroDiagonalBudgetGivesTheSameBytes) {
  const test::ReducedServer s;
  const nn::CompiledGraph lean = s.compile(0, nn::Compilation::kFull);
  EXPECT_LT(lean.plaintext_bytes(), s.compiled.plaintext_bytes());
  const auto inputs = s.encrypt_patches(s.images[4]);
  // Loaded in place (the coefficients viewed in the artefact's bytes, as from a mapped
  // file): the same artefact and the same outputs.
  const auto held = std::make_shared<const ckks::HeldBytes>(lean.save());
  const nn::CompiledGraph in_place = nn::CompiledGraph::load(s.enc, held->bytes, held);
  EXPECT_EQ(in_place.save(), held->bytes);
  const ckks::Bytes want = ckks::save(s.ctx, s.compiled.run(s.eval, inputs));
  EXPECT_EQ(ckks::save(s.ctx, lean.run(s.eval, inputs)), want);
  EXPECT_EQ(ckks::save(s.ctx, in_place.run(s.eval, inputs)), want);
}

// Compiled per task (a server given the model file; the "recompile in every worker"
// baseline): fork and thread workers compile their branch from the model (just in time)
// and still produce the fully compiled model's bytes.
TEST(Runtime, RecompilingWorkersGiveTheSameBytes) {
  const test::ReducedServer s;
  const auto inputs = s.branch_entries(s.encrypt_patches(s.images[6]));
  const auto reference =
      serialized(s.ctx, runtime::make_sequential_executor()->run({s.ctx, s.ctx}, runtime::graph_tasks(s.compiled, s.eval), inputs));
  const nn::CompiledGraph per_task = s.compile(0, nn::Compilation::kPerTask);
  const runtime::TaskFunction recompiling = runtime::compiling_graph_tasks(s.graph, per_task, s.eval);
  EXPECT_EQ(serialized(s.ctx, runtime::make_fork_executor(2)->run({s.ctx, s.ctx}, recompiling, inputs)), reference);
  EXPECT_EQ(serialized(s.ctx, runtime::make_thread_executor(2)->run({s.ctx, s.ctx}, recompiling, inputs)), reference);
  EXPECT_TRUE(no_children_left());
  EXPECT_THROW(runtime::compiling_graph_tasks(s.graph, s.compiled, s.eval), std::invalid_argument);
  EXPECT_THROW(recompiling(4, inputs[0]), std::invalid_argument);  // four branch tasks: no task 4
}

TEST(Runtime, SchedulesManyTasksOverAnyWorkerCount) {
  const SmallRing r;
  const ckks::Context& ctx = r.ctx;
  const auto task = scaling_tasks(r.eval);
  for (std::size_t tasks : {4u, 9u, 16u, 64u}) {
    std::vector<ckks::Ciphertext> inputs;
    for (std::size_t t = 0; t < tasks; ++t) inputs.push_back(r.encrypt(0.001 * static_cast<double>(t)));
    const auto want = serialized(ctx, runtime::make_sequential_executor()->run({ctx, ctx}, task, inputs));
    for (std::size_t w : {1u, 2u, 3u, 5u}) {
      EXPECT_EQ(serialized(ctx, runtime::make_thread_executor(w)->run({ctx, ctx}, task, inputs)), want) << tasks << " " << w;
      EXPECT_EQ(serialized(ctx, runtime::make_fork_executor(w)->run({ctx, ctx}, task, inputs)), want) << tasks << " " << w;
    }
  }
  EXPECT_TRUE(no_children_left());
}

TEST(Runtime, KilledWorkerIsReportedQuicklyAndReaped) {
  const SmallRing r;
  const ckks::Context& ctx = r.ctx;
  const std::vector<ckks::Ciphertext> inputs(6, r.encrypt(0.5));
  const auto inner = scaling_tasks(r.eval);
  const runtime::TaskFunction dies_on_task_2 = [&](std::size_t t, const ckks::Ciphertext& x) {
    if (t == 2) ::raise(SIGKILL);  // only ever runs inside a forked worker here
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // keep the others busy
    return inner(t, x);
  };
  const auto start = std::chrono::steady_clock::now();
  try {
    runtime::make_fork_executor(2)->run({ctx, ctx}, dies_on_task_2, inputs);
    FAIL() << "a killed worker went unnoticed";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("signal 9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("task 2"), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_TRUE(no_children_left());
}

TEST(Runtime, KilledWorkersTaskIsRetriedOnANewWorker) {
  const SmallRing r;
  const ckks::Context& ctx = r.ctx;
  const std::vector<ckks::Ciphertext> inputs(6, r.encrypt(0.5));
  const auto inner = scaling_tasks(r.eval);
  // Workers are separate processes: a file tells the retry that task 2 already died once.
  const std::string marker = ::testing::TempDir() + "/pfhe_retry_" + std::to_string(::getpid());
  std::remove(marker.c_str());
  const runtime::TaskFunction dies_once_on_task_2 = [&](std::size_t t, const ckks::Ciphertext& x) {
    if (t == 2 && !std::filesystem::exists(marker)) {
      std::ofstream(marker) << "died";
      ::raise(SIGKILL);
    }
    return inner(t, x);
  };
  const auto want = serialized(ctx, runtime::make_sequential_executor()->run({ctx, ctx}, inner, inputs));
  EXPECT_EQ(serialized(ctx, runtime::make_fork_executor(2, 1)->run({ctx, ctx}, dies_once_on_task_2, inputs)), want);
  EXPECT_TRUE(std::filesystem::exists(marker));  // it did die once
  std::remove(marker.c_str());
  EXPECT_TRUE(no_children_left());
  // A task that kills every worker it runs on: the error says it was retried.
  const runtime::TaskFunction always_dies_on_task_2 = [&](std::size_t t, const ckks::Ciphertext& x) {
    if (t == 2) ::raise(SIGKILL);
    return inner(t, x);
  };
  try {
    runtime::make_fork_executor(2, 2)->run({ctx, ctx}, always_dies_on_task_2, inputs);
    FAIL() << "a task that always kills its worker succeeded";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("signal 9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("task 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("after 2 retries"), std::string::npos) << msg;
  }
  EXPECT_TRUE(no_children_left());
}

TEST(Runtime, TaskErrorsNameTheTask) {
  const SmallRing r;
  const ckks::Context& ctx = r.ctx;
  const std::vector<ckks::Ciphertext> inputs(3, r.encrypt(0.5));
  const runtime::TaskFunction throws = [](std::size_t t, const ckks::Ciphertext& x) {
    if (t == 1) throw std::invalid_argument("ciphertext at the wrong level");
    return x;
  };
  std::vector<std::unique_ptr<runtime::Executor>> executors;
  executors.push_back(runtime::make_thread_executor(2));
  executors.push_back(runtime::make_fork_executor(2));
  for (const auto& ex : executors) {
    try {
      ex->run({ctx, ctx}, throws, inputs);
      FAIL() << ex->name() << ": error lost";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("task 1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("wrong level"), std::string::npos) << msg;
    }
  }
  EXPECT_TRUE(no_children_left());
  EXPECT_THROW(runtime::make_fork_executor(0), std::invalid_argument);
  EXPECT_THROW(runtime::make_thread_executor(0), std::invalid_argument);
}

// Runs that overlap, from two threads (a service's jobs), share the thread executor's
// workers: every task of both ran on the same two threads, each run got its own outputs, a
// failing task failed its own run only, and no thread is left once both ended (a fork pool
// can run next).
TEST(Runtime, OverlappingThreadRunsShareTheWorkers) {
  const SmallRing r;
  const ckks::Context& ctx = r.ctx;
  const auto executor = runtime::make_thread_executor(2);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  std::atomic<int> started{0};
  const runtime::TaskFunction task = [&](std::size_t t, const ckks::Ciphertext& x) {
    {
      const std::lock_guard lock(mutex);
      threads.insert(std::this_thread::get_id());
    }
    ++started;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (t == 7) throw std::invalid_argument("the failing task");
    ckks::Ciphertext y = x;
    y.scale *= 2;
    return y;
  };
  const std::vector<ckks::Ciphertext> first = {r.encrypt(0.1), r.encrypt(0.2), r.encrypt(0.3)};
  std::vector<ckks::Ciphertext> second = {r.encrypt(0.4), r.encrypt(0.5)};
  second[0].scale *= 3;
  std::vector<ckks::Ciphertext> first_out;
  std::string second_error;
  std::thread a([&] { first_out = executor->run({ctx, ctx}, task, first); });
  while (started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread b([&] {
    try {
      executor->run({ctx, ctx}, task, second, nullptr, 6);  // tasks 6 and 7
    } catch (const std::runtime_error& e) {
      second_error = e.what();
    }
  });
  a.join();
  b.join();
  EXPECT_EQ(threads.size(), 2u) << "the overlapping runs did not share the two workers";
  ASSERT_EQ(first_out.size(), first.size());
  for (std::size_t t = 0; t < first.size(); ++t) EXPECT_EQ(first_out[t].scale, 2 * first[t].scale) << t;
  EXPECT_NE(second_error.find("task 7 failed"), std::string::npos) << second_error;
  EXPECT_NE(second_error.find("the failing task"), std::string::npos) << second_error;
  const auto forked = runtime::make_fork_executor(2)->run({ctx, ctx}, scaling_tasks(r.eval), first);
  EXPECT_EQ(forked.size(), first.size());
  EXPECT_TRUE(no_children_left());
}

TEST(Runtime, ForkRefusesAMultiThreadedParent) {
  const SmallRing r;
  const ckks::Context& ctx = r.ctx;
  const std::vector<ckks::Ciphertext> inputs(2, r.encrypt(0.5));
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  EXPECT_THROW(runtime::make_fork_executor(2)->run({ctx, ctx}, [](std::size_t, const ckks::Ciphertext& x) { return x; }, inputs),
               std::runtime_error);
  stop = true;
  busy.join();
  EXPECT_TRUE(no_children_left());
}

TEST(ClientServer, ClientOwnsItsSecretKeyAndSpecRoundTrips) {
  const test::ReducedServer s;
  const runtime::ClientSpec spec = runtime::ClientSpec::of(s.compiled, s.ctx.params());
  const runtime::ClientSpec back = runtime::ClientSpec::from_json(spec.to_json());
  EXPECT_EQ(back.to_json(), spec.to_json());
  EXPECT_EQ(back.rotation_levels, s.compiled.rotation_levels());
  EXPECT_THROW(runtime::ClientSpec::from_json("{}"), std::invalid_argument);
  EXPECT_THROW(runtime::ClientSpec::from_json("not json"), std::invalid_argument);
  std::string bad = spec.to_json();
  bad.replace(bad.find("\"grid\": 2"), 9, "\"grid\": 3");  // the image does not divide into 3x3 patches
  EXPECT_THROW(runtime::ClientSpec::from_json(bad), std::invalid_argument);
  // Regression (fuzzing): numbers of the wrong JSON type were converted with undefined
  // behaviour (a float fingerprint of 9e19).
  for (const char* field : {"\"grid\": 2", "\"input_level\": 28"}) {
    std::string wrong = spec.to_json();
    const std::string f = field;
    wrong.replace(wrong.find(f), f.size(), f.substr(0, f.find(':') + 1) + " 9.03809e+19");
    EXPECT_THROW(runtime::ClientSpec::from_json(wrong), std::invalid_argument) << field;
  }
  {
    std::string wrong = spec.to_json();
    const std::size_t at = wrong.find("\"parameter_fingerprint\": ") + 25;
    wrong.replace(at, wrong.find(',', at) - at, "90380912169428077370.0");
    EXPECT_THROW(runtime::ClientSpec::from_json(wrong), std::invalid_argument);
  }
  {
    // A change that every field check accepts is caught by the checksum.
    std::string edited = spec.to_json();
    const std::size_t at = edited.find("\"input_level\": ") + 15;
    edited.replace(at, edited.find(',', at) - at, "27");
    try {
      runtime::ClientSpec::from_json(edited);
      ADD_FAILURE() << "an edited spec was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
    }
  }

  // Regression: the client used to keep a reference to a temporary secret key.
  const runtime::Client client(s.ctx, spec, runtime::SecretKeyFile{42, s.keys.keygen.secret_key(), std::nullopt});
  const runtime::Bundle patches = client.encrypt_image(s.images[0]);
  EXPECT_EQ(patches.key_set, 42u);
  const runtime::CiphertextFile file = runtime::load_ciphertexts(runtime::view_of(patches), s.ctx);
  EXPECT_EQ(file.key_set, 42u);
  const runtime::CiphertextFile embedding{42, {s.compiled.run(s.eval, file.ciphertexts)}};
  const nn::Tensor got = client.decrypt_output(embedding);
  const nn::Tensor want = s.model.normalized(s.images[0]);
  for (std::size_t i = 0; i < want.data.size(); ++i) EXPECT_NEAR(got.data[i], want.data[i], 1e-4);
  EXPECT_THROW(client.decrypt_output({43, embedding.ciphertexts}), std::invalid_argument);
}

// A plan (lowering without encoding) tells a client exactly what the compiled model needs;
// so does a per-task compilation (what a server given the model file holds).
TEST(ClientServer, PlanGivesTheCompiledModelsClientSpec) {
  const test::ReducedServer s;
  const nn::CompiledGraph plan = s.compile(0, nn::Compilation::kPlanOnly);
  const std::string want = runtime::ClientSpec::of(s.compiled, s.ctx.params()).to_json();
  EXPECT_EQ(runtime::ClientSpec::of(plan, s.ctx.params()).to_json(), want);
  EXPECT_EQ(runtime::ClientSpec::of(s.compile(0, nn::Compilation::kPerTask), s.ctx.params()).to_json(), want);
  EXPECT_EQ(plan.plaintext_bytes(), 0u);
  EXPECT_THROW(plan.save(), std::logic_error);
  EXPECT_THROW(plan.run(s.eval, s.encrypt_patches(s.images[0])), std::logic_error);
}

TEST(ClientServer, BundlesRejectDamage) {
  const runtime::Bundle b{7, {{1, 2, 3}, {4, 5}}};
  const ckks::Bytes bytes = runtime::save_bundle(b);
  const runtime::BundleView back = runtime::load_bundle(bytes);
  EXPECT_EQ(back.key_set, 7u);
  ASSERT_EQ(back.objects.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i)
    EXPECT_EQ(ckks::Bytes(back.objects[i].begin(), back.objects[i].end()), b.objects[i]);
  for (std::size_t cut : {0ul, 3ul, 10ul, bytes.size() - 1})
    EXPECT_THROW(runtime::load_bundle({bytes.data(), cut}), ckks::SerializationError) << cut;
  ckks::Bytes bad = bytes;
  bad[0] = 'X';
  EXPECT_THROW(runtime::load_bundle(bad), ckks::SerializationError);
  bad = bytes;
  bad.push_back(0);
  EXPECT_THROW(runtime::load_bundle(bad), ckks::SerializationError);
  EXPECT_NE(runtime::new_key_set_tag(), runtime::new_key_set_tag());
  EXPECT_THROW(runtime::check_same_key_set(1, "a", 2, "b"), std::invalid_argument);
  EXPECT_NO_THROW(runtime::check_same_key_set(0, "a", 2, "b"));
}

// A model that switches to the half ring, through the client/server pieces: the spec names
// the switch (and refuses a wrong fingerprint), the key files carry both rings (and refuse
// the other kind), thread and fork workers return half-ring ciphertexts byte-identical to
// sequential runs (ClientServer.PatchCnnGraphServedWithItsRingSwitch), and the client
// decrypts the embedding with the half-ring secret.
TEST(ClientServer, RingSwitchingModelKeysSpecAndExecutors) {
  const ckks::Context ctx(test::small_params(12, 28));
  const ckks::Encoder enc(ctx);
  const auto images = nn::synthetic_images(128, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const auto half_ring = nn::HalfRing::make(ctx.params(), {15, 2});
  const nn::CompiledGraph compiled = nn::CompiledGraph::compile(
      model.to_graph(), enc, 28, ctx.params().default_scale(), SIZE_MAX, nn::Compilation::kFull, nullptr, nullptr, 2,
      half_ring);
  const runtime::ClientSpec spec = runtime::ClientSpec::of(compiled, ctx.params());
  const runtime::ClientSpec back = runtime::ClientSpec::from_json(spec.to_json());
  ASSERT_TRUE(back.ring_switch.has_value());
  EXPECT_EQ(*back.ring_switch, half_ring->choice);
  EXPECT_EQ(back.half_ring_rotation_levels, compiled.half_ring_rotation_levels());
  EXPECT_EQ(back.half_ring(ctx.params())->context.params().fingerprint(), half_ring->context.params().fingerprint());
  runtime::ClientSpec wrong = back;
  wrong.half_ring_fingerprint ^= 1;
  EXPECT_THROW(wrong.half_ring(ctx.params()), std::invalid_argument);

  // Key files of both rings round-trip; the other kind of model's files are refused.
  const std::string dir = std::filesystem::temp_directory_path() / ("pfhe_ring_switch_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const runtime::SecretKeyFile secret = runtime::generate_keys(ctx, spec, dir + "/eval.keys");
  runtime::write_secret_key(dir + "/secret.key", ctx, half_ring.get(), secret);
  EXPECT_THROW(runtime::write_secret_key(dir + "/x.key", ctx, nullptr, secret), std::invalid_argument);
  const runtime::SecretKeyFile secret_back = runtime::read_secret_key(dir + "/secret.key", ctx, half_ring.get());
  EXPECT_EQ(ckks::save(half_ring->context, *secret_back.half_key), ckks::save(half_ring->context, *secret.half_key));
  EXPECT_THROW(runtime::read_secret_key(dir + "/secret.key", ctx, nullptr), ckks::SerializationError);
  const runtime::EvaluationKeys keys = runtime::read_evaluation_keys(dir + "/eval.keys", ctx, half_ring.get());
  ASSERT_TRUE(keys.half.has_value());
  EXPECT_EQ(keys.key_set, secret.key_set);
  EXPECT_EQ(keys.half->galois.keys.size(), compiled.half_ring_rotation_levels().size());
  try {
    runtime::read_evaluation_keys(dir + "/eval.keys", ctx, nullptr);
    ADD_FAILURE() << "keys of a switching model were accepted for one that does not switch";
  } catch (const ckks::SerializationError& e) {
    EXPECT_NE(std::string(e.what()).find("switches to the half ring"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);

  const runtime::Evaluators evaluators(ctx, half_ring.get(), keys);
  EXPECT_EQ(&evaluators.rings().output, &half_ring->context);
  const runtime::Client client(ctx, spec, half_ring, secret_back);
  const auto patches = runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(images[1])), ctx);
  ASSERT_EQ(patches.ciphertexts.size(), 2u);
  // (executors on a switching model: ClientServer.PatchCnnGraphServedWithItsRingSwitch)
  const ckks::Ciphertext embedding =
      compiled.run(evaluators.big(), patches.ciphertexts, nullptr, nullptr, {}, evaluators.half_ring());
  const nn::Tensor got = client.decrypt_output({secret.key_set, {embedding}});
  EXPECT_LT(nn::precision_of(got, model.normalized(images[1])).relative, 1e-5);
  // Keys without the half ring's part cannot drive this model.
  runtime::EvaluationKeys big_only{keys.key_set, keys.relin, keys.galois, std::nullopt, std::nullopt, nullptr};
  EXPECT_THROW(runtime::Evaluators(ctx, half_ring.get(), big_only), std::invalid_argument);
}

// One loaded model serves several clients: each client's key set drives it for that
// client's inputs only, and results decrypt under that client's secret key.
TEST(ClientServer, OneServedModelServesSeveralKeySets) {
  const auto images = nn::synthetic_images(128, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  constexpr std::size_t kLevels = test::ReducedServer::kLevels;
  const runtime::ServedModel served(test::small_params(11, kLevels), [&](const ckks::Encoder& enc) {
    return nn::CompiledGraph::compile(model.to_graph(), enc, kLevels, enc.context().params().default_scale(), SIZE_MAX,
                                      nn::Compilation::kFull, nullptr, nullptr, 2);
  });
  const runtime::ClientSpec spec = served.client_spec();
  auto [alice_secret, alice_eval] = runtime::generate_keys(served.context(), spec);
  auto [bob_secret, bob_eval] = runtime::generate_keys(served.context(), spec);
  ASSERT_NE(alice_secret.key_set, bob_secret.key_set);
  const runtime::KeySet alice_keys(served, std::move(alice_eval)), bob_keys(served, std::move(bob_eval));
  const runtime::Client alice(served.context(), spec, alice_secret), bob(served.context(), spec, bob_secret);
  const auto executor = runtime::make_thread_executor(2);
  const auto patches = [&](const runtime::Client& client, const nn::Tensor& image) {
    return runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), served.context());
  };
  const runtime::CiphertextFile alice_in = patches(alice, images[1]), bob_in = patches(bob, images[2]);
  const nn::Tensor alice_out = alice.decrypt_output(alice_keys.infer(alice_in, *executor));
  const nn::Tensor bob_out = bob.decrypt_output(bob_keys.infer(bob_in, *executor));
  EXPECT_LT(nn::precision_of(alice_out, model.normalized(images[1])).relative, 1e-5);
  EXPECT_LT(nn::precision_of(bob_out, model.normalized(images[2])).relative, 1e-5);
  // A request names its key set: another client's inputs are refused, not computed into garbage.
  try {
    bob_keys.infer(alice_in, *executor);
    ADD_FAILURE() << "alice's patches ran under bob's keys";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("different key sets"), std::string::npos) << e.what();
  }
  // Keys that lack a rotation the model needs are refused when the key set is made.
  auto [carol_secret, carol_eval] = runtime::generate_keys(served.context(), spec);
  carol_eval.galois.keys.erase(carol_eval.galois.keys.begin());
  EXPECT_THROW(runtime::KeySet(served, std::move(carol_eval), "carol's keys"), std::invalid_argument);
}

// An inference process keeps the last key set it was given. A path that fails to load
// leaves none loaded, so the previous path asked for again is loaded anew (regression: the
// process kept that path with no key set behind it, and its next job used nothing).
TEST(ClientServer, LastKeySetLoadsAgainAfterAFailedLoad) {
  const nn::Graph graph = nn::make_synthetic_graph("two-tower-tiny", 3, nn::synthetic_images(32, {3, 8, 8}, 4));
  const runtime::ServedModel served(test::small_params(12, 10),
                                    [&](const ckks::Encoder& enc) { return nn::compile_graph(graph, enc); });
  const auto dir = std::filesystem::temp_directory_path() / ("pfhe-last-keys-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string key_file = (dir / "eval.keys").string(), damaged = (dir / "damaged.keys").string();
  const runtime::SecretKeyFile secret = runtime::generate_keys(served.context(), served.client_spec(), key_file);
  std::filesystem::copy_file(key_file, damaged);
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(std::filesystem::file_size(damaged) / 2));
    const char byte = static_cast<char>(f.get() ^ 0x10);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(damaged) / 2));
    f.put(byte);
  }
  runtime::LastKeySet keys(served);
  const runtime::KeySet& first = keys.get(key_file);
  EXPECT_EQ(first.tag(), secret.key_set);
  EXPECT_EQ(&keys.get(key_file), &first);  // kept, not loaded again
  EXPECT_ANY_THROW(keys.get(damaged));
  const runtime::KeySet& again = keys.get(key_file);
  EXPECT_EQ(again.tag(), secret.key_set);
  const runtime::Client client(served.context(), served.client_spec(), secret);
  const nn::Tensor image = nn::synthetic_images(1, {3, 8, 8}, 77)[0];
  const runtime::CiphertextFile input =
      runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), served.context());
  const nn::Tensor got = client.decrypt_output(again.infer(input, *runtime::make_sequential_executor()));
  EXPECT_LT(nn::precision_of(got, graph.forward(image)).relative, 1e-5);
  std::filesystem::remove_all(dir);
}

// A model graph with two parallel branches (two towers) served like a PatchCNN: its
// branches are the executor's tasks, every executor gives the same bytes, and the result
// decrypts to the float64 forward.
TEST(ClientServer, GraphBranchesRunOnEveryExecutorByteIdentical) {
  const nn::Graph graph = nn::make_synthetic_graph("two-tower-tiny", 3, nn::synthetic_images(32, {3, 8, 8}, 4));
  const runtime::ServedModel served(test::small_params(12, 10),
                                    [&](const ckks::Encoder& enc) { return nn::compile_graph(graph, enc); });
  EXPECT_EQ(served.inputs(), 1u);
  EXPECT_EQ(served.tasks(), 2u);
  const runtime::ClientSpec spec = served.client_spec();
  EXPECT_TRUE(spec.classifier);
  EXPECT_EQ(spec.image_shape(), (nn::Shape{3, 8, 8}));
  EXPECT_EQ(runtime::ClientSpec::from_json(spec.to_json()).to_json(), spec.to_json());
  auto [secret, eval] = runtime::generate_keys(served.context(), spec);
  const runtime::KeySet keys(served, std::move(eval));
  const runtime::Client client(served.context(), spec, secret);
  const nn::Tensor image = nn::synthetic_images(1, {3, 8, 8}, 77)[0];
  const runtime::CiphertextFile input =
      runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), served.context());
  ASSERT_EQ(input.ciphertexts.size(), 1u);
  std::vector<ckks::Bytes> outputs;
  std::vector<std::unique_ptr<runtime::Executor>> executors;
  executors.push_back(runtime::make_sequential_executor());
  executors.push_back(runtime::make_thread_executor(2));
  executors.push_back(runtime::make_fork_executor(2));
  for (const auto& executor : executors) {
    runtime::RunStats stats;
    const runtime::CiphertextFile out = keys.infer(input, *executor, &stats);
    EXPECT_EQ(stats.task_seconds.size(), 2u) << executor->name();
    outputs.push_back(ckks::save(served.context(), out.ciphertexts.at(0)));
    if (outputs.size() == 1) {
      const nn::Tensor got = client.decrypt_output(out);
      EXPECT_LT(nn::precision_of(got, graph.forward(image)).relative, 1e-5);
    }
  }
  EXPECT_EQ(outputs[1], outputs[0]);
  EXPECT_EQ(outputs[2], outputs[0]);
  EXPECT_TRUE(no_children_left());
  const runtime::CiphertextFile two{input.key_set, {input.ciphertexts[0], input.ciphertexts[0]}};
  EXPECT_THROW(keys.infer(two, *runtime::make_sequential_executor()), std::invalid_argument);
  EXPECT_THROW(keys.match(input, input, 0), std::invalid_argument);  // logits, not a face embedding
}

// The PatchCNN as a graph with its ring switch, served like any graph: the client spec
// names the grid, the lanes and the switch; the two lane groups are branch tasks that
// switch rings inside, byte-identical on every executor; the normalised embedding decrypts
// in the half ring, and two of them match there.
TEST(ClientServer, PatchCnnGraphServedWithItsRingSwitch) {
  const auto images = nn::synthetic_images(128, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const runtime::ServedModel served(test::small_params(12, 28), [&](const ckks::Encoder& enc) {
    return nn::CompiledGraph::compile(model.to_graph(), enc, 28, enc.context().params().default_scale(), SIZE_MAX,
                                      nn::Compilation::kFull, nullptr, nullptr, 2,
                                      nn::HalfRing::make(enc.context().params(), {15, 2}));
  });
  ASSERT_NE(served.half_ring(), nullptr);
  EXPECT_EQ(served.inputs(), 2u);
  EXPECT_EQ(served.tasks(), 2u);
  const runtime::ClientSpec spec = runtime::ClientSpec::from_json(served.client_spec().to_json());
  EXPECT_FALSE(spec.classifier);
  EXPECT_EQ(spec.grid, 2u);
  EXPECT_EQ(spec.input_layout.lanes, 2u);
  ASSERT_TRUE(spec.ring_switch.has_value());
  EXPECT_EQ(spec.half_ring_rotation_levels, served.graph().half_ring_rotation_levels());
  auto [secret, eval] = runtime::generate_keys(served.context(), spec);
  const runtime::KeySet keys(served, std::move(eval));
  const runtime::Client client(served.context(), spec, secret);
  const auto encrypt = [&](const nn::Tensor& image) {
    return runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), served.context());
  };
  const runtime::CiphertextFile input = encrypt(images[1]);
  ASSERT_EQ(input.ciphertexts.size(), 2u);
  std::vector<ckks::Bytes> outputs;
  std::vector<std::unique_ptr<runtime::Executor>> executors;
  executors.push_back(runtime::make_sequential_executor());
  executors.push_back(runtime::make_thread_executor(2));
  executors.push_back(runtime::make_fork_executor(2));
  runtime::CiphertextFile probe;
  for (const auto& executor : executors) {
    runtime::CiphertextFile out = keys.infer(input, *executor);
    outputs.push_back(ckks::save(keys.output_context(), out.ciphertexts.at(0)));
    if (outputs.size() == 1) probe = std::move(out);
  }
  EXPECT_EQ(outputs[1], outputs[0]);
  EXPECT_EQ(outputs[2], outputs[0]);
  EXPECT_TRUE(no_children_left());
  EXPECT_LT(nn::precision_of(client.decrypt_output(probe), model.normalized(images[1])).relative, 1e-5);
  const runtime::CiphertextFile enrolled_input = encrypt(images[0]);
  const runtime::CiphertextFile enrolled = keys.infer(enrolled_input, *runtime::make_sequential_executor());
  // Both images as one batch (KeySet::infer_batch): each gets its own inference's bytes.
  const std::vector<runtime::CiphertextFile> batch = keys.infer_batch({input, enrolled_input});
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(ckks::save(keys.output_context(), batch[0].ciphertexts.at(0)), outputs[0]);
  EXPECT_EQ(ckks::save(keys.output_context(), batch[1].ciphertexts.at(0)),
            ckks::save(keys.output_context(), enrolled.ciphertexts.at(0)));
  EXPECT_EQ(batch[1].key_set, keys.tag());
  runtime::CiphertextFile foreign = input;
  foreign.key_set ^= 1;
  EXPECT_THROW(keys.infer_batch({input, foreign}), std::invalid_argument);  // another client's input
  const double want = nn::match_score(model.normalized(images[1]), model.normalized(images[0]), 0.5);
  const double score = client.decrypt_score(keys.match(probe, enrolled, 0.5));
  EXPECT_NEAR(score, want, 1e-4 * std::max(1.0, std::fabs(want)));
}

namespace {
nn::Conv2d small_conv(std::size_t channels, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(-0.3, 0.3);
  nn::Conv2d c{channels, channels, 3, 1, 1, std::vector<double>(channels * channels * 9), {}};
  for (double& w : c.weight) w = d(rng);
  c.bias.assign(channels, 0.05);
  return c;
}
}  // namespace

// A graph deeper than its chain, served from its stored form: the artefact carries its
// bootstrapper's configuration, the client spec the conjugation and encapsulation keys, the
// key file and the key cache hold them, and bootstraps inside the two parallel branches run
// on every executor byte-identically (the insecure N = 2^12 ring; `pfhe compile` chooses
// the same configuration at N = 2^16, nn::graph_bootstrap_config).
TEST(ClientServer, BootstrappedGraphServedFromItsFilesOnEveryExecutor) {
  ckks::BootstrapConfig config = nn::graph_bootstrap_config();
  config.log_slots = 11;
  const ckks::Parameters params =
      test::bootstrap_params(12, config, 5, 56, ckks::SecretDistribution::kTernaryUniform, 0);
  // Two towers of six convolutions each (with 5 levels between bootstraps, each bootstraps).
  nn::Graph graph({2, 4, 4});
  std::size_t towers[2];
  for (std::size_t t = 0; t < 2; ++t) {
    std::size_t x = 0;
    for (int i = 0; i < 6; ++i)
      x = graph.add("tower" + std::to_string(t) + ".conv" + std::to_string(i), small_conv(2, 40 * t + i), x);
    towers[t] = x;
  }
  graph.add("sum", nn::Add{}, {towers[0], towers[1]});
  const nn::FitReport ranges = nn::fit(graph, nn::synthetic_images(8, {2, 4, 4}, 9), 1e6);
  ckks::Bytes artefact;
  {
    const ckks::Context ctx(params);
    const ckks::Encoder enc(ctx);
    const nn::CompiledGraph compiled = nn::compile_graph(graph, enc, 0, false, config, &ranges);
    EXPECT_EQ(compiled.bootstraps(), 2u);
    EXPECT_THROW(nn::compile_graph(graph, enc, 0, false, config, nullptr), std::invalid_argument);  // no ranges
    artefact = compiled.save();
  }
  const runtime::ServedModel served(params, [&](const ckks::Encoder& enc) { return nn::CompiledGraph::load(enc, artefact); });
  ASSERT_NE(served.graph().bootstrapper(), nullptr);
  ASSERT_NE(served.encapsulation_context(), nullptr);
  EXPECT_EQ(served.tasks(), 2u);
  const runtime::ClientSpec spec = runtime::ClientSpec::from_json(served.client_spec().to_json());
  ASSERT_TRUE(spec.conjugation_level.has_value());
  EXPECT_EQ(*spec.conjugation_level, served.graph().bootstrapper()->conjugation_level());
  EXPECT_EQ(spec.ephemeral_weight, config.ephemeral_weight);

  const auto dir = std::filesystem::temp_directory_path() / ("pfhe-boot-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string key_file = (dir / "eval.keys").string(), cache = (dir / "eval.cache").string();
  const runtime::SecretKeyFile secret = runtime::generate_keys(served.context(), spec, key_file);
  runtime::write_key_cache(key_file, cache, served.context(), nullptr, served.encapsulation_context());
  const runtime::Client client(served.context(), spec, secret);
  const nn::Tensor image = nn::synthetic_images(1, {2, 4, 4}, 78)[0];
  const runtime::CiphertextFile input =
      runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), served.context());
  std::vector<ckks::Bytes> outputs;
  for (const std::string& keys_path : {key_file, cache}) {
    const runtime::KeySet keys(served, keys_path);
    std::vector<std::unique_ptr<runtime::Executor>> executors;
    executors.push_back(runtime::make_sequential_executor());
    executors.push_back(runtime::make_thread_executor(2));
    executors.push_back(runtime::make_fork_executor(2));
    for (const auto& executor : executors) {
      const runtime::CiphertextFile out = keys.infer(input, *executor);
      outputs.push_back(ckks::save(served.context(), out.ciphertexts.at(0)));
      if (outputs.size() == 1) {
        const double relative = nn::precision_of(client.decrypt_output(out), graph.forward(image)).relative;
        std::printf("bootstrapped two-tower graph: relative error %.2e\n", relative);
        EXPECT_LT(relative, 1e-3);
      }
    }
  }
  for (const ckks::Bytes& out : outputs) EXPECT_EQ(out, outputs[0]);
  EXPECT_TRUE(no_children_left());

  // Keys without the bootstrapping part are refused when the key set is made, naming it.
  runtime::EvaluationKeys without = runtime::read_evaluation_keys(key_file, served.context(), nullptr,
                                                                  served.encapsulation_context());
  without.encapsulation.reset();
  try {
    runtime::KeySet(served, std::move(without));
    ADD_FAILURE() << "keys without encapsulation accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("encapsulation"), std::string::npos) << e.what();
  }
  // A key file read as if the model did not bootstrap: the object count names the reason.
  EXPECT_THROW(runtime::read_evaluation_keys(key_file, served.context(), nullptr), ckks::SerializationError);
  // The graph compiled without its bootstraps under the same parameters (what a server
  // given the model file does): the keys are refused saying how to serve it.
  const runtime::ServedModel from_model_file(
      params, [&](const ckks::Encoder& enc) { return nn::compile_graph(graph, enc, 0, false); });
  try {
    const runtime::KeySet keys(from_model_file, key_file);
    ADD_FAILURE() << "bootstrapping keys accepted by the graph compiled without bootstraps";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("served from its compiled model.pfhc"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
