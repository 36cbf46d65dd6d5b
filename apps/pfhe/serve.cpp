#include "serve.h"

#include <httplib.h>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "ckks/checksum.h"
#include "ckks/serialization.h"
#include "inference_process.h"
#include "job_queue.h"
#include "key_registry.h"
#include "template_store.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"

namespace pfhe::app {

namespace fs = std::filesystem;
using runtime::Clock;
using runtime::seconds_since;

namespace {

void log(const char* fmt, auto... args) {
  std::fprintf(stderr, "[pfhe serve] ");
  std::fprintf(stderr, fmt, args...);
  std::fprintf(stderr, "\n");
}

constexpr const char* kBinary = "application/octet-stream";
// Encrypted inputs and results are tens of MB; evaluation keys (GBs) stream to disk.
constexpr std::size_t kMaxRequestBytes = std::size_t{4} << 30;
// An embedding is one ciphertext (CryptoFaceNet4's: 0.9 MB; one of 60 limbs at N = 2^16: 63 MB).
constexpr std::size_t kMaxEmbeddingBytes = std::size_t{256} << 20;

void reply_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(message + "\n", "text/plain");
}

// Runs `handle`, turning its exceptions into an error reply (the service keeps running).
template <typename Handle>
void guarded(const char* what, httplib::Response& res, Handle&& handle) {
  try {
    handle();
  } catch (const std::bad_alloc&) {
    log("%s: out of memory", what);
    reply_error(res, 503, "the server ran out of memory; retry later");
  } catch (const ckks::FileWriteError& e) {
    // The server's own storage failed, not the request: nothing was accepted.
    log("%s: not stored: %s", what, e.what());
    if (e.code().value() == ENOSPC) reply_error(res, 507, "the server's disk is full: nothing was stored; retry later");
    else reply_error(res, 500, "the server could not store the request; see its log");
  } catch (const std::exception& e) {
    log("%s: refused: %s", what, e.what());
    reply_error(res, 400, e.what());
  }
}

}  // namespace

namespace {

// The job every submitted input becomes: its key set's inference on the thread executor
// that every job shares, or in an inference process on its fork pool or MPI ranks
// (`processes`).
JobOutput run_inference_job(const runtime::ServedModel& model, KeyRegistry& keys, runtime::Executor* threads,
                            InferenceProcesses* processes, std::span<const std::uint8_t> bytes) {
  JobOutput out;
  auto t = Clock::now();
  const runtime::CiphertextFile input = runtime::parse_ciphertext_file(bytes, model.context(), "the encrypted input");
  out.stage_seconds["parse"] = seconds_since(t);
  t = Clock::now();
  const auto set = keys.get(input.key_set);  // loaded here when not in memory (a key file expanded first)
  out.stage_seconds["keys"] = seconds_since(t);
  t = Clock::now();
  if (processes) {
    out.result = processes->infer(keys.cache_path(input.key_set).string(), bytes);
    out.stage_seconds["infer"] = seconds_since(t);
    log("job for key set %s done in %.2f s (inference process)", ckks::checksum_hex(input.key_set).c_str(),
        out.stage_seconds["infer"]);
    return out;
  }
  const runtime::CiphertextFile result = set->infer(input, *threads);
  out.stage_seconds["infer"] = seconds_since(t);
  t = Clock::now();
  out.result = runtime::ciphertext_file_bytes(set->output_context(), result);
  out.stage_seconds["serialize"] = seconds_since(t);
  log("job for key set %s done in %.2f s", ckks::checksum_hex(input.key_set).c_str(), out.stage_seconds["infer"]);
  return out;
}

nlohmann::json status_json(const std::string& id, const JobStatus& s) {
  nlohmann::json j = {{"job", id}, {"state", job_state_name(s.state)}};
  if (s.state == JobState::kQueued) j["position"] = s.position;
  if (s.state == JobState::kDone || s.state == JobState::kFailed) j["seconds"] = s.run_seconds;
  if (s.state == JobState::kFailed) j["error"] = s.error;
  return j;
}

void reply_json(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump() + "\n", "application/json");
}

