// Run under mpirun (-np 3 in CTest): every rank compiles the same reduced PatchCNN; rank 0
// generates the keys and broadcasts the evaluation keys; rank 0 then places the patch
// backbones on ranks 1..n-1 and checks that the outputs are byte-identical to a sequential
// run in rank 0. Exit status 0 only if they are. Then a run whose first task fails at once
// while the other is still computing: the error names it, and the next run's results are
// still right (the failed run received every result in flight; a result left behind would
// block its rank or be taken for one of the next run's).
#include <mpi.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "ckks/serialization.h"
#include "reduced_server.h"
#include "runtime/mpi.h"

using namespace pfhe;

namespace {
ckks::Bytes broadcast(ckks::Bytes bytes, int rank) {
  std::uint64_t size = bytes.size();
  MPI_Bcast(&size, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  if (rank != 0) bytes.resize(size);
  MPI_Bcast(bytes.data(), static_cast<int>(size), MPI_BYTE, 0, MPI_COMM_WORLD);
  return bytes;
}
}  // namespace

int main(int argc, char** argv) {
  runtime::MpiSession mpi(&argc, &argv);
  try {
    test::ReducedServer s;  // its own (random) keys on every rank; rank 0's are broadcast
    const ckks::RelinKey relin =
        ckks::load_relin_key(s.ctx, broadcast(mpi.rank() == 0 ? ckks::save(s.ctx, s.keys.relin) : ckks::Bytes{}, mpi.rank()));
    const ckks::GaloisKeys galois =
        ckks::load_galois_keys(s.ctx, broadcast(mpi.rank() == 0 ? ckks::save(s.ctx, s.keys.galois) : ckks::Bytes{}, mpi.rank()));
    const ckks::Evaluator eval(s.ctx, &relin, &galois);
    const runtime::TaskFunction graph_task = runtime::graph_tasks(s.compiled, eval);
    constexpr std::size_t kFailing = 1000;  // runs numbered from here: their first task fails at once
    const runtime::TaskFunction task = [&](std::size_t t, const ckks::Ciphertext& in) {
      if (t == kFailing) throw std::runtime_error("the failing task");
      return graph_task(t >= kFailing ? t - kFailing : t, in);
    };
    if (mpi.rank() != 0) {
      runtime::serve_mpi_tasks(mpi, {s.ctx, s.ctx}, task);
      return 0;
    }
    const auto inputs = s.branch_entries(s.encrypt_patches(s.images[3]));
    std::vector<ckks::Ciphertext> want = runtime::make_sequential_executor()->run({s.ctx, s.ctx}, task, inputs);
    runtime::RunStats stats;
    std::vector<ckks::Ciphertext> got, rounds, after_failure;
    std::string failure;
    const std::size_t half = inputs.size() / 2;
    {
      auto ex = runtime::make_mpi_executor(mpi);
      got = ex->run({s.ctx, s.ctx}, task, inputs, &stats);
      // Tasks numbered across two rounds (as a graph's regions are): the workers' fixed
      // task function must be given the global number.
      rounds = ex->run({s.ctx, s.ctx}, task, {inputs.begin(), inputs.begin() + static_cast<std::ptrdiff_t>(half)});
      for (auto& c : ex->run({s.ctx, s.ctx}, task, {inputs.begin() + static_cast<std::ptrdiff_t>(half), inputs.end()},
                             nullptr, half))
        rounds.push_back(std::move(c));
      try {
        ex->run({s.ctx, s.ctx}, task, inputs, nullptr, kFailing);
      } catch (const std::runtime_error& e) {
        failure = e.what();
      }
      after_failure = ex->run({s.ctx, s.ctx}, task, inputs);
    }
    bool same = got.size() == want.size() && rounds.size() == want.size() && after_failure.size() == want.size();
    for (std::size_t i = 0; same && i < got.size(); ++i)
      same = ckks::save(s.ctx, got[i]) == ckks::save(s.ctx, want[i]) &&
             ckks::save(s.ctx, rounds[i]) == ckks::save(s.ctx, want[i]) &&
             ckks::save(s.ctx, after_failure[i]) == ckks::save(s.ctx, want[i]);
    const bool failure_named = failure.find("task 1000 failed on MPI rank") != std::string::npos &&
                               failure.find("the failing task") != std::string::npos;
    std::printf("MPI executor over %d ranks: %zu tasks, %.2f s, %zu bytes moved, %s; a failing task: %s\n", mpi.size(),
                got.size(), stats.seconds, stats.transfer_bytes, same ? "byte-identical to sequential" : "MISMATCH",
                failure_named ? "named, and the next run is right" : ("NOT NAMED: " + failure).c_str());
    return same && failure_named && inputs.size() >= 2 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", mpi.rank(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}
