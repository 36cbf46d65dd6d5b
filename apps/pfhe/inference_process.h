// Inference in processes of their own, for `pfhe serve --executor fork` (docs/CLI.md,
// "Service"). The fork pool (runtime/executor.h) forks its workers from a parent with no
// other thread alive, and a server has its HTTP and job threads; so each job slot of the
// server owns an inference process, started with posix_spawn (safe from a threaded
// parent) as the hidden command `pfhe inference-process`. It loads the model itself (a
// compiled artefact is mapped: its pages are the page cache's, shared with the server),
// keeps one OpenMP thread, and runs each job on a fork pool whose dead workers' tasks are
// run again (`retries`). A job travels as one frame (runtime/transport.h): the path of the
// key set's key cache and the encrypted input; the answer is the encrypted result or the
// error. The process keeps the last key set mapped. It exits when the server goes (end of
// its socket, or the kernel's parent-death signal); a process that dies while it runs a job
// is started again and the job run once more on the new one.
#pragma once
#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "ckks/byte_stream.h"

namespace pfhe::app {

struct InferenceProcessOptions {
  std::string params, model;
  std::size_t workers = 2;  // fork workers per job
  std::size_t retries = 1;  // runs of a task again after its worker died
};

class InferenceProcesses {
 public:
  // Starts `count` processes (one per job that may run at once).
  InferenceProcesses(InferenceProcessOptions options, std::size_t count);
  ~InferenceProcesses();
  InferenceProcesses(const InferenceProcesses&) = delete;
  InferenceProcesses& operator=(const InferenceProcesses&) = delete;

  // The serialized result of `input` under the key set whose cache is `key_cache`, from an
  // idle process (waits for one). Throws std::runtime_error with the process's error, or
  // when a process died twice on this job.
  ckks::Bytes infer(const std::string& key_cache, std::span<const std::uint8_t> input);
  // Every process started (for logs and tests).
  std::vector<pid_t> pids() const;

 private:
  struct Process {
    pid_t pid = -1;
    int fd = -1;
  };
  Process spawn() const;

  InferenceProcessOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable idle_changed_;
  std::vector<Process> idle_;
  std::vector<pid_t> all_;
};

// `pfhe inference-process`: serves jobs arriving on socket `fd` until it closes.
int run_inference_process(const InferenceProcessOptions& options, int fd);

}  // namespace pfhe::app
