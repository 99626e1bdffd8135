// indim command line: analyze, merge, mitigate, inspect, demo, cache, bench, serve, submit, jobs,
// health. Exit codes: 0 ok, 1 usage, 2 bad input, 3 runtime failure, 4 --fail-on-intruders
// exceeded, 130 interrupted (resumable).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "cli/bench.hpp"
#include "cli/interrupt.hpp"
#include "cli/merge_cmd.hpp"
#include "cli/mitigate_cmd.hpp"
#include "cli/options.hpp"
#include "cli/progress.hpp"
#include "cli/registry_help.hpp"
#include "cli/service_cmds.hpp"
#include "indim/demo.hpp"
#include "indim/hub.hpp"
#include "indim/indim.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

constexpr int kExitIntruders = 4;
constexpr int kExitInterrupted = 130;  // 128 + SIGINT, as shells report it

struct AnalyzeArgs : cli::AnalysisFlags {
  std::string base;
  std::vector<std::string> tuned;
  std::string out = "results";
  std::string backend = "auto";
  bool resume = false;
  std::string shard;
  std::string cache = DecompositionCache::default_dir();
  bool no_cache = false;
  std::string cache_max = "20G";
  std::vector<int> devices;
  uint64_t gpu_mem = 0;
  std::string workers = "auto";
  int streams = 1;
  bool quiet = false;
  int fail_on = -1;
};

void add_compute_options(CLI::App* cmd, AnalyzeArgs& a) {
  cli::add_analysis_options(cmd, a);
  cmd->add_option("--backend", a.backend, "Compute backend: " + cli::backends_help())
      ->capture_default_str()
      ->check(CLI::IsMember(backend_choices()));
  cmd->add_option("--devices", a.devices, "CUDA devices to spread matrices over, e.g. 0,1,2,3")
      ->delimiter(',');
  cmd->add_option("--gpu-mem", a.gpu_mem,
                  "GPU memory per device for one decomposition (K, M, G: powers of 1024); 0: 90% "
                  "of free")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/false));
  cmd->add_option("--streams", a.streams,
                  "CUDA backend: matrices in flight per device, each on its own stream, sharing "
                  "the device's --gpu-mem")
      ->capture_default_str()
      ->check(cli::in_range("--streams", 1, 16));
  cmd->add_option("--workers", a.workers,
                  "CPU backend: matrices decomposed in parallel, each on its share of the CPUs; "
                  "auto: from the matrix sizes, the cores and the memory")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto"}) | cli::in_range("--workers", 1, 256));
  cmd->add_option("--cache", a.cache, "Base decomposition cache directory")->capture_default_str();
  cmd->add_flag("--no-cache", a.no_cache, "Neither read nor write the cache");
  cmd->add_option("--cache-max", a.cache_max, "Cache size bound (K, M, G, T); LRU eviction")
      ->capture_default_str();
}

AnalyzeOptions to_options(const AnalyzeArgs& a) {
  AnalyzeOptions o;
  o.base = a.base;
  o.tuned = a.tuned;
  o.out_dir = a.out;
  o.k = a.k;
  o.eps = a.eps;
  o.precision = a.precision == "fp64" ? Precision::F64 : Precision::F32;
  o.side = parse_side(a.side).value_or(Side::Left);  // CLI11 admits only the three names
  o.backend = a.backend;
  o.algo = a.algo;
  o.select.include = a.include;
  o.select.exclude = a.exclude;
  o.select.split_fused = a.split_fused;
  o.delta = a.delta;
  o.noise_floor = cli::noise_floor_mode(a.noise_floor, a.no_noise_floor);
  o.lowrank = !a.no_lowrank;
  o.lowrank_tol = a.lowrank_tol;
  o.resume = a.resume;
  if (!a.shard.empty()) o.shard = parse_shard(a.shard);
  o.cache_dir = a.no_cache ? std::string() : a.cache;
  o.cache_max = DecompositionCache::parse_size(a.cache_max);
  o.devices = a.devices;
  o.gpu_mem = a.gpu_mem;
  o.workers = a.workers == "auto" ? 0 : std::stoi(a.workers);
  o.streams = a.streams;
  o.html = a.html;
  o.plot_matrices = a.plot_matrices;
  o.plot_top = a.plot_top;
  o.note = [](const std::string& s) { std::cerr << s << "\n"; };
  return o;
}

