// Real face photographs through an encrypted PatchCNN (issue 3's acceptance check): the
// model (a .pfhm file, e.g. `pfhe make-model --kind cryptofacenet4 --calibrate-on
// lfw/calibration`) is compiled at 128-bit secure parameters chosen from its depth; each
// held-out face is encrypted by the client, its backbones run on W threads, the heads are
// aggregated and normalised encrypted, and the client decrypts. Then every pair of faces
// is matched encrypted (squared distance minus a threshold, one face's embedding as the
// enrolled template) and the decision is compared with the float64 model's.
//   pfhe_real_faces_bench MODEL.pfhm FACE_DIR [FACES=6] [W=2] [BUDGET_GB=0.5]
// The threshold lies between the two middle float64 distances over the pairs, so that both
// decisions occur. Exit status 1 when an embedding is off by more than a relative 1e-3 or a decision
// differs.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "image.h"
#include "nn/model_file.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "ring/poly.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"

#include "report_errors.h"

using namespace pfhe;
using runtime::Clock;
using runtime::seconds_since;

namespace {

std::vector<std::filesystem::path> face_files(const std::string& dir, std::size_t count) {
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".png") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  if (paths.size() < count)
    throw std::invalid_argument(dir + ": needs at least " + std::to_string(count) + " PNG faces, has " +
                                std::to_string(paths.size()));
  paths.resize(count);
  return paths;
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.pfhm FACE_DIR [FACES=6] [W=2] [BUDGET_GB=0.5]\n", argv[0]);
    return 2;
  }
  const std::size_t count = argc > 3 ? std::stoul(argv[3]) : 6;
  const std::size_t workers = argc > 4 ? std::stoul(argv[4]) : 2;
  const double budget_gb = argc > 5 ? std::stod(argv[5]) : 0.5;
  if (count < 2) throw std::invalid_argument("FACES must be at least 2 (faces are matched in pairs)");
  if (workers == 0) throw std::invalid_argument("W must be at least 1");
  if (!(budget_gb >= 0)) throw std::invalid_argument("BUDGET_GB must be non-negative");
  ring::keep_freed_memory_for_reuse();
  const nn::PatchCNN model = nn::load_model_file(argv[1]);
  if (model.classifier) throw std::invalid_argument("the model is a classifier: this benchmark matches faces");
  const auto files = face_files(argv[2], count);

  auto t = Clock::now();
  const ckks::Context ctx(ckks::Parameters::create(nn::parameters_for(model)));
  const nn::CompileTarget target = nn::compile_target(model, ctx.params());
  const runtime::ServedModel served(ctx.params(), [&](const ckks::Encoder& enc) {
    const nn::Graph graph = model.to_graph();
    return nn::CompiledGraph::compile(graph, enc, target.level, target.scale,
                                      static_cast<std::size_t>(budget_gb * (1ull << 30)), nn::Compilation::kFull,
                                      nullptr, nullptr, 0, nn::chosen_half_ring(graph, enc, target.level));
  });
  const nn::CompiledGraph& compiled = served.graph();
  std::printf("parameters: %s\ncompile: %.1f s (%zu lane groups of %zu)\n", ctx.params().describe().c_str(),
              seconds_since(t), compiled.inputs(), compiled.input_layout().lanes);
  t = Clock::now();
  const runtime::ClientSpec spec = served.client_spec();
  auto [secret, keys] = runtime::generate_keys(served.context(), spec);
  const runtime::Client client(served.context(), spec, std::move(secret));
  const runtime::KeySet key_set(served, std::move(keys));
  const ckks::Evaluator& eval = key_set.evaluators().output();
  const auto executor = runtime::make_thread_executor(workers);
  std::printf("keygen: %.1f s\n", seconds_since(t));

  std::vector<nn::Tensor> want;
  std::vector<ckks::Ciphertext> embeddings;
  double worst = 0;
  for (const auto& file : files) {
    const nn::Tensor image = app::load_image(file.string(), model.image_shape().height);
    want.push_back(model.normalized(image));
    t = Clock::now();
    const runtime::CiphertextFile patches =
        runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), served.context());
    const double encrypt_s = seconds_since(t);
    t = Clock::now();
    embeddings.push_back(key_set.infer(patches, *executor).ciphertexts.at(0));
    const double infer_s = seconds_since(t);
    t = Clock::now();
    const nn::Tensor got = client.decrypt_output({patches.key_set, {embeddings.back()}});
    const double err = nn::precision_of(got, want.back()).relative;
    worst = std::max(worst, err);
    std::printf("%s: sum of squares before normalisation %.1f, relative error %.2e (%.1f bits); encrypt %.2f s, "
                "infer %.2f s, decrypt %.2f s\n",
                file.filename().c_str(), nn::sum_of_squares(model.embedding(image)), err, -std::log2(err), encrypt_s,
                infer_s, seconds_since(t));
    std::fflush(stdout);
  }

  std::vector<double> distances;
  for (std::size_t i = 0; i < want.size(); ++i)
    for (std::size_t j = i + 1; j < want.size(); ++j) distances.push_back(nn::match_score(want[i], want[j], 0));
  // Halfway between the two middle distances: no float64 score sits on the threshold,
  // where a difference in the last bits would flip a decision.
  std::vector<double> sorted = distances;
  std::sort(sorted.begin(), sorted.end());
  const std::size_t middle = std::max<std::size_t>(sorted.size() / 2, 1);  // at least one pair (count >= 2)
  const double threshold = sorted.size() == 1 ? sorted[0] / 2 : (sorted[middle - 1] + sorted[middle]) / 2;
  std::size_t equal = 0, matches = 0, pair = 0;
  double score_err = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    for (std::size_t j = i + 1; j < want.size(); ++j, ++pair) {
      const ckks::Ciphertext s = compiled.match(eval, embeddings[i], embeddings[j], threshold);
      const double got = client.decrypt_score({client.secret_key.key_set, {s}});
      const double plain = distances[pair] - threshold;
      score_err = std::max(score_err, std::fabs(got - plain));
      equal += (got < 0) == (plain < 0);
      matches += plain < 0;
    }
  std::printf("%zu faces: max relative embedding error %.2e; %zu pairs matched encrypted at threshold %.4f "
              "(between the float64 middle distances): %zu/%zu decisions equal to float64 (%zu matches), max score error %.2e; "
              "peak RSS %.2f GB\n",
              want.size(), worst, pair, threshold, equal, pair, matches, score_err, runtime::peak_rss_gb());
  return worst <= 1e-3 && equal == pair ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return pfhe::bench::run_reporting_errors("pfhe_real_faces_bench", run, argc, argv); }
