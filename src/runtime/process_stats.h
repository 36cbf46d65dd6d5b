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

// User and system CPU seconds of this process so far (getrusage). System time is the
// kernel's share (page faults, mapping), which a benchmark reports to show what memory
// traffic costs.
struct CpuSeconds {
  double user = 0;
  double system = 0;
};

inline CpuSeconds cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto to_s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return {to_s(usage.ru_utime), to_s(usage.ru_stime)};
}

// Page faults of this process so far that needed no disk read (getrusage's ru_minflt):
// mostly first touches of fresh memory, each a page the kernel clears.
inline long minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

}  // namespace pfhe::runtime