// The run with the progress bar as its observer; a first Ctrl-C cancels it between units.
AnalyzeResult run_with_progress(AnalyzeOptions o) {
  cli::ProgressBar bar;
  cli::InterruptScope interrupt;
  o.observer = &bar;
  o.cancel = &interrupt.token();
  try {
    AnalyzeResult r = analyze(o);
    bar.finish();
    return r;
  } catch (...) {
    bar.finish();
    throw;
  }
}

int total_at(const AnalyzeResult& r, double eps) {
  int n = 0;
  for (const auto& m : r.records) n += m.count_at(eps);
  return n;
}

int cmd_analyze(const AnalyzeArgs& a) {
  AnalyzeResult r = run_with_progress(to_options(a));
  if (!a.quiet) std::cout << format_summary(r, a.eps.front(), a.k);
  std::cout << "\nwrote " << r.report_json << ", " << r.matrices_csv << ", " << r.journal;
  if (!r.report_html.empty()) std::cout << ", " << r.report_html;
  if (r.resumed > 0) std::cout << " (" << r.resumed << " records resumed from the journal)";
  std::cout << "\n";
  if (a.fail_on >= 0 && total_at(r, a.eps.front()) > a.fail_on) {
    std::cerr << "indim: " << total_at(r, a.eps.front()) << " intruder dimensions at eps "
              << eps_key(a.eps.front()) << " exceed --fail-on-intruders " << a.fail_on << "\n";
    return kExitIntruders;
  }
  return kExitOk;
}

void print_checkpoint_line(const std::string& path, const Checkpoint& c) {
  for (const auto& w : c.warnings()) std::cerr << "warning: " << w << "\n";
  std::printf("%s: %s, %zu file(s), %zu tensors, %llu bytes\n", path.c_str(), c.kind().c_str(),
              c.files().size(), c.tensors().size(),
              static_cast<unsigned long long>(c.total_bytes()));
}

// How a tensor is stored, when it is not plain: quantised (format and scale) or not analysable.
std::string format_note(const TensorRef& ref) {
  if (ref.quant != nullptr) return "  (" + ref.quant->describe() + ")";
  return dtype_is_analysable(ref.info->dtype) ? "" : "  (dtype not analysable)";
}

void print_scale_tensors(const Checkpoint& c) {
  if (c.scale_tensors().empty()) return;
  std::printf("scale tensors, paired with their weights and not analysed: %zu\n",
              c.scale_tensors().size());
}

// A path as is; a hub id resolved, saying what it resolved to.
std::string resolved_path(const std::string& arg) {
  const InputPath p = resolve_input(arg);
  if (!p.hub) return p.path;
  const HubModel& m = *p.hub;
  const std::string sub = m.subfolder.empty() ? "" : ", subfolder " + m.subfolder;
  std::printf("%s: hub repo %s, revision %s, commit %s%s\n  %s\n  files:", arg.c_str(),
              m.repo.c_str(), m.revision.c_str(), m.commit.c_str(), sub.c_str(), m.path.c_str());
  for (const auto& f : m.files) std::printf(" %s", f.c_str());
  std::printf("\n");
  return p.path;
}