// SIGTERM and SIGINT are blocked in every thread (set before any is made) and taken by
// one thread with sigwait, which drains the service: no new jobs, the running ones finish,
// the queued ones stay journaled for the next start.
sigset_t termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// Templates: an encrypted embedding stored under its key set and a name; a probe of the
// same key set is matched against it (encrypted squared distance minus the threshold).
void add_template_routes(httplib::Server& server, const runtime::ServedModel& model, KeyRegistry& keys,
                         TemplateStore& templates) {
  // Embeddings, templates and scores live in the half ring when the model switches rings.
  // (The routes outlive this function: they capture the objects, not its locals.)
  const ckks::Context* output = model.half_ring() ? &model.half_ring()->context : &model.context();
  const auto embedding_of = [&model, output](const httplib::Request& req, const char* what) {
    if (model.client_spec().classifier)
      throw std::invalid_argument("the model is a classifier: its outputs are logits, not embeddings to match");
    const std::span<const std::uint8_t> body(reinterpret_cast<const std::uint8_t*>(req.body.data()), req.body.size());
    return runtime::parse_ciphertext_file(body, *output, what);
  };
  const std::string name_route = "/v1/templates/([A-Za-z0-9_-]{1,64})";
  server.Put(name_route, [&keys, &templates, output, embedding_of](const httplib::Request& req,
                                                                   httplib::Response& res) {
    guarded("template", res, [&] {
      const std::string name = req.matches[1];
      const runtime::CiphertextFile embedding = embedding_of(req, "the template");
      if (!keys.registered(embedding.key_set))
        return reply_error(res, 404, "unknown key set " + ckks::checksum_hex(embedding.key_set));
      const bool replaced = templates.put(*output, embedding, name);
      log("template '%s' %s for key set %s", name.c_str(), replaced ? "replaced" : "enrolled",
          ckks::checksum_hex(embedding.key_set).c_str());
      reply_json(res, replaced ? 200 : 201, {{"template", name}, {"key_set", ckks::checksum_hex(embedding.key_set)}});
    });
  });
  server.Post(name_route + "/match", [&keys, &templates, output, embedding_of](const httplib::Request& req,
                                                                               httplib::Response& res) {
    guarded("match", res, [&] {
      const std::string name = req.matches[1];
      double threshold = 0;
      const std::string text = req.get_param_value("threshold");
      std::size_t used = 0;
      try {
        threshold = std::stod(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (text.empty() || used != text.size() || !std::isfinite(threshold))
        return reply_error(res, 400, "?threshold=T (a number: the squared-distance threshold) is required");
      const runtime::CiphertextFile probe = embedding_of(req, "the probe");
      if (!keys.registered(probe.key_set))
        return reply_error(res, 404, "unknown key set " + ckks::checksum_hex(probe.key_set));
      const auto enrolled = templates.get(*output, probe.key_set, name);
      if (!enrolled)
        return reply_error(res, 404, "no template '" + name + "' for key set " + ckks::checksum_hex(probe.key_set));
      const auto t = Clock::now();
      const auto set = keys.get(probe.key_set);
      const ckks::Bytes score = runtime::ciphertext_file_bytes(*output, set->match(probe, *enrolled, threshold));
      log("match against '%s' for key set %s in %.2f s", name.c_str(), ckks::checksum_hex(probe.key_set).c_str(),
          seconds_since(t));
      res.set_content(std::string(score.begin(), score.end()), kBinary);
    });
  });
  server.Delete(name_route, [&templates](const httplib::Request& req, httplib::Response& res) {
    guarded("template removal", res, [&] {
      const std::string name = req.matches[1], key_set = req.get_param_value("key_set");
      if (!JobQueue::is_job_id(key_set))  // the same form: 16 hex digits
        return reply_error(res, 400, "?key_set=TAG (the 16 hex digits pfhe client register printed) is required");
      if (!templates.remove(std::stoull(key_set, nullptr, 16), name))
        return reply_error(res, 404, "no template '" + name + "' for key set " + key_set);
      log("template '%s' removed for key set %s", name.c_str(), key_set.c_str());
      reply_json(res, 200, {{"removed", name}, {"key_set", key_set}});
    });
  });
}

}  // namespace

int run_serve(const ServeOptions& o) {
  if (o.workers == 0 || o.max_requests == 0) throw std::invalid_argument("--workers and --max-requests must be >= 1");
  if (o.max_queue < o.max_requests) throw std::invalid_argument("--max-queue must be at least --max-requests");
  if (o.executor != "threads" && o.executor != "fork" && o.executor != "mpi")
    throw std::invalid_argument("--executor must be threads, fork or mpi");
#ifndef PFHE_HAVE_MPI
  if (o.executor == "mpi") throw std::invalid_argument("this pfhe was built without MPI (install libopenmpi-dev and rebuild)");
#endif
  // The executor's threads are made anew when no job runs, and glibc gives new threads new
  // allocator arenas that keep what they free: without a cap a long-running server's memory
  // grows with the jobs it has served (measured: CryptoFaceNet4 12.1 GB after 4 jobs, 14.6
  // GB after 8). The threads that allocate at once are the workers, the jobs' own threads
  // (the steps outside the branches) and the HTTP ones.
  mallopt(M_ARENA_MAX, static_cast<int>(std::min<std::size_t>(o.workers + o.max_requests + 2, 64)));
  const sigset_t signals = termination_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const auto start = Clock::now();
  log("loading parameters and model");
  const runtime::ServedModel model(o.params, o.model);
  KeyRegistry keys(model, fs::path(o.state_dir) / "keys", o.max_loaded_keys);
  TemplateStore templates(fs::path(o.state_dir) / "templates");
  std::unique_ptr<InferenceProcesses> processes;
  if (o.executor != "threads") {
    processes = std::make_unique<InferenceProcesses>(
        InferenceProcessOptions{o.params, o.model, o.executor, o.workers, o.retries, o.mpirun}, o.max_requests);
    std::string pids;
    for (const pid_t pid : processes->pids()) pids += (pids.empty() ? "" : ", ") + std::to_string(pid);
    if (o.executor == "fork")
      log("inference processes (fork pools of %zu workers, %zu retries per task): %s", o.workers, o.retries,
          pids.c_str());
    else
      log("inference processes (MPI jobs of rank 0 and %zu worker ranks, by %s): %s", o.workers, o.mpirun.c_str(),
          pids.c_str());
  }
  // Threads: one pool of --workers threads for all jobs, so that the branch tasks of jobs
  // running at once interleave on it, first come, first served.
  const auto threads = runtime::make_thread_executor(o.workers);
  JobQueue jobs(fs::path(o.state_dir) / "jobs", o.max_requests, o.max_queue, o.keep_jobs_seconds,
                [&](std::span<const std::uint8_t> input) {
                  return run_inference_job(model, keys, threads.get(), processes.get(), input);
                });
  const JobMetrics journal = jobs.metrics();
  log("loaded in %.1f s: a model of %zu input ciphertext(s) and %zu branch task(s)%s, %zu registered key set(s), %zu "
      "journaled job(s) to run",
      seconds_since(start), model.inputs(), model.tasks(), model.compiles_per_task() ? " compiled per task" : "",
      keys.metrics().registered, journal.queued);

  httplib::Server server;
  server.set_payload_max_length(std::size_t{1} << 40);  // key uploads stream to disk
  // A job's input, a template and a probe are read into memory: a body announced larger
  // than any of them can be is refused before it is read, and so is one that announces no
  // length (a chunked upload would be read whole, up to the key uploads' limit).
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    const bool templates = req.path.starts_with("/v1/templates/");
    if (req.path != "/v1/jobs" && !(templates && req.method != "DELETE"))
      return httplib::Server::HandlerResponse::Unhandled;
    if (!req.has_header("Content-Length")) {
      reply_error(res, 411, "the request must give its Content-Length");
      return httplib::Server::HandlerResponse::Handled;
    }
    const std::uint64_t limit = templates ? kMaxEmbeddingBytes : kMaxRequestBytes;
    if (req.get_header_value<std::uint64_t>("Content-Length") <= limit) return httplib::Server::HandlerResponse::Unhandled;
    reply_error(res, 413, templates ? "the encrypted embedding is too large" : "the encrypted input is too large");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_read_timeout(600, 0);
  server.set_write_timeout(600, 0);
  server.Get("/v1/health", [&](const httplib::Request&, httplib::Response& res) {
    const JobMetrics m = jobs.metrics();
    reply_json(res, 200, {{"input_ciphertexts", model.inputs()},
                          {"tasks", model.tasks()},
                          {"key_sets", keys.metrics().registered},
                          {"templates", templates.count()},
                          {"jobs_queued", m.queued},
                          {"jobs_running", m.running},
                          {"max_requests", o.max_requests}});
  });
  server.Get("/v1/metrics", [&](const httplib::Request&, httplib::Response& res) {
    const JobMetrics m = jobs.metrics();
    const KeyCacheMetrics k = keys.metrics();
    reply_json(res, 200, {{"jobs_accepted", m.accepted},
                          {"jobs_queued", m.queued},
                          {"jobs_running", m.running},
                          {"jobs_done", m.done},
                          {"jobs_failed", m.failed},
                          {"jobs_expired", m.expired},
                          {"stage_seconds", m.stage_seconds},
                          {"key_sets", k.registered},
                          {"key_sets_loaded", k.loaded},
                          {"key_set_loads", k.loads},
                          {"key_load_seconds", k.load_seconds},
                          {"uptime_seconds", seconds_since(start)},
                          {"peak_rss_gb", runtime::peak_rss_gb()}});
  });
  server.Post("/v1/keys", [&](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& reader) {
    guarded("key registration", res, [&] {
      const auto t = Clock::now();
      const fs::path upload = keys.upload_path();
      {
        std::ofstream out(upload, std::ios::binary);
        int write_error = 0;
        reader([&](const char* data, std::size_t length) {
          out.write(data, static_cast<std::streamsize>(length));
          if (!out && write_error == 0) write_error = errno;
          return static_cast<bool>(out);
        });
        if (out) out.flush();
        if (!out && write_error == 0) write_error = errno;
        if (!out) {
          std::error_code ignored;
          fs::remove(upload, ignored);
          if (write_error == ENOSPC) {
            log("key registration: refused: the disk is full");
            return reply_error(res, 507, "the server's disk is full: the keys cannot be stored; retry later");
          }
          throw std::runtime_error("cannot store the uploaded keys: " + std::string(std::strerror(write_error)));
        }
      }
      const std::uint64_t tag = keys.add(upload);
      log("registered key set %s in %.1f s", ckks::checksum_hex(tag).c_str(), seconds_since(t));
      reply_json(res, 200, {{"key_set", ckks::checksum_hex(tag)}});
    });
  });
  server.Post("/v1/jobs", [&](const httplib::Request& req, httplib::Response& res) {
    guarded("job", res, [&] {
      if (req.body.size() > kMaxRequestBytes) return reply_error(res, 413, "the encrypted input is too large");
      const std::span<const std::uint8_t> body(reinterpret_cast<const std::uint8_t*>(req.body.data()), req.body.size());
      // Checked before it is accepted: a job that is queued can run.
      const runtime::CiphertextFile input = runtime::parse_ciphertext_file(body, model.context(), "the encrypted input");
      if (!keys.registered(input.key_set))
        return reply_error(res, 404, "unknown key set " + ckks::checksum_hex(input.key_set) +
                                         ": register the evaluation keys first (pfhe client register)");
      try {
        const JobQueue::Submitted job = jobs.submit(body);
        if (job.is_new) log("job %s accepted for key set %s", job.id.c_str(), ckks::checksum_hex(input.key_set).c_str());
        reply_json(res, job.is_new ? 202 : 200, status_json(job.id, *jobs.status(job.id)));
      } catch (const QueueFull& e) {
        res.set_header("Retry-After", "2");
        reply_error(res, 503, std::string("busy: ") + e.what() + "; retry later");
      }
    });
  });
  server.Get(R"(/v1/jobs/([0-9a-f]{16}))", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    const auto status = jobs.status(id);
    if (!status) return reply_error(res, 404, "no job " + id);
    reply_json(res, 200, status_json(id, *status));
  });
  server.Get(R"(/v1/jobs/([0-9a-f]{16})/result)", [&](const httplib::Request& req, httplib::Response& res) {
    guarded("result", res, [&] {
      const std::string id = req.matches[1];
      const auto status = jobs.status(id);
      if (!status) return reply_error(res, 404, "no job " + id);
      if (status->state == JobState::kFailed) return reply_error(res, 422, "job " + id + " failed: " + status->error);
      if (status->state != JobState::kDone) return reply_json(res, 409, status_json(id, *status));
      const std::optional<ckks::Bytes> bytes = jobs.result(id);
      if (!bytes) return reply_error(res, 404, "no job " + id + " (its retention period ended)");
      res.set_content(std::string(bytes->begin(), bytes->end()), kBinary);
    });
  });
  add_template_routes(server, model, keys, templates);
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port));
  ckks::write_text_file((fs::path(o.state_dir) / "port").string(), std::to_string(port) + "\n");
  std::atomic<bool> stopping{false};
  std::thread terminator([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (!stopping.exchange(true)) log("signal %d: draining (running jobs finish, queued ones stay journaled)", signal);
    jobs.drain();
    server.stop();
  });
  log("serving on http://%s:%d (%zu jobs at once, %zu %s, up to %zu waiting or running)", o.host.c_str(), port,
      o.max_requests, o.workers,
      o.executor == "threads" ? "worker threads shared by the jobs"
                              : (o.executor == "fork" ? "fork workers per job" : "worker ranks per job"),
      o.max_queue);
  const bool listened = server.listen_after_bind();
  if (!stopping.exchange(true)) pthread_kill(terminator.native_handle(), SIGTERM);  // not stopped by a signal
  terminator.join();
  if (!listened) throw std::runtime_error("the server stopped listening");
  log("stopped");
  return 0;
}

