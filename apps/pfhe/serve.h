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
  // or "fork" / "mpi": each job slot's own inference process, or MPI job (app/inference_process.h)
  std::string executor = "threads";
  std::size_t workers = 2;        // threads shared by the running jobs (fork workers, MPI worker ranks per job)
  std::size_t retries = 1;        // fork: runs of a task again after its worker died
  std::string mpirun = "mpirun";  // mpi: the launcher
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
// Stores an encrypted embedding (an infer result) as the template `name` of its key set.
int run_client_enroll(const std::string& server, const std::string& name, const std::string& embedding_path,
                      double wait);
// Matches an encrypted embedding against its key set's template `name`; writes the
// encrypted score (squared distance minus the threshold) for `pfhe decrypt --score`.
int run_client_match(const std::string& server, const std::string& name, const std::string& probe_path,
                     double threshold, const std::string& out, double wait);
// Removes the template `name` of key set `key_set` (the tag register printed).
int run_client_forget(const std::string& server, const std::string& name, const std::string& key_set);

}  // namespace pfhe::app
