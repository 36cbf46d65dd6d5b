// Wall-clock intervals and peak resident memory, as the executors, the CLI, the
// benchmark stages and the benchmarks report them.
#pragma once
#include <sys/resource.h>

#include <chrono>

namespace pfhe::runtime {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Peak resident set size of this process so far (getrusage), in GiB.
inline double peak_rss_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);
}

}  // namespace pfhe::runtime