namespace {

httplib::Client connect(const std::string& server) {
  httplib::Client client(server);
  if (!client.is_valid()) throw std::invalid_argument("--server: not an http://host:port address: " + server);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(3600, 0);  // an inference of a large model takes minutes
  client.set_write_timeout(3600, 0);
  return client;
}

// What went wrong with a request that got no reply.
std::string transport_error(const httplib::Result& res) {
  std::string text = httplib::to_string(res.error());
  if (res.error() == httplib::Error::Canceled || res.error() == httplib::Error::Write)
    text += ": the server closed the connection while the request was sent (it may have refused it, e.g. a full "
            "disk: see its log)";
  return text;
}

// The body of a successful reply, or an error naming the server and its message.
std::string expect_ok(const httplib::Result& res, const std::string& server, std::initializer_list<int> also_ok = {}) {
  if (!res) throw std::runtime_error(server + ": " + transport_error(res));
  if (res->status != 200 && std::find(also_ok.begin(), also_ok.end(), res->status) == also_ok.end()) {
    std::string message = res->body;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    throw std::runtime_error(server + " (HTTP " + std::to_string(res->status) + "): " + message);
  }
  return res->body;
}

// Sends a request until it is answered with something other than HTTP 503 or `wait`
// seconds have passed. A busy server (503) is asked again after the delay it names, an
// unreachable one (restarting: connection refused or dropped) every 2 s. Requests are
// idempotent (an inference is deterministic; the same keys register under the same tag),
// so asking again neither loses nor duplicates anything.
httplib::Result send_with_retries(const std::function<httplib::Result()>& send, double wait) {
  const auto start = Clock::now();
  bool told_busy = false, told_down = false;
  for (;;) {
    httplib::Result res = send();
    const bool busy = res && res->status == 503;
    if ((res && !busy) || seconds_since(start) >= wait) return res;
    int delay = 2;
    if (busy) {
      delay = std::clamp(std::atoi(res->get_header_value("Retry-After").c_str()), 1, 60);
      if (!std::exchange(told_busy, true))
        std::fprintf(stderr, "[pfhe] the server is busy; asking again every %d s\n", delay);
    } else if (!std::exchange(told_down, true)) {
      std::fprintf(stderr, "[pfhe] cannot reach the server (%s); trying again every 2 s for up to %.0f s\n",
                   transport_error(res).c_str(), wait);
    }
    ::sleep(static_cast<unsigned>(delay));
  }
}

}  // namespace

