// The main() of a benchmark program: runs it and turns an exception (bad arguments, an
// insecure parameter set, an unreadable file) into one line on stderr and exit status 1.
#pragma once
#include <cstdio>
#include <exception>

namespace pfhe::bench {

inline int run_reporting_errors(const char* program, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace pfhe::bench
