// `indim serve`, `indim submit` and `indim jobs`: the service and its client on the command line.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "service/serve_options.hpp"

namespace indim::cli {

struct ClientFlags {
  std::string server;  ///< default $INDIM_SERVER, else http://127.0.0.1:8470
  std::string token_file;
  std::string ca_cert;  ///< trusted certificates for https (else the system's)
};

struct ServiceCommands {
  service::ServeOptions serve;
  std::string serve_token_file, tokens_file, cache_max = "20G", memory_max = "8G", job_memory;
  std::vector<std::string> admins;
  CLI::App* serve_cmd = nullptr;

  ClientFlags submit_client;
  AnalysisFlags job;
  std::string base, out = "results";
  std::vector<std::string> tuned;
  bool wait = false, quiet = false;
  CLI::App* submit_cmd = nullptr;

  ClientFlags jobs_client;
  std::string id, state, fetch_out;
  int limit = 20;
  bool purge = false;
  ClientFlags health_client;
  CLI::App* health_cmd = nullptr;

  CLI::App *jobs_cmd = nullptr, *ls = nullptr, *show = nullptr, *cancel = nullptr, *fetch = nullptr;
};

void add_service_commands(CLI::App& app, ServiceCommands& c);
/// Runs whichever of serve, submit and jobs was parsed; false in `ran` when none was. Throws
/// the library's errors, which the caller maps to exit codes.
int run_service_command(ServiceCommands& c, bool& ran);

}  // namespace indim::cli