int run_client_health(const std::string& server) {
  httplib::Client client = connect(server);
  std::printf("%s", expect_ok(client.Get("/v1/health"), server).c_str());
  return 0;
}

int run_client_metrics(const std::string& server) {
  httplib::Client client = connect(server);
  std::printf("%s", expect_ok(client.Get("/v1/metrics"), server).c_str());
  return 0;
}

int run_client_register(const std::string& server, const std::string& keys_path, double wait) {
  const auto size = static_cast<std::size_t>(fs::file_size(keys_path));
  std::ifstream in(keys_path, std::ios::binary);
  if (!in) throw std::invalid_argument(keys_path + ": cannot open");
  httplib::Client client = connect(server);
  std::vector<char> buffer(std::size_t{8} << 20);
  const auto provide = [&](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(buffer.data(), static_cast<std::streamsize>(std::min(length, buffer.size())));
    return in.gcount() > 0 && sink.write(buffer.data(), static_cast<std::size_t>(in.gcount()));
  };
  const std::string reply =
      expect_ok(send_with_retries([&] { return client.Post("/v1/keys", size, provide, kBinary); }, wait), server);
  const auto j = nlohmann::json::parse(reply);
  std::printf("registered key set %s\n", j.at("key_set").get<std::string>().c_str());
  return 0;
}

