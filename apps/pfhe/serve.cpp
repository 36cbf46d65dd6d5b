#include "serve.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <utility>

#include "ckks/checksum.h"
#include "ckks/serialization.h"
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

// The key sets clients registered, each checked against the model when it arrives and
// kept in state_dir/keys/<tag>.keys (written under a temporary name, then renamed, so a
// crash never leaves a half file under a key-set name).
class KeyRegistry {
 public:
  KeyRegistry(const runtime::ServedModel& model, fs::path dir) : model_(model), dir_(std::move(dir)) {
    fs::create_directories(dir_);
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const fs::path& path = entry.path();
      if (path.filename().string().rfind(".upload-", 0) == 0) {
        fs::remove(path);  // an upload a previous run did not finish
      } else if (path.extension() == ".keys") {
        auto set = std::make_shared<const runtime::KeySet>(model_, path.string());
        sets_.emplace(set->tag(), std::move(set));
      }
    }
  }

  // Checks the uploaded file and keeps it; returns its key-set tag.
  std::uint64_t add(const fs::path& upload) {
    std::shared_ptr<const runtime::KeySet> set;
    try {
      set = std::make_shared<const runtime::KeySet>(model_, upload.string());
    } catch (...) {
      fs::remove(upload);
      throw;
    }
    const std::uint64_t tag = set->tag();
    std::unique_lock lock(mutex_);
    if (sets_.count(tag)) {
      fs::remove(upload);
      return tag;
    }
    fs::rename(upload, dir_ / (ckks::checksum_hex(tag) + ".keys"));
    sets_.emplace(tag, std::move(set));
    return tag;
  }

  std::shared_ptr<const runtime::KeySet> find(std::uint64_t tag) const {
    std::shared_lock lock(mutex_);
    const auto it = sets_.find(tag);
    return it == sets_.end() ? nullptr : it->second;
  }

  std::size_t size() const {
    std::shared_lock lock(mutex_);
    return sets_.size();
  }

  fs::path upload_path() {
    return dir_ / (".upload-" + std::to_string(::getpid()) + "-" + std::to_string(uploads_++));
  }

 private:
  const runtime::ServedModel& model_;
  fs::path dir_;
  mutable std::shared_mutex mutex_;
  std::map<std::uint64_t, std::shared_ptr<const runtime::KeySet>> sets_;
  std::atomic<std::uint64_t> uploads_{0};
};

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
  } catch (const std::exception& e) {
    log("%s: refused: %s", what, e.what());
    reply_error(res, 400, e.what());
  }
}

// One more inference, unless max are running.
class InFlight {
 public:
  InFlight(std::atomic<std::size_t>& count, std::size_t max) : count_(count) {
    std::size_t now = count_.load();
    do {
      if (now >= max) return;
    } while (!count_.compare_exchange_weak(now, now + 1));
    admitted_ = true;
  }
  ~InFlight() {
    if (admitted_) --count_;
  }
  bool admitted() const { return admitted_; }

 private:
  std::atomic<std::size_t>& count_;
  bool admitted_ = false;
};

}  // namespace

