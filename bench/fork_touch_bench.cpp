// The cost a forked worker pays to first touch memory it inherited (the fork executor's
// workers read the model and keys their parent loaded): one pass over `GB` of a buffer
// the parent filled, in the parent, then twice in a forked child; with and without
// MADV_HUGEPAGE on the buffer. docs/BENCHMARKS.md ("Graph branches on executors") has
// the figures of this machine.
//   pfhe_fork_touch_bench [GB]
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Reads one word per 4 KiB page: the cost measured is the pages', not the bandwidth's.
double touch(const std::uint64_t* data, std::size_t words) {
  const auto start = std::chrono::steady_clock::now();
  volatile std::uint64_t sum = 0;
  for (std::size_t i = 0; i < words; i += 512) sum = sum + data[i];
  return seconds_since(start);
}

void measure(std::size_t bytes, bool huge) {
  constexpr std::size_t kHugePage = std::size_t{1} << 21;
  auto* data = static_cast<std::uint64_t*>(std::aligned_alloc(kHugePage, bytes));
  if (!data) {
    std::fprintf(stderr, "allocation failed\n");
    std::exit(1);
  }
  if (huge) madvise(data, bytes, MADV_HUGEPAGE);
  std::memset(data, 1, bytes);
  const std::size_t words = bytes / 8;
  const double parent = touch(data, words);
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    const double first = touch(data, words), second = touch(data, words);
    std::printf("%-16s parent pass %.3f s | child first pass %.3f s (%.2f s/GB), second pass %.3f s\n",
                huge ? "MADV_HUGEPAGE" : "default pages", parent, first,
                first / (static_cast<double>(bytes) / 1e9), second);
    std::fflush(stdout);
    _exit(0);
  }
  waitpid(pid, nullptr, 0);
  std::free(data);
}

}  // namespace

int main(int argc, char** argv) {
  const double gb = argc > 1 ? std::stod(argv[1]) : 1.0;
  if (!(gb > 0 && gb <= 64)) {
    std::fprintf(stderr, "usage: pfhe_fork_touch_bench [GB in (0, 64]]\n");
    return 2;
  }
  const auto bytes = static_cast<std::size_t>(gb * 1e9) / (std::size_t{1} << 21) * (std::size_t{1} << 21);
  measure(bytes, false);
  measure(bytes, true);
  return 0;
}