namespace {

std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot open");
  return {(std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()};
}

// Submits the encrypted input; returns the job id (the same for the same bytes).
std::string submit(httplib::Client& client, const std::string& server, const std::string& body, double wait) {
  const std::string reply =
      expect_ok(send_with_retries([&] { return client.Post("/v1/jobs", body, kBinary); }, wait), server, {202});
  return nlohmann::json::parse(reply).at("job").get<std::string>();
}

// Waits for the job (printing its state as it changes) and returns its result's bytes.
std::string fetch(httplib::Client& client, const std::string& server, const std::string& job, double wait) {
  if (!JobQueue::is_job_id(job)) throw std::invalid_argument("--job: not a job id (16 hex digits): " + job);
  const auto start = Clock::now();
  std::string last_state;
  for (double delay = 0.2;; delay = std::min(delay * 1.5, 2.0)) {
    httplib::Result res =
        send_with_retries([&] { return client.Get("/v1/jobs/" + job + "/result"); }, wait - seconds_since(start));
    if (res && res->status == 200) return res->body;
    if (!res || res->status != 409) expect_ok(res, server);  // throws with the server's message
    const auto state = nlohmann::json::parse(res->body);
    std::string now = state.at("state").get<std::string>();
    if (state.contains("position")) now += " (position " + std::to_string(state.at("position").get<int>()) + ")";
    if (now != last_state) std::fprintf(stderr, "[pfhe] job %s: %s\n", job.c_str(), now.c_str());
    last_state = now;
    if (seconds_since(start) >= wait)
      throw std::runtime_error(server + ": job " + job + " not done after " + std::to_string(wait) + " s (" + now +
                               "); fetch it later with pfhe client fetch --job " + job);
    ::usleep(static_cast<useconds_t>(delay * 1e6));
  }
}

void write_result(const std::string& reply, const std::string& out) {
  const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(reply.data()), reply.size());
  ckks::verify_trailer(bytes, "the server's reply");  // a damaged reply is not written as a result
  ckks::write_raw_file(out, bytes);
}

}  // namespace

