// The run, as a composition of its stages: check the options, build the workers, load and
// match the inputs, plan, run the plan over the workers (journalling each record), collect the
// results; analyze() then writes the reports.
#include "indim/analyze.hpp"

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>

#include "indim/error.hpp"
#include "io/dir_lock.hpp"
#include "io/regular_file.hpp"
#include "pipeline/auto_workers.hpp"
#include "pipeline/fanout.hpp"
#include "pipeline/inputs.hpp"
#include "pipeline/outputs.hpp"
#include "plan/regex.hpp"
#include "plan/shard.hpp"
#include "report/records.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

void validate(const AnalyzeOptions& o) {
  if (o.tuned.empty()) throw UsageError("analyze needs a base and at least one tuned checkpoint");
  if (o.out_dir.empty()) throw UsageError("--out must name a directory");
  if (o.k < 1) throw UsageError("--k must be at least 1");
  if (o.eps.empty()) throw UsageError("--eps needs at least one value");
  if (o.eps.size() > 64) throw UsageError("--eps takes at most 64 values");
  for (double e : o.eps)
    if (!(e > 0.0 && e <= 1.0)) throw UsageError("--eps values must lie in (0, 1]");
  if (o.workers < 0 || o.workers > 256)
    throw UsageError("--workers must be auto or lie in 1 ... 256");
  if (o.streams < 1 || o.streams > 16) throw UsageError("--streams must lie in 1 ... 16");
  if (o.devices.size() > 64) throw UsageError("--devices names at most 64 devices");
  for (int d : o.devices)
    if (d < 0) throw UsageError("--devices takes device numbers from 0");
  detail::compile_option_patterns(o.plot_matrices, "--plot-matrices");
  if (o.shard.count < 1 || o.shard.count > 4096 || o.shard.index < 0 ||
      o.shard.index >= o.shard.count)
    throw UsageError("--shard takes I/N with 0 <= I < N <= 4096");
}

// The workers, first: a flag they refuse is a usage error before any file is read.
std::vector<std::unique_ptr<Backend>> make_workers(const AnalyzeOptions& o) {
  std::vector<std::unique_ptr<Backend>> fleet;
  if (o.backend_factory) {
    const int n = o.workers > 0 ? o.workers : detail::auto_worker_cap();
    for (int w = 0; w < n; ++w) fleet.push_back(o.backend_factory());
    return fleet;
  }
  FleetOptions f;
  f.precision = o.precision;
  f.algo = o.algo;
  f.devices = o.devices;
  f.gpu_mem = o.gpu_mem;
  f.workers = o.workers > 0 ? o.workers : detail::auto_worker_cap();
  f.streams = o.streams;
  std::string note;
  fleet = make_fleet(o.backend, f, &note);
  if (!note.empty() && o.note) o.note(note);
  return fleet;
}

// Inputs are valid: only now is anything in --out touched, under a lock for the whole run.
std::unique_ptr<detail::DirLock> lock_out_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (detail::path_kind(dir) != detail::PathKind::Directory)
    throw Error(dir + ": cannot create the output directory" +
                (ec ? ": " + ec.message() : std::string()));
  return std::make_unique<detail::DirLock>(dir, "indim analyze");
}

// The base decomposition cache, or none when it is off or unusable (said once).
std::optional<DecompositionCache> open_cache(const AnalyzeOptions& o) {
  std::optional<DecompositionCache> cache;
  if (o.cache_dir.empty()) return cache;
  cache.emplace(o.cache_dir, o.cache_max);
  if (cache->unusable().empty()) return cache;
  if (o.note) o.note("warning: " + cache->unusable() + "; going on without the cache");
  return std::nullopt;
}

std::string cancelled_text(const AnalyzeResult& res, int finished, size_t units) {
  return "cancelled after " + std::to_string(finished) + " of " + std::to_string(units) +
         " units; " + res.journal + " holds the finished records, and the same command with " +
         "--resume completes the run";
}

// Everything but the reports; `lock` keeps --out locked for the caller.
AnalyzeResult run(const AnalyzeOptions& o, std::unique_ptr<detail::DirLock>& lock) {
  validate(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto note = [&](const std::string& s) {
    if (o.note) o.note(s);
  };
  std::vector<std::unique_ptr<Backend>> fleet = make_workers(o);
  for (auto& b : fleet) b->watch(o.cancel);
  const detail::RunInputs inputs(o, note);
  detail::Plan plan = detail::make_plan(inputs.base, inputs.tables, o.lowrank);
  detail::fit_workers(fleet, plan, o, note);

  AnalyzeResult res;
  res.eps = eps_grid(o.eps);
  res.backend = fleet.front()->name();
  res.header = detail::make_header(o, inputs, *fleet.front());
  if (o.shard.count > 1) {  // the whole plan is hashed and assigned, then this shard's kept
    res.header.shard = detail::make_shard_plan(plan, o.shard, detail::header_to_json(res.header));
    detail::keep_shard(plan, res.header.shard);
  }
  if (!lock) lock = lock_out_dir(o.out_dir);  // unless the caller holds it (indim mitigate)
  detail::output_paths(res, o);
  detail::Journal journal(res.journal, detail::header_to_json(res.header), o.resume);
  std::optional<DecompositionCache> cache = open_cache(o);
  std::atomic<bool> cache_writes{cache.has_value()};
  detail::RunState state(o, journal, plan);
  detail::BaseKeys base_keys(plan.entries.size());
  detail::UnitWork work{o, res.eps, cache ? &*cache : nullptr, cache_writes, state, base_keys};
  try {
    detail::run_fleet(fleet, plan, work);
  } catch (const Cancelled&) {  // stopped now, inside a unit: the finished ones are journalled
  }
  journal.start();  // a fully resumed or cancelled run still leaves the journal of this run
  if (state.units_finished() < static_cast<int>(plan.units()))
    throw Cancelled(cancelled_text(res, state.units_finished(), plan.units()));
  detail::collect_results(res, o, plan, state);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace

AnalyzeResult analyze_only(const AnalyzeOptions& o) {
  std::unique_ptr<detail::DirLock> lock;
  return run(o, lock);
}

namespace detail {

AnalyzeResult analyze_holding_lock(const AnalyzeOptions& o, std::unique_ptr<DirLock>& lock) {
  return run(o, lock);
}

}  // namespace detail

AnalyzeResult analyze(const AnalyzeOptions& o) {
  std::unique_ptr<detail::DirLock> lock;
  AnalyzeResult res = run(o, lock);
  detail::write_outputs_locked(res, o);
  return res;
}

}  // namespace indim
