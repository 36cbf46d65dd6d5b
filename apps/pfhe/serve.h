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
  std::size_t workers = 2;       // threads per inference (the thread executor)
  std::size_t max_requests = 2;  // inferences running at once; more are refused with 503
};
// Runs until killed. Registered key sets persist in state_dir/keys and are reloaded at
// start, so a restart loses none.
int run_serve(const ServeOptions& options);

// GETs the server's state (model kind, registered key sets, running inferences) as JSON.
int run_client_health(const std::string& server);
// Both ask again while the server is busy (HTTP 503) or unreachable (restarting), for up
// to `wait` seconds: requests are idempotent, so a restart of the service loses none.
// POSTs the evaluation-key file; prints the key-set tag the server registered.
int run_client_register(const std::string& server, const std::string& keys_path, double wait);
// POSTs encrypted input (from `pfhe encrypt`); writes the encrypted result to `out`.
int run_client_infer(const std::string& server, const std::string& input_path, const std::string& out,
                     double wait);

}  // namespace pfhe::app