int run_client_submit(const std::string& server, const std::string& input_path, double wait) {
  const std::string body = read_whole(input_path);
  httplib::Client client = connect(server);
  std::printf("%s\n", submit(client, server, body, wait).c_str());
  return 0;
}

int run_client_status(const std::string& server, const std::string& job) {
  if (!JobQueue::is_job_id(job)) throw std::invalid_argument("--job: not a job id (16 hex digits): " + job);
  httplib::Client client = connect(server);
  std::printf("%s", expect_ok(client.Get("/v1/jobs/" + job), server).c_str());
  return 0;
}

int run_client_fetch(const std::string& server, const std::string& job, const std::string& out, double wait) {
  httplib::Client client = connect(server);
  write_result(fetch(client, server, job, wait), out);
  std::fprintf(stderr, "[pfhe] encrypted result of job %s -> %s\n", job.c_str(), out.c_str());
  return 0;
}

int run_client_infer(const std::string& server, const std::string& input_path, const std::string& out, double wait) {
  const std::string body = read_whole(input_path);
  httplib::Client client = connect(server);
  const auto t = Clock::now();
  const std::string job = submit(client, server, body, wait);
  write_result(fetch(client, server, job, wait), out);
  std::fprintf(stderr, "[pfhe] encrypted result from %s (job %s) in %.2f s -> %s\n", server.c_str(), job.c_str(),
               seconds_since(t), out.c_str());
  return 0;
}