int cmd_inspect(const std::string& base_arg, const std::string& tuned_arg,
                const SelectOptions& select) {
  const std::string base_path = resolved_path(base_arg);
  const std::string tuned_path = tuned_arg.empty() ? "" : resolved_path(tuned_arg);
  Checkpoint base = Checkpoint::open(base_path);
  print_checkpoint_line(base_path, base);
  const ModelLayout layout = detect_layout(base);
  std::printf("%s\n", layout.describe().c_str());
  if (tuned_path.empty()) {
    for (const auto& [name, ref] : base.tensors())
      std::printf("  %-60s %-8s %-18s%s%s\n", name.c_str(), dtype_name(ref.info->dtype),
                  shape_text(ref.info->shape).c_str(), format_note(ref).c_str(),
                  layout.is_conv1d(name) ? "  (Conv1D [in, out])" : "");
    print_scale_tensors(base);
    return kExitOk;
  }
  TunedInput tuned = TunedInput::open(tuned_path);
  print_checkpoint_line(tuned_path, tuned.checkpoint());
  if (const Adapter* a = tuned.adapter()) {
    const LoraConfig& c = a->config();
    for (const auto& w : c.warnings) std::cerr << "warning: " << w << "\n";
    std::printf(
        "PEFT LoRA adapter: r=%d, lora_alpha=%g%s%s, %zu adapted modules, %zu full "
        "tensors\n",
        c.r, c.alpha, c.use_rslora ? ", rsLoRA" : "", c.use_dora ? ", DoRA" : "",
        a->modules().size(), a->full_tensors().size());
  }
  MatchTable t = tuned.match(base, select, layout);
  int selected = 0, mismatched = 0;
  std::printf("\nmatched (%zu):\n", t.pairs.size());
  for (const auto& p : t.pairs) {
    const char* mark = !p.shapes_equal ? "SHAPE" : p.selected ? "yes" : "-";
    selected += p.selected && p.shapes_equal ? 1 : 0;
    mismatched += p.shapes_equal ? 0 : 1;
    std::string note = p.tuned_name == p.base_name ? "" : "  <- " + p.tuned_name;
    if (p.lora != nullptr) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "  LoRA r=%d scale=%g%s%s", p.lora->r, p.lora->scale,
                    p.lora->magnitude ? " DoRA" : "", p.lora->embedding ? " embedding" : "");
      note += buf;
    }
    if (p.conv1d) note += "  Conv1D [in, out], analysed transposed";
    if (p.base.quant != nullptr) note += "  base" + format_note(p.base);
    if (p.tuned.quant != nullptr) note += "  tuned" + format_note(p.tuned);
    if (!p.parts.empty()) {
      note += "  parts:";
      for (size_t i = 0; i < p.parts.size() && i < 6; ++i) note += " " + p.parts[i].label;
      if (p.parts.size() > 6) note += " ... (" + std::to_string(p.parts.size()) + ")";
    }
    std::string shapes = shape_text(p.base.info->shape);
    if (!p.shapes_equal) shapes += " vs " + shape_text(p.tuned.info->shape);
    std::printf("  %-5s %-55s %-5s/%-5s %-16s %s%s\n", mark, p.base_name.c_str(),
                dtype_name(p.base.info->dtype), dtype_name(p.tuned.info->dtype), shapes.c_str(),
                p.reason.c_str(), note.c_str());
  }
  if (!tuned.is_adapter()) {
    std::printf("\nbase only (%zu):\n", t.base_only.size());
    for (const auto& n : t.base_only) std::printf("  %s\n", n.c_str());
  }
  std::printf("\ntuned only (%zu):\n", t.tuned_only.size());
  for (const auto& n : t.tuned_only) std::printf("  %s\n", n.c_str());
  std::printf("\n%d selected for analysis, %d shape mismatches\n", selected, mismatched);
  return kExitOk;
}

int cmd_cache(const std::string& dir, bool ls, bool clear) {
  if (!std::filesystem::is_directory(dir)) {
    std::printf("%s: no cache yet\n", dir.c_str());
    return kExitOk;
  }
  DecompositionCache cache(dir, UINT64_MAX);
  if (clear) {
    std::printf("%s: removed %d entries\n", dir.c_str(), cache.clear());
    return kExitOk;
  }
  (void)ls;
  uint64_t total = 0;
  for (const auto& e : cache.list()) {
    char when[32];
    const std::time_t t = static_cast<std::time_t>(e.mtime / 1000000000);
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::localtime(&t));
    std::printf("%s  %10.1f MB  %s  %s\n", e.key.c_str(), e.bytes / 1e6, when, e.label.c_str());
    total += e.bytes;
  }
  std::printf("%zu entries, %.1f MB in %s\n", cache.list().size(), total / 1e6, dir.c_str());
  return kExitOk;
}

int cmd_demo(const std::string& dir, AnalyzeArgs a, const DemoOptions& opts) {
  std::cout << "indim demo: writing a generated Llama-style base, a full fine-tune and a LoRA "
               "fine-tune ("
            << dtype_name(opts.dtype) << " safetensors) to " << dir << "\n";
  DemoPaths p = generate_demo(dir, opts);
  a.base = p.base;
  a.tuned = {p.full, p.lora};
  a.out = (fs::path(dir) / "results").string();
  a.html = true;
  AnalyzeResult r = run_with_progress(to_options(a));
  std::cout << "\n" << format_summary(r, a.eps.front(), a.k);
  const double eps = a.eps.front();
  int full = 0, lora = 0, lora_mats = 0;
  for (const auto& m : r.records) {
    (m.tuned_index == 0 ? full : lora) += m.count_at(eps);
    if (m.tuned_index == 1 && m.count_at(eps) > 0) ++lora_mats;
  }
  std::cout << "\n[0] full fine-tune: " << full << " intruder dimensions\n"
            << "[1] LoRA fine-tune: " << lora << " intruder dimensions, in " << lora_mats
            << " matrices (the LoRA touched q_proj and v_proj)\n"
            << "\nwrote " << r.report_json << ", " << r.matrices_csv << " and " << r.report_html
            << " (open it in a browser)\n"
            << "next: indim analyze " << p.base << " " << p.lora << " --out my-results\n";
  return kExitOk;
}

