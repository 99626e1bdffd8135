#include "cli/service_cmds.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <thread>

#include "cli/client.hpp"
#include "cli/progress.hpp"
#include "cli/registry_help.hpp"
#include "indim/backend.hpp"
#include "indim/cache.hpp"
#include "indim/error.hpp"
#include "service/serve.hpp"

namespace indim::cli {

namespace {

using Json = nlohmann::json;
constexpr int kExitCancelled = 130;

std::string default_server() {
  const char* env = std::getenv("INDIM_SERVER");
  return env != nullptr && *env != '\0' ? env : "http://127.0.0.1:8470";
}

void add_client_flags(CLI::App* cmd, ClientFlags& f) {
  f.server = default_server();
  cmd->add_option("--server", f.server, "Service URL ($INDIM_SERVER)")->capture_default_str();
  cmd->add_option("--token-file", f.token_file,
                  "File holding the bearer token (else $INDIM_TOKEN)");
  cmd->add_option("--ca-cert", f.ca_cert, "PEM certificate(s) to trust for an https:// server");
}

void add_serve(CLI::App& app, ServiceCommands& c) {
  service::ServeOptions& o = c.serve;
  CLI::App* s = c.serve_cmd = app.add_subcommand("serve", "Run the batch service (HTTP/JSON API)");
  s->add_option("--listen", o.listen, "HOST:PORT to listen on (port 0: any free one)")
      ->capture_default_str();
  s->add_option("--root", o.roots, "Folder requests may read (repeatable)")->required();
  s->add_option("--state", o.state_dir, "Folder of the job database, job outputs and cache")
      ->required();
  s->add_option("--token-file", c.serve_token_file,
                "File holding the bearer token (else $INDIM_TOKEN): one tenant, who sees all jobs");
  s->add_option("--tokens", c.tokens_file,
                "File of tenants, one \"NAME TOKEN\" per line: each sees only its own jobs");
  s->add_option("--admins", c.admins, "Tenants of --tokens who see every job")->delimiter(',');
  s->add_option("--tls-cert", o.tls_cert, "PEM certificate: serve HTTPS");
  s->add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert");
  s->add_option("--backend", o.backend, "Compute backend: " + backends_help())
      ->capture_default_str()
      ->check(CLI::IsMember(backend_choices()));
  s->add_option("--devices", o.devices, "CUDA devices the jobs run on, e.g. 0,1")->delimiter(',');
  s->add_option("--streams", o.streams, "CUDA: matrices in flight per device")
      ->capture_default_str()
      ->check(in_range("--streams", 1, 16));
  s->add_option("--gpu-mem", o.gpu_mem, "GPU memory per device (K, M, G); 0: 90% of free")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/false));
  s->add_option("--workers", o.workers,
                "CPU backend: matrices decomposed in parallel, each on its share of the CPUs")
      ->capture_default_str()
      ->check(in_range("--workers", 1, 256));
  s->add_option("--cache", o.cache_dir, "Base decomposition cache (default: STATE/cache)");
  s->add_flag("--no-cache", o.no_cache, "No cache directory (memory still serves later jobs)");
  s->add_option("--cache-max", c.cache_max, "Cache size bound (K, M, G, T)")->capture_default_str();
  s->add_option("--memory-cache", c.memory_max,
                "Base decompositions kept in memory between jobs (K, M, G, T)")
      ->capture_default_str();
  s->add_option("--max-queued", o.max_queued, "Queued jobs beyond which submissions get 429")
      ->capture_default_str()
      ->check(in_range("--max-queued", 1, 1000000));
  s->add_option("--keep-days", o.keep_days, "Days a finished job's outputs are kept")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 36500.0));
  s->add_option("--keep-jobs", o.keep_jobs, "Ended jobs kept; the oldest beyond are removed")
      ->capture_default_str()
      ->check(in_range("--keep-jobs", 1, 10000000));
  s->add_option("--max-attempts", o.max_attempts,
                "Deaths of the service a job may be running in before it is failed")
      ->capture_default_str()
      ->check(in_range("--max-attempts", 1, 1000));
  s->add_option("--job-memory", c.job_memory,
                "Host memory a job may need (K, M, G, T); default: the node's physical memory");
  s->add_option("--http-threads", o.http_threads,
                "Requests handled at once (an idle or slow connection takes none)")
      ->capture_default_str()
      ->check(in_range("--http-threads", 2, 256));
  s->add_option("--http-timeout", o.timeout_s,
                "Seconds a client may take to send a request's header, its body, or to take "
                "each piece of an answer")
      ->capture_default_str()
      ->check(in_range("--http-timeout", 1, 3600));
  s->add_option("--max-connections", o.max_connections, "HTTP connections open at once")
      ->capture_default_str()
      ->check(in_range("--max-connections", 1, 100000));
  s->add_option("--max-client-connections", o.max_client_connections,
                "HTTP connections open at once from one address")
      ->capture_default_str()
      ->check(in_range("--max-client-connections", 1, 100000));
}

