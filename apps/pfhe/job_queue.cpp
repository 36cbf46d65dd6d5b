#include "job_queue.h"

#include <algorithm>
#include <cstdio>

#include "ckks/checksum.h"
#include "ckks/serialization.h"

namespace pfhe::app {

namespace fs = std::filesystem;
using runtime::Clock;
using runtime::seconds_since;

const char* job_state_name(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kDone: return "done";
    case JobState::kFailed: return "failed";
  }
  return "unknown";
}

bool JobQueue::is_job_id(const std::string& id) {
  return id.size() == 16 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

fs::path JobQueue::path(const std::string& id, const char* kind) const { return dir_ / (id + kind); }

JobQueue::JobQueue(fs::path dir, std::size_t workers, std::size_t max_pending, double keep_seconds, JobFunction run)
    : dir_(std::move(dir)), max_pending_(max_pending), keep_(keep_seconds), run_(std::move(run)) {
  if (workers == 0 || max_pending < workers)
    throw std::invalid_argument("the job queue needs at least one worker and room for the jobs they run");
  if (!(keep_seconds >= 0)) throw std::invalid_argument("the retention of finished jobs must be 0 (forever) or more seconds");
  fs::create_directories(dir_);
  // The journal: <id>.input, then <id>.result or <id>.error. A write cut off by a crash
  // left only a .partial file (ckks::FileWriter renames when complete).
  std::vector<std::pair<fs::file_time_type, std::string>> pending;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const fs::path& p = entry.path();
    if (p.extension() == ".partial") {
      fs::remove(p);
      continue;
    }
    const std::string id = p.stem().string();
    if (p.extension() != ".input" || !is_job_id(id)) continue;
    ++totals_.accepted;
    JobStatus& job = jobs_[id];
    if (fs::exists(path(id, ".result"))) {
      job.state = JobState::kDone;
      job.finished = fs::last_write_time(path(id, ".result"));
    } else if (fs::exists(path(id, ".error"))) {
      job.state = JobState::kFailed;
      job.error = ckks::read_text_file(path(id, ".error").string());
      job.finished = fs::last_write_time(path(id, ".error"));
    } else {
      pending.emplace_back(fs::last_write_time(p), id);
    }
  }
  std::sort(pending.begin(), pending.end());  // in the order they were accepted
  for (const auto& [time, id] : pending) queue_.push_back(id);
  expire_finished();
  for (std::size_t w = 0; w < workers; ++w) workers_.emplace_back([this] { work(); });
}

JobQueue::~JobQueue() { drain(); }

JobQueue::Submitted JobQueue::submit(std::span<const std::uint8_t> input) {
  const std::string id = ckks::checksum_hex(ckks::checksum(input));
  std::unique_lock lock(mutex_);
  const auto known = jobs_.find(id);
  // A failed job submitted again runs again (what failed it, e.g. a damaged key cache, may
  // have been repaired); any other known job is that job.
  const bool retry = known != jobs_.end() && known->second.state == JobState::kFailed;
  if (known != jobs_.end() && !retry) return {id, false};
  if (draining_) throw QueueFull("the server is shutting down");
  if (queue_.size() + totals_.running >= max_pending_)
    throw QueueFull(std::to_string(queue_.size() + totals_.running) + " jobs are waiting or running");
  // Journaled before it is acknowledged: once the client has its id, a crash loses nothing.
  ckks::write_raw_file(path(id, ".input").string(), input);
  if (retry) fs::remove(path(id, ".error"));
  jobs_[id] = JobStatus{};
  queue_.push_back(id);
  ++totals_.accepted;
  wake_.notify_one();
  return {id, true};
}

std::optional<JobStatus> JobQueue::status(const std::string& id) const {
  std::unique_lock lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  JobStatus s = it->second;
  if (s.state == JobState::kQueued)
    s.position = static_cast<std::size_t>(std::find(queue_.begin(), queue_.end(), id) - queue_.begin()) + 1;
  return s;
}

std::optional<ckks::Bytes> JobQueue::result(const std::string& id) const {
  std::unique_lock lock(mutex_);  // not expired while it is read
  const auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.state != JobState::kDone) return std::nullopt;
  ckks::Bytes bytes = ckks::read_file(path(id, ".result").string());
  ckks::append_trailer(bytes);  // the file's own trailer, verified by read_file
  return bytes;
}

JobMetrics JobQueue::metrics() const {
  std::unique_lock lock(mutex_);
  JobMetrics m = totals_;
  m.queued = queue_.size();
  return m;
}

void JobQueue::drain() {
  {
    std::unique_lock lock(mutex_);
    draining_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
}

void JobQueue::expire_finished() {
  if (keep_.count() == 0) return;
  const auto now = fs::file_time_type::clock::now();
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const JobStatus& job = it->second;
    const bool finished = job.state == JobState::kDone || job.state == JobState::kFailed;
    if (!finished || now - job.finished < keep_) {
      ++it;
      continue;
    }
    std::error_code ignored;  // a file already gone is what removing wants
    for (const char* kind : {".result", ".error", ".input"}) fs::remove(path(it->first, kind), ignored);
    it = jobs_.erase(it);
    ++totals_.expired;
  }
}

void JobQueue::work() {
  // Finished jobs expire while the queue is idle too: checked at least every minute, and
  // at least twice per retention period.
  const auto period = std::chrono::duration<double>(keep_.count() == 0 ? 60.0 : std::clamp(keep_.count() / 2, 0.5, 60.0));
  for (;;) {
    std::string id;
    {
      std::unique_lock lock(mutex_);
      while (!wake_.wait_for(lock, period, [&] { return draining_ || !queue_.empty(); })) expire_finished();
      if (draining_) return;  // queued jobs stay journaled for the next start
      id = queue_.front();
      queue_.pop_front();
      jobs_[id].state = JobState::kRunning;
      ++totals_.running;
    }
    const auto start = Clock::now();
    try {
      ckks::Bytes input = ckks::read_file(path(id, ".input").string());  // verified against its trailer
      ckks::append_trailer(input);  // the bytes as submitted
      const JobOutput output = run_(input);
      finish(id, &output, "", seconds_since(start));
    } catch (const std::exception& e) {
      finish(id, nullptr, e.what(), seconds_since(start));
    }
  }
}

void JobQueue::finish(const std::string& id, const JobOutput* output, const std::string& error, double seconds) {
  // The result is on disk before the job is reported done.
  std::string failure = error;
  if (output) {
    try {
      ckks::write_raw_file(path(id, ".result").string(), output->result);
    } catch (const std::exception& e) {
      failure = std::string("storing the result failed: ") + e.what();
    }
  }
  if (!failure.empty()) {
    try {
      ckks::write_text_file(path(id, ".error").string(), failure);
    } catch (const std::exception&) {
      // The job fails now and runs again after a restart: nothing is lost.
    }
  }
  std::unique_lock lock(mutex_);
  JobStatus& job = jobs_[id];
  job.run_seconds = seconds;
  job.finished = fs::file_time_type::clock::now();
  --totals_.running;
  if (failure.empty()) {
    job.state = JobState::kDone;
    ++totals_.done;
    for (const auto& [stage, s] : output->stage_seconds) totals_.stage_seconds[stage] += s;
  } else {
    job.state = JobState::kFailed;
    job.error = failure;
    ++totals_.failed;
  }
}

}  // namespace pfhe::app