namespace {

std::string template_route(const std::string& name) {
  if (!TemplateStore::is_name(name)) throw std::invalid_argument("--name: 1 to 64 letters, digits, '_' and '-'");
  return "/v1/templates/" + name;
}

}  // namespace

int run_client_enroll(const std::string& server, const std::string& name, const std::string& embedding_path,
                      double wait) {
  const std::string route = template_route(name), body = read_whole(embedding_path);
  httplib::Client client = connect(server);
  std::printf("%s", expect_ok(send_with_retries([&] { return client.Put(route, body, kBinary); }, wait), server,
                              {201})
                        .c_str());
  return 0;
}

int run_client_match(const std::string& server, const std::string& name, const std::string& probe_path,
                     double threshold, const std::string& out, double wait) {
  if (!std::isfinite(threshold)) throw std::invalid_argument("--threshold must be a number");
  char text[64];
  std::snprintf(text, sizeof text, "%.17g", threshold);
  const std::string route = template_route(name) + "/match?threshold=" + text, body = read_whole(probe_path);
  httplib::Client client = connect(server);
  write_result(expect_ok(send_with_retries([&] { return client.Post(route, body, kBinary); }, wait), server), out);
  std::fprintf(stderr, "[pfhe] encrypted score against template '%s' -> %s\n", name.c_str(), out.c_str());
  return 0;
}

int run_client_forget(const std::string& server, const std::string& name, const std::string& key_set) {
  if (!JobQueue::is_job_id(key_set)) throw std::invalid_argument("--key-set: the 16 hex digits register printed");
  httplib::Client client = connect(server);
  std::printf("%s", expect_ok(client.Delete(template_route(name) + "?key_set=" + key_set), server).c_str());
  return 0;
}

}  // namespace pfhe::app