void add_submit(CLI::App& app, ServiceCommands& c) {
  CLI::App* s = c.submit_cmd = app.add_subcommand("submit", "Queue an analysis on a service");
  add_client_flags(s, c.submit_client);
  s->add_option("base", c.base, "Base checkpoint, as the service sees it")->required();
  s->add_option("tuned", c.tuned, "Fine-tuned checkpoint(s) or adapter folder(s)")->required();
  add_analysis_options(s, c.job);
  add_selection_options(s, c.job);
  s->add_flag("--wait", c.wait, "Follow the job's progress and download its outputs into --out");
  s->add_option("--out", c.out, "With --wait: folder for the outputs")->capture_default_str();
  s->add_flag("-q,--quiet", c.quiet, "Print only the job id");
}

void add_jobs(CLI::App& app, ServiceCommands& c) {
  CLI::App* j = c.jobs_cmd =
      app.add_subcommand("jobs", "List, show, cancel or fetch a service's jobs");
  j->require_subcommand(1);
  add_client_flags(j, c.jobs_client);
  c.ls = j->add_subcommand("ls", "Jobs, newest first");
  c.ls->add_option("--state", c.state, "Only jobs in this state")
      ->check(CLI::IsMember({"queued", "running", "done", "failed", "cancelled"}));
  c.ls->add_option("--limit", c.limit, "At most this many")
      ->capture_default_str()
      ->check(in_range("--limit", 1, 1000));
  c.show = j->add_subcommand("show", "One job as JSON");
  c.show->add_option("id", c.id, "Job id")->required();
  c.cancel = j->add_subcommand("cancel", "Cancel a queued or running job");
  c.cancel->add_option("id", c.id, "Job id")->required();
  c.cancel->add_flag("--purge", c.purge, "Also remove its outputs");
  c.fetch = j->add_subcommand("fetch", "Download a done job's outputs");
  c.fetch->add_option("id", c.id, "Job id")->required();
  c.fetch->add_option("--out", c.fetch_out, "Folder (default: indim-job-ID)");
  for (CLI::App* sub : {c.ls, c.show, c.cancel, c.fetch}) sub->fallthrough();
}

// For container health checks and scripts: no token, exit 0 when the workers are up.
void add_health(CLI::App& app, ServiceCommands& c) {
  c.health_cmd = app.add_subcommand(
      "health", "Ask a service's /healthz; exit 0 when its workers are up, else 3 (no token)");
  c.health_client.server = default_server();
  c.health_cmd->add_option("--server", c.health_client.server, "Service URL ($INDIM_SERVER)")
      ->capture_default_str();
  c.health_cmd->add_option("--ca-cert", c.health_client.ca_cert,
                           "PEM certificate(s) to trust for an https:// server");
}

int cmd_health(const ClientFlags& f) {
  ServiceClient client(f.server, "", f.ca_cert);
  std::string status;
  const bool up = client.healthy(status);
  std::cout << status << "\n";
  return up ? kExitOk : kExitRuntime;
}

service::ServeOptions serve_options(ServiceCommands& c) {
  service::ServeOptions o = c.serve;
  if (!c.tokens_file.empty()) {
    if (!c.serve_token_file.empty())
      throw UsageError("--tokens and --token-file: give one (a single token is one tenant)");
    o.tenants = service::read_tenants(c.tokens_file);
    service::mark_admins(o.tenants, c.admins);
  } else {
    if (!c.admins.empty()) throw UsageError("--admins names tenants of --tokens");
    o.tenants = {{service::kDefaultTenant, read_token(c.serve_token_file), true}};
  }
  if (!c.job_memory.empty())
    o.job_memory = DecompositionCache::parse_size(c.job_memory, "--job-memory");
  o.cache_max = DecompositionCache::parse_size(c.cache_max, "--cache-max");
  o.memory_max = DecompositionCache::parse_size(c.memory_max, "--memory-cache");
  o.log = [](const std::string& line) {
    char when[32];
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::cerr << when << " indim serve: " << line << std::endl;
  };
  return o;
}

