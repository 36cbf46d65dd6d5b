// The service's jobs (`pfhe serve`, docs/CLI.md "Service"): every accepted input is
// journaled on disk before it is acknowledged, runs on one of a fixed number of worker
// threads in the order accepted, and leaves its result (or its error) on disk, where a
// client fetches it. A server killed at any point loses nothing: at start, every journaled
// input without a result is queued again. A job's id is the checksum of its input bytes,
// so a client that submits again (after a timeout or a restart) finds the same job instead
// of making a second one; submitting a failed job's input again retries it.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ckks/byte_stream.h"
#include "runtime/process_stats.h"

namespace pfhe::app {

// What running a job gives: the result's bytes and the seconds of its stages by name.
struct JobOutput {
  ckks::Bytes result;
  std::map<std::string, double> stage_seconds;
};
using JobFunction = std::function<JobOutput(std::span<const std::uint8_t> input)>;

enum class JobState { kQueued, kRunning, kDone, kFailed };
const char* job_state_name(JobState state);

struct JobStatus {
  JobState state = JobState::kQueued;
  std::size_t position = 0;  // among the queued jobs, 1 = next (queued only)
  std::string error;         // failed only
  double run_seconds = 0;    // done or failed
  std::filesystem::file_time_type finished{};  // done or failed: when its result (or error) was stored
};

struct JobMetrics {
  std::size_t queued = 0, running = 0, done = 0, failed = 0, accepted = 0;
  std::size_t expired = 0;  // finished jobs removed after the retention period, since start
  std::map<std::string, double> stage_seconds;  // summed over the jobs done since start
};

// Thrown by submit when the queue is full or draining: the caller answers "busy".
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class JobQueue {
 public:
  // Journal in `dir` (created); `workers` jobs run at once; at most `max_pending` jobs wait
  // or run (more are refused with QueueFull). Journaled jobs without a result are queued.
  // A finished job (its input, result or error) is removed `keep_seconds` after it
  // finished (0: kept forever), checked at start and at least every minute.
  JobQueue(std::filesystem::path dir, std::size_t workers, std::size_t max_pending, double keep_seconds,
           JobFunction run);
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  struct Submitted {
    std::string id;
    bool is_new = false;  // false: the same input was submitted before (and has not failed)
  };
  // Journals the input (already validated by the caller) and queues it. The input of a
  // known job is that job, unless it failed: then it is queued again (a retry).
  Submitted submit(std::span<const std::uint8_t> input);
  std::optional<JobStatus> status(const std::string& id) const;
  // The result of a done job, read from the journal (checksum verified); none when no
  // such job is done (unknown, not finished, or expired meanwhile).
  std::optional<ckks::Bytes> result(const std::string& id) const;
  JobMetrics metrics() const;
  // Refuses new jobs, waits for the running ones, stops the workers; queued jobs stay in
  // the journal for the next start.
  void drain();

  // 16 lower-case hex digits: what submit returns (anything else is no job of this queue).
  static bool is_job_id(const std::string& id);

 private:
  std::filesystem::path path(const std::string& id, const char* kind) const;
  void work();
  void finish(const std::string& id, const JobOutput* output, const std::string& error, double seconds);
  void expire_finished();  // under mutex_


  std::filesystem::path dir_;
  std::size_t max_pending_;
  std::chrono::duration<double> keep_;  // zero: forever
  JobFunction run_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::string> queue_;
  std::map<std::string, JobStatus> jobs_;
  JobMetrics totals_;
  bool draining_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace pfhe::app
