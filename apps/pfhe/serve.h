// `pfhe serve` and `pfhe client`: the server side as a long-running HTTP service (Debian's
// cpp-httplib) that loads the model once and serves many clients, each with its own
// evaluation keys, and the client commands that talk to it. docs/CLI.md, "Service".
#pragma once
#include <cstddef>
#include <string>

namespace pfhe::app {

struct ServeOptions {
  std::string params, model, state_dir, host = "127.0.0.1";
  int port = 8750;               // 0: any free port (printed, and written to state_dir/port)
  std::string executor = "threads";  // or "fork": each job slot's own inference process (app/inference_process.h)
  std::size_t workers = 2;       // threads (or fork workers) per job
  std::size_t retries = 1;       // fork: runs of a task again after its worker died
  std::size_t max_requests = 2;  // jobs running at once
  std::size_t max_queue = 16;    // jobs waiting or running; more are refused with 503
  std::size_t max_loaded_keys = 4;  // key sets kept mapped (the rest are mapped when a job needs them)
  double keep_jobs_seconds = 86400;  // a finished job's input and result stay this long (0: forever)
};
// Runs until SIGTERM or SIGINT, then drains (running jobs finish). Registered key sets
// persist in state_dir/keys and accepted jobs in state_dir/jobs (a journal): a restart
// loses neither, and runs the jobs that had not finished.
int run_serve(const ServeOptions& options);

// GETs the server's state (model kind, registered key sets, jobs queued and running) as JSON.
int run_client_health(const std::string& server);
// GETs the server's counters (jobs accepted, done, failed; seconds per stage) as JSON.
int run_client_metrics(const std::string& server);
// Every command asks again while the server is busy (HTTP 503) or unreachable
// (restarting), for up to `wait` seconds: requests are idempotent (the same input is the
// same job; the same keys register under the same tag), so a restart loses nothing and
// duplicates nothing.
// POSTs the evaluation-key file; prints the key-set tag the server registered.
int run_client_register(const std::string& server, const std::string& keys_path, double wait);
// Submits encrypted input (from `pfhe encrypt`); prints the job id.
int run_client_submit(const std::string& server, const std::string& input_path, double wait);
// Prints a job's state as JSON.
int run_client_status(const std::string& server, const std::string& job);
// Waits for the job (its state changes on stderr) and writes its encrypted result.
int run_client_fetch(const std::string& server, const std::string& job, const std::string& out, double wait);
// submit, then fetch.
int run_client_infer(const std::string& server, const std::string& input_path, const std::string& out,
                     double wait);

}  // namespace pfhe::app