// Every subcommand's parsed arguments and its CLI11 handle.
struct Commands {
  AnalyzeArgs a;
  CLI::App* analyze_cmd = nullptr;
  std::string ibase, ituned;
  SelectOptions isel;
  CLI::App* inspect_cmd = nullptr;
  std::string demo_dir = "indim-demo";
  AnalyzeArgs d;
  DemoOptions demo_opts;
  std::string demo_dtype = "BF16";
  CLI::App* demo_cmd = nullptr;
  std::string cache_dir = DecompositionCache::default_dir();
  CLI::App *cache_cmd = nullptr, *cache_ls = nullptr, *cache_clear = nullptr;
  cli::BenchArgs bench;
  CLI::App* bench_cmd = nullptr;
  cli::ServiceCommands service;
  cli::MergeCommand merge;
  AnalyzeArgs m;  // mitigate's analysis and compute flags
  cli::MitigateCommand mitigate;
};

void add_analyze(CLI::App& app, Commands& c) {
  c.analyze_cmd = app.add_subcommand("analyze", "Compare fine-tunes against their base");
  c.analyze_cmd
      ->add_option("base", c.a.base,
                   "Base checkpoint: file, shard index, directory, or hub id ORG/NAME[@REV]")
      ->required();
  c.analyze_cmd
      ->add_option("tuned", c.a.tuned,
                   "Fine-tuned checkpoint(s) or adapter folder(s), paths or hub ids")
      ->required();
  c.analyze_cmd->add_option("--out", c.a.out, "Output directory")->capture_default_str();
  add_compute_options(c.analyze_cmd, c.a);
  cli::add_selection_options(c.analyze_cmd, c.a);
  c.analyze_cmd->add_flag("--resume", c.a.resume, "Skip matrices already in the journal");
  c.analyze_cmd->add_option("--shard", c.a.shard,
                            "Run shard I of N (I from 0): a cost-balanced slice of the base "
                            "matrices; `indim merge` combines the shards' --out folders");
  c.analyze_cmd->add_flag("-q,--quiet", c.a.quiet, "No summary table");
  c.analyze_cmd
      ->add_option("--fail-on-intruders", c.a.fail_on,
                   "Exit 4 when the total at the primary eps exceeds N")
      ->check(cli::in_range("--fail-on-intruders", 0, 2147483647));
}

void add_mitigate(CLI::App& app, Commands& c) {
  CLI::App* cmd = c.mitigate.cmd = app.add_subcommand(
      "mitigate",
      "Scale a fine-tune's intruder dimensions by lambda (and write the controls): one "
      "checkpoint or PEFT adapter folder per variant and lambda");
  cmd->add_option("base", c.m.base, "Base checkpoint: file, shard index, directory, or hub id")
      ->required();
  cmd->add_option("tuned", c.m.tuned, "The fine-tuned checkpoint or PEFT adapter folder")
      ->required()
      ->expected(1);
  c.m.out = "mitigated";
  cmd->add_option("--out", c.m.out, "Output directory: one folder per variant and lambda")
      ->capture_default_str();
  add_compute_options(cmd, c.m);
  cli::add_mitigate_options(cmd, c.mitigate);
}

void add_inspect(CLI::App& app, Commands& c) {
  c.inspect_cmd = app.add_subcommand("inspect", "List tensors, or the base/tuned match table");
  c.inspect_cmd->add_option("base", c.ibase, "Checkpoint")->required();
  c.inspect_cmd->add_option("tuned", c.ituned, "Fine-tuned checkpoint to match against the base");
  c.inspect_cmd->add_option("--include", c.isel.include, "Regex of base tensor names to analyse");
  c.inspect_cmd->add_option("--exclude", c.isel.exclude, "Regex of base tensor names to skip");
  c.inspect_cmd->add_flag("--split-fused", c.isel.split_fused, "Show how fused weights are split");
}

void add_demo(CLI::App& app, Commands& c) {
  c.demo_cmd = app.add_subcommand("demo",
                                  "Generate a base, a full and a LoRA fine-tune, and analyse "
                                  "them");
  c.demo_cmd->add_option("--out", c.demo_dir, "Directory for the generated files and results")
      ->capture_default_str();
  add_compute_options(c.demo_cmd, c.d);
  c.demo_cmd->add_option("--hidden", c.demo_opts.hidden, "Hidden size")->capture_default_str();
  c.demo_cmd->add_option("--intermediate", c.demo_opts.intermediate, "MLP size")
      ->capture_default_str();
  c.demo_cmd->add_option("--kv-dim", c.demo_opts.kv_dim, "k/v projection rows")
      ->capture_default_str();
  c.demo_cmd->add_option("--layers", c.demo_opts.layers, "Transformer blocks")
      ->capture_default_str();
  c.demo_cmd->add_option("--lora-rank", c.demo_opts.lora_rank, "Rank of the LoRA update")
      ->capture_default_str();
  c.demo_cmd->add_option("--dtype", c.demo_dtype, "Stored dtype")
      ->capture_default_str()
      ->check(CLI::IsMember({"BF16", "F16", "F32"}));
}