int run_serve(const ServeOptions& o) {
  if (o.workers == 0 || o.max_requests == 0) throw std::invalid_argument("--workers and --max-requests must be >= 1");
  const auto start = Clock::now();
  log("loading parameters and model");
  const runtime::ServedModel model(o.params, o.model);
  KeyRegistry keys(model, fs::path(o.state_dir) / "keys");
  log("loaded in %.1f s: %s model, %zu registered key set(s)", seconds_since(start), model.graph() ? "graph" : "PatchCNN",
      keys.size());
  std::atomic<std::size_t> in_flight{0};

  httplib::Server server;
  server.set_payload_max_length(std::size_t{1} << 40);  // key uploads stream to disk
  // An inference's body is read into memory: one announced larger than any encrypted
  // input is refused before it is read.
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if (req.path != "/v1/infer" || req.get_header_value<std::uint64_t>("Content-Length") <= kMaxRequestBytes)
      return httplib::Server::HandlerResponse::Unhandled;
    reply_error(res, 413, "the encrypted input is too large");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_read_timeout(600, 0);
  server.set_write_timeout(600, 0);
  server.Get("/v1/health", [&](const httplib::Request&, httplib::Response& res) {
    const nlohmann::json j = {{"model", model.graph() ? "graph" : "patch_cnn"},
                              {"key_sets", keys.size()},
                              {"inferences_running", in_flight.load()},
                              {"max_requests", o.max_requests}};
    res.set_content(j.dump() + "\n", "application/json");
  });
  server.Post("/v1/keys", [&](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& reader) {
    guarded("key registration", res, [&] {
      const auto t = Clock::now();
      const fs::path upload = keys.upload_path();
      {
        std::ofstream out(upload, std::ios::binary);
        reader([&](const char* data, std::size_t length) {
          out.write(data, static_cast<std::streamsize>(length));
          return static_cast<bool>(out);
        });
        if (!out) throw std::runtime_error("cannot store the uploaded keys (disk full?)");
      }
      const std::uint64_t tag = keys.add(upload);
      log("registered key set %s in %.1f s", ckks::checksum_hex(tag).c_str(), seconds_since(t));
      res.set_content(nlohmann::json{{"key_set", ckks::checksum_hex(tag)}}.dump() + "\n", "application/json");
    });
  });
  server.Post("/v1/infer", [&](const httplib::Request& req, httplib::Response& res) {
    guarded("inference", res, [&] {
      if (req.body.size() > kMaxRequestBytes) return reply_error(res, 413, "the encrypted input is too large");
      const InFlight slot(in_flight, o.max_requests);
      if (!slot.admitted()) {
        res.set_header("Retry-After", "2");
        log("inference refused: %zu running (--max-requests)", o.max_requests);
        return reply_error(res, 503, "busy: " + std::to_string(o.max_requests) + " inferences running; retry later");
      }
      const auto t = Clock::now();
      const std::span<const std::uint8_t> body(reinterpret_cast<const std::uint8_t*>(req.body.data()), req.body.size());
      const runtime::CiphertextFile input = runtime::parse_ciphertext_file(body, model.context(), "the encrypted input");
      const auto set = keys.find(input.key_set);
      if (!set)
        return reply_error(res, 404, "unknown key set " + ckks::checksum_hex(input.key_set) +
                                         ": register the evaluation keys first (pfhe client register)");
      const auto executor = runtime::make_thread_executor(o.workers);
      const runtime::CiphertextFile result = set->infer(input, *executor);
      const ckks::Bytes bytes = runtime::ciphertext_file_bytes(set->output_context(), result);
      res.set_content(std::string(bytes.begin(), bytes.end()), kBinary);
      log("inference for key set %s in %.2f s", ckks::checksum_hex(input.key_set).c_str(), seconds_since(t));
    });
  });
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port));
  ckks::write_text_file((fs::path(o.state_dir) / "port").string(), std::to_string(port) + "\n");
  log("serving on http://%s:%d (%zu worker threads per inference, at most %zu at once)", o.host.c_str(), port,
      o.workers, o.max_requests);
  if (!server.listen_after_bind()) throw std::runtime_error("the server stopped listening");
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

// The body of a successful reply, or an error naming the server and its message.
std::string expect_ok(const httplib::Result& res, const std::string& server) {
  if (!res) throw std::runtime_error(server + ": " + httplib::to_string(res.error()));
  if (res->status != 200) {
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
                   httplib::to_string(res.error()).c_str(), wait);
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

int run_client_infer(const std::string& server, const std::string& input_path, const std::string& out, double wait) {
  std::ifstream in(input_path, std::ios::binary);
  if (!in) throw std::invalid_argument(input_path + ": cannot open");
  const std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  httplib::Client client = connect(server);
  const auto t = Clock::now();
  const std::string reply =
      expect_ok(send_with_retries([&] { return client.Post("/v1/infer", body, kBinary); }, wait), server);
  const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(reply.data()), reply.size());
  ckks::verify_trailer(bytes, "the server's reply");  // a damaged reply is not written as a result
  ckks::write_raw_file(out, bytes);
  std::fprintf(stderr, "[pfhe] encrypted result from %s in %.2f s -> %s\n", server.c_str(), seconds_since(t),
               out.c_str());
  return 0;
}

}  // namespace pfhe::app
