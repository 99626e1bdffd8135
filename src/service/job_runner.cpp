#include "service/job_runner.hpp"

#include <filesystem>

#include "indim/error.hpp"
#include "io/tar_writer.hpp"
#include "service/admission.hpp"
#include "service/api_error.hpp"
#include "service/job_request.hpp"

namespace fs = std::filesystem;

namespace indim::service {

namespace {

Attempt failed(const std::string& what, const char* error_class, int exit_code,
               const std::string& problem = "") {
  Attempt a;
  a.state = JobState::Failed;
  a.error = what;
  a.error_class = error_class;
  a.exit_code = exit_code;
  a.problem = problem;
  return a;
}

}  // namespace

AnalyzeOptions job_options(const Job& job, const RunContext& ctx) {
  const JobSpec spec = spec_from_json(job.request);
  const ServeOptions& s = ctx.serve;
  AnalyzeOptions o;
  o.base = ctx.roots.analyze_arg(spec.base);
  for (const auto& t : spec.tuned) o.tuned.push_back(ctx.roots.analyze_arg(t));
  o.hub_caches = ctx.roots.roots();
  o.files = &ctx.roots.files();  // every file beneath a root's descriptor, as checked
  apply_job_options(spec.options, o);
  o.out_dir = ctx.out_dir;
  o.resume = true;  // a job's folder holds only its own journal: a restart continues it
  o.backend = s.backend;
  o.devices = s.devices;
  o.streams = s.streams;
  o.gpu_mem = s.gpu_mem;
  o.workers = s.workers;
  o.cache_dir = s.no_cache            ? ""
                : s.cache_dir.empty() ? (fs::path(s.state_dir) / "cache").string()
                                      : s.cache_dir;
  o.cache_max = s.cache_max;
  o.memory = ctx.memory;
  o.observer = ctx.observer;
  o.cancel = ctx.cancel;
  const std::string id = job.id;
  const auto log = s.log;
  o.note = [id, log](const std::string& line) {
    if (log) log("job " + id + ": " + line);
  };
  return o;
}

namespace {

// A mitigate job: `indim mitigate` into the job's folder, its variant folders then packed into
// mitigation.tar (the folders stay for per-file use). It starts over on a restart.
Attempt run_mitigate(const Job& job, const RunContext& ctx) {
  MitigateOptions m;
  m.analysis = job_options(job, ctx);
  m.out_dir = ctx.out_dir;
  apply_mitigation_options(spec_from_json(job.request).options, m);
  admit(m.analysis, ctx.serve, &m);
  const MitigationResult r = mitigate(m);
  std::vector<std::string> files;
  for (const std::string& d : r.variant_dirs) {
    const std::vector<std::string> f =
        detail::files_under(ctx.out_dir, fs::path(d).filename().string());
    files.insert(files.end(), f.begin(), f.end());
  }
  detail::write_tar((fs::path(ctx.out_dir) / "mitigation.tar").string(), ctx.out_dir, files);
  Attempt a;
  a.seconds = r.seconds;
  return a;
}

}  // namespace

Attempt run_attempt(const Job& job, const RunContext& ctx) {
  try {
    if (spec_from_json(job.request).kind == "mitigate") return run_mitigate(job, ctx);
    const AnalyzeOptions o = job_options(job, ctx);
    admit(o, ctx.serve);
    const AnalyzeResult r = analyze(o);
    Attempt a;
    a.resumed_records = r.resumed;
    a.seconds = r.seconds;
    return a;
  } catch (const Cancelled& e) {
    Attempt a;
    a.state = JobState::Cancelled;
    a.error = e.what();
    return a;
  } catch (const ApiError& e) {  // a path gone, or resolving outside the roots now
    return failed(e.what(), "bad-input", kExitBadInput,
                  e.status() == 403 ? "forbidden" : "not-found");
  } catch (const UsageError& e) {
    return failed(e.what(), "usage", kExitUsage);
  } catch (const BadInput& e) {
    return failed(e.what(), "bad-input", kExitBadInput, input_problem_name(e.problem()));
  } catch (const std::exception& e) {
    return failed(e.what(), "runtime", kExitRuntime);
  }
}

}  // namespace indim::service
