// A parallel loop (OpenMP) whose body may throw: the first exception is carried out of
// the parallel region and rethrown to the caller (letting it escape the region would
// terminate the process, e.g. on std::bad_alloc under a memory limit).
#pragma once
#include <cstddef>
#include <exception>

namespace pfhe::ring {

template <typename F>
void parallel_for(std::size_t count, F&& body) {
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic)
  for (std::size_t i = 0; i < count; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(pfhe_parallel_for_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace pfhe::ring