std::string progress_label(const Json& job) {
  return job.value("state", "") + " " + job.at("id").get<std::string>();
}

// Follows a job to its end, through drains and restarts of the service (it retries a minute).
Json wait_for(ServiceClient& client, const std::string& id, bool quiet) {
  ProgressBar bar;
  Json last;
  for (int failures = 0;;) {
    try {
      last = client.follow(id, [&](const Json& job) {
        const Json& p = job.at("progress");
        if (!quiet)
          bar.show(p.value("units_done", 0), p.value("units_total", 0), p.value("fraction", 0.0),
                   p["eta_seconds"].is_number() ? p["eta_seconds"].get<double>() : 0.0,
                   progress_label(job));
      });
      failures = 0;
    } catch (const Error& e) {
      if (++failures > 30) throw;
    }
    if (last.is_object() && last.value("state", "") != "queued" &&
        last.value("state", "") != "running")
      break;
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  bar.finish();
  return client.job(id);  // the final figures, with the outputs' links
}

int finished_job(ServiceClient& client, const Json& job, const std::string& out) {
  const std::string state = job.value("state", "");
  const std::string id = job.at("id").get<std::string>();
  if (state == "failed") {
    std::cerr << "indim: job " << id << " failed (" << job["error"].value("class", "")
              << "): " << job["error"].value("message", "") << "\n";
    return job["error"].value("exit_code", kExitRuntime);
  }
  if (state == "cancelled") {
    std::cerr << "indim: job " << id << " was cancelled\n";
    return kExitCancelled;
  }
  std::cout << "job " << id << " done; wrote";
  for (const auto& path : fetch_outputs(client, job, out)) std::cout << " " << path;
  std::cout << "\n";
  return kExitOk;
}

int cmd_submit(ServiceCommands& c) {
  ServiceClient client(c.submit_client.server, read_token(c.submit_client.token_file),
                       c.submit_client.ca_cert);
  const Json req = {{"base", c.base}, {"tuned", c.tuned}, {"options", to_job_options(c.job)}};
  const Json accepted = client.submit(req);
  const std::string id = accepted.at("id").get<std::string>();
  std::cout << id << std::endl;
  if (!c.wait) return kExitOk;
  return finished_job(client, wait_for(client, id, c.quiet), c.out);
}

std::string when_text(const Json& v) { return v.is_string() ? v.get<std::string>() : "-"; }

int cmd_jobs(ServiceCommands& c) {
  ServiceClient client(c.jobs_client.server, read_token(c.jobs_client.token_file),
                       c.jobs_client.ca_cert);
  if (c.ls->parsed()) {
    const Json list = client.list(c.state, c.limit);
    std::printf("%-16s  %-9s  %-20s  %6s  %s\n", "ID", "STATE", "CREATED", "DONE", "BASE");
    for (const Json& j : list.at("jobs"))
      std::printf("%-16s  %-9s  %-20s  %5.1f%%  %s\n", j.value("id", "").c_str(),
                  j.value("state", "").c_str(), when_text(j["created"]).c_str(),
                  100.0 * j["progress"].value("fraction", 0.0), j.value("base", "").c_str());
    return kExitOk;
  }
  if (c.show->parsed()) {
    std::cout << client.job(c.id).dump(2) << "\n";
    return kExitOk;
  }
  if (c.cancel->parsed()) {
    const Json j = client.cancel(c.id, c.purge);
    std::cout << "job " << c.id << ": " << j.value("state", "")
              << (j.value("state", "") == "running" ? " (stops after its units in flight)" : "")
              << "\n";
    return kExitOk;
  }
  const Json job = client.job(c.id);
  if (job.value("state", "") != "done")
    throw UsageError("job " + c.id + " is " + job.value("state", "") +
                     "; fetch it once it is done");
  return finished_job(client, job, c.fetch_out.empty() ? "indim-job-" + c.id : c.fetch_out);
}

}  // namespace

void add_service_commands(CLI::App& app, ServiceCommands& c) {
  add_serve(app, c);
  add_submit(app, c);
  add_jobs(app, c);
  add_health(app, c);
}

int run_service_command(ServiceCommands& c, bool& ran) {
  ran = true;
  if (*c.serve_cmd) return service::serve(serve_options(c));
  if (*c.submit_cmd) return cmd_submit(c);
  if (*c.jobs_cmd) return cmd_jobs(c);
  if (*c.health_cmd) return cmd_health(c.health_client);
  ran = false;
  return kExitOk;
}

}  // namespace indim::cli