void add_cache(CLI::App& app, Commands& c) {
  c.cache_cmd = app.add_subcommand("cache", "List or clear the base decomposition cache");
  c.cache_cmd->require_subcommand(1);
  c.cache_cmd->add_option("--cache", c.cache_dir, "Cache directory")->capture_default_str();
  c.cache_ls = c.cache_cmd->add_subcommand("ls", "List cached decompositions, newest first");
  c.cache_clear = c.cache_cmd->add_subcommand("clear", "Remove every cached decomposition");
  c.cache_ls
      ->fallthrough();  // `indim cache ls --cache DIR` as well as `indim cache --cache DIR ls`
  c.cache_clear->fallthrough();
}

void add_bench(CLI::App& app, Commands& c) {
  c.bench_cmd = app.add_subcommand(
      "bench", "Time backends and algorithms on generated matrices, with their accuracy");
  c.bench_cmd->add_option("--shapes", c.bench.shapes, "OUTxIN shapes, comma separated")
      ->delimiter(',')
      ->capture_default_str();
  c.bench_cmd->add_option("--runs", c.bench.runs, "backend:algorithm runs, comma separated")
      ->delimiter(',')
      ->capture_default_str();
  c.bench_cmd->add_option("--precision", c.bench.precision, "Working precision of the runs")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp64"}));
  c.bench_cmd
      ->add_option("--reference", c.bench.reference,
                   "fp64 reference for accuracy: cpu (gesdd), cuda (gram64) or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "none"}));
  c.bench_cmd->add_option("--k", c.bench.k, "Top tuned vectors compared")->capture_default_str();
  c.bench_cmd->add_option("--reps", c.bench.reps, "Repetitions; the best time counts")
      ->capture_default_str();
  c.bench_cmd->add_option("--json", c.bench.json, "Also write the rows as JSON to this file");
}

// The parsed subcommand, run; exceptions become the documented exit codes.
int run_parsed(Commands& c) {
  try {
    bool ran = false;
    const int rc = cli::run_service_command(c.service, ran);
    if (ran) return rc;
    if (*c.analyze_cmd) return cmd_analyze(c.a);
    if (*c.merge.cmd) return cli::run_merge(c.merge);
    if (*c.mitigate.cmd) return cli::run_mitigate(c.mitigate, to_options(c.m));
    if (*c.inspect_cmd) return cmd_inspect(c.ibase, c.ituned, c.isel);
    if (*c.bench_cmd) return cli::run_bench(c.bench);
    if (*c.cache_cmd) return cmd_cache(c.cache_dir, c.cache_ls->parsed(), c.cache_clear->parsed());
    if (*c.demo_cmd) {
      c.demo_opts.dtype = *parse_dtype(c.demo_dtype);
      return cmd_demo(c.demo_dir, c.d, c.demo_opts);
    }
  } catch (const UsageError& e) {
    std::cerr << "indim: usage error: " << e.what() << "\n";
    return kExitUsage;
  } catch (const Cancelled& e) {
    std::cerr << "indim: interrupted: " << e.what() << "\n";
    return kExitInterrupted;
  } catch (const BadInput& e) {
    std::cerr << "indim: bad input: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "indim: error: " << e.what() << "\n";
    return kExitRuntime;
  }
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  indim::keep_freed_memory();
  CLI::App app{"indim: find intruder dimensions in fine-tuned checkpoints"};
  app.set_version_flag("--version", std::string(INDIM_VERSION));
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 usage error, 2 bad input, 3 runtime failure, 4 intruders above "
      "--fail-on-intruders, 130 interrupted (Ctrl-C; the journal resumes with --resume).");
  Commands c;
  add_analyze(app, c);
  cli::add_merge_command(app, c.merge);
  add_mitigate(app, c);
  add_inspect(app, c);
  add_demo(app, c);
  add_cache(app, c);
  add_bench(app, c);
  cli::add_service_commands(app, c.service);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  return run_parsed(c);
}
