// The exact low-rank route on one Llama-shaped layer (q/k/v/o 2048 x 2048, gate/up 5504 x 2048,
// down 2048 x 5504; bf16 base with a decaying spectrum; PEFT adapters on all seven, fp32
// factors): for each rank, the adapter by the low-rank route against the same adapter merged
// (the full route, --no-lowrank), both with the base's decompositions cached; then the rank
// sweep's adapters in one run against separate merged runs. Prints a Markdown table: seconds
// per run, the speed-up, the per-shape seconds of one matrix, and the agreement (counts equal
// at every eps, max |maxcos difference| over the top k).
// --backend picks the backend of every run (cuda on a GPU node: the merged side then takes the
// device's full route, the adapter the low-rank route as that backend runs it). --layers L
// stacks L such layers (a model's steady state: the route's workspaces are touched once per
// run); the table then gives seconds per layer. --workers N runs both routes with N workers
// (on the CPU each on its share of the cores).
//   indim_bench_lowrank [--ranks 1,8,16,64,256] [--dir D] [--precision fp32|fp64]
//                       [--backend cpu|cuda] [--layers L] [--workers N] [--json F]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/safetensors.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

struct Args {
  std::vector<int> ranks{1, 8, 16, 64, 256};
  std::string dir = "bench-lowrank";
  Precision precision = Precision::F32;
  std::string backend = "cpu";
  int layers = 1;
  int workers = 1;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--ranks") {
      a.ranks.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) a.ranks.push_back(std::max(1, std::stoi(t)));
    } else if (k == "--dir") {
      a.dir = v;
    } else if (k == "--precision") {
      a.precision = v == "fp64" ? Precision::F64 : Precision::F32;
    } else if (k == "--backend") {
      a.backend = v;
    } else if (k == "--layers") {
      a.layers = std::max(1, std::stoi(v));
    } else if (k == "--workers") {
      a.workers = std::clamp(std::stoi(v), 1, 256);
    } else if (k == "--json") {
      a.json = v;
    }
  }
  return a;
}

struct Module {
  std::string name;
  int64_t out, in;
};

const std::vector<Module>& layer() {
  static const std::vector<Module> m = {
      {"self_attn.q_proj", 2048, 2048}, {"self_attn.k_proj", 2048, 2048},
      {"self_attn.v_proj", 2048, 2048}, {"self_attn.o_proj", 2048, 2048},
      {"mlp.gate_proj", 5504, 2048},    {"mlp.up_proj", 5504, 2048},
      {"mlp.down_proj", 2048, 5504}};
  return m;
}

TensorData tensor(const std::string& name, const Dense<double>& m, DType dtype) {
  std::vector<float> v(m.data.begin(), m.data.end());
  return {name,
          dtype,
          {static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols)},
          encode_floats(v, dtype)};
}

Dense<double> gaussian(int64_t rows, int64_t cols, double sd, std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, sd);
  Dense<double> m{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (auto& x : m.data) x = g(rng);
  return m;
}

std::string layer_prefix(int i) { return "model.layers." + std::to_string(i) + "."; }

void write_base(const fs::path& dir, int layers) {
  if (fs::exists(dir / "model.safetensors")) return;
  fs::create_directories(dir);
  std::vector<TensorData> t;
  std::mt19937_64 rng(7);
  for (int i = 0; i < layers; ++i)
    for (const Module& m : layer())
      t.push_back(tensor(layer_prefix(i) + m.name + ".weight", random_weight(m.out, m.in, 1, rng),
                         DType::BF16));
  write_safetensors((dir / "model.safetensors").string(), t);
}

// An adapter of rank r whose update is strong enough to bring in intruders: s ||B A|| about
// the base's sigma_1 in its leading direction, decaying over the rank.
void write_adapter(const fs::path& dir, int r, int layers) {
  if (fs::exists(dir / "adapter_model.safetensors")) return;
  fs::create_directories(dir);
  std::vector<TensorData> t;
  std::mt19937_64 rng(100 + static_cast<uint64_t>(r));
  for (int l = 0; l < layers; ++l)
    for (const Module& m : layer()) {
      Dense<double> a = gaussian(r, m.in, 1.0 / std::sqrt(static_cast<double>(m.in)), rng);
      Dense<double> b = gaussian(m.out, r, 1.0 / std::sqrt(static_cast<double>(m.out)), rng);
      for (int64_t j = 0; j < r; ++j)
        for (int64_t i = 0; i < m.out; ++i) b.at(i, j) *= 0.5 * std::pow(0.9, double(j));
      const std::string p = "base_model.model." + layer_prefix(l) + m.name;
      t.push_back(tensor(p + ".lora_A.weight", a, DType::F32));
      t.push_back(tensor(p + ".lora_B.weight", b, DType::F32));
    }
  write_safetensors((dir / "adapter_model.safetensors").string(), t);
  std::ofstream(dir / "adapter_config.json")
      << R"({"peft_type":"LORA","r":)" << r << R"(,"lora_alpha":)" << r
      << R"(,"target_modules":["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]})";
}

struct Run {
  double seconds = 0;
  AnalyzeResult result;
};

// "" for one layer, "-l4" for four: a stack's files lie apart from the single layer's.
std::string suffix(const Args& a) {
  return a.layers > 1 ? "-l" + std::to_string(a.layers) : std::string();
}

Run run(const Args& a, const std::vector<std::string>& tuned, bool lowrank, const fs::path& out) {
  AnalyzeOptions o;
  o.base = (fs::path(a.dir) / ("base" + suffix(a))).string();
  o.tuned = tuned;
  o.out_dir = out.string();
  o.backend = a.backend;
  o.precision = a.precision;
  o.cache_dir = (fs::path(a.dir) / "cache").string();
  o.lowrank = lowrank;
  o.workers = a.workers;
  fs::remove_all(out);
  const auto t0 = std::chrono::steady_clock::now();
  Run r;
  r.result = analyze_only(o);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

struct Agreement {
  bool counts_equal = true;
  double max_diff = 0;
  std::string routes;
};

Agreement agree(const AnalyzeResult& low, const AnalyzeResult& full) {
  Agreement g;
  std::map<std::string, const MatrixResult*> by;
  for (const auto& r : full.records) by[std::to_string(r.tuned_index) + r.name] = &r;
  std::map<std::string, int> routes;
  for (const auto& r : low.records) {
    const MatrixResult& f = *by.at(std::to_string(r.tuned_index) + r.name);
    g.counts_equal = g.counts_equal && r.counts == f.counts;
    for (int j = 0; j < r.k; ++j)
      if (!std::isnan(r.maxcos[j]) && !std::isnan(f.maxcos[j]))
        g.max_diff = std::max(g.max_diff, std::fabs(r.maxcos[j] - f.maxcos[j]));
    ++routes[r.route.substr(0, r.route.find(','))];
  }
  for (const auto& [k, n] : routes)
    g.routes += (g.routes.empty() ? "" : "; ") + k + " x" + std::to_string(n);
  return g;
}

// Seconds of one matrix of each shape in a run (the records' own times).
std::string shape_seconds(const AnalyzeResult& r) {
  std::map<std::string, double> s;
  for (const auto& m : r.records)
    s[std::to_string(m.shape[0]) + "x" + std::to_string(m.shape[1])] = m.seconds;
  std::string t;
  char buf[64];
  for (const auto& [k, v] : s)
    std::snprintf(buf, sizeof buf, "%s%s %.3f", t.empty() ? "" : ", ", k.c_str(), v), t += buf;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();  // as the indim binary does, for both routes' runs
  const Args a = parse(argc, argv);
  const fs::path dir(a.dir);
  write_base(dir / ("base" + suffix(a)), a.layers);
  std::vector<std::string> adapters;
  for (int r : a.ranks) {
    adapters.push_back((dir / ("adapter-r" + std::to_string(r) + suffix(a))).string());
    write_adapter(adapters.back(), r, a.layers);
  }
  run(a, {adapters.front()}, false, dir / "warm");  // fills the base cache
  nlohmann::json rows = nlohmann::json::array();
  const char* unit = a.layers > 1 ? "s per layer" : "s";
  const double per = 1.0 / a.layers;
  std::printf(
      "| r | low-rank route (%s) | merged, full route (%s) | speed-up | one matrix, low-rank (s) "
      "| one matrix, full (s) | counts equal | max maxcos diff | routes |\n",
      unit, unit);
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  double full_sum = 0;
  for (size_t i = 0; i < a.ranks.size(); ++i) {
    const Run low = run(a, {adapters[i]}, true, dir / "low");
    const Run full = run(a, {adapters[i]}, false, dir / "full");
    full_sum += full.seconds;
    const Agreement g = agree(low.result, full.result);
    std::printf("| %d | %.3f | %.3f | %.1fx | %s | %s | %s | %.1e | %s |\n", a.ranks[i],
                low.seconds * per, full.seconds * per, full.seconds / low.seconds,
                shape_seconds(low.result).c_str(), shape_seconds(full.result).c_str(),
                g.counts_equal ? "yes" : "no", g.max_diff, g.routes.c_str());
    std::fflush(stdout);
    rows.push_back({{"r", a.ranks[i]},
                    {"lowrank_s", low.seconds},
                    {"full_s", full.seconds},
                    {"counts_equal", g.counts_equal},
                    {"max_maxcos_diff", g.max_diff},
                    {"routes", g.routes}});
  }
  const Run sweep = run(a, adapters, true, dir / "sweep");
  std::printf(
      "\nrank sweep: %zu adapters in one run %.3f s (low-rank route) against %.3f s for "
      "%zu separate merged runs (%.1fx)\n",
      adapters.size(), sweep.seconds, full_sum, adapters.size(), full_sum / sweep.seconds);
  if (!a.json.empty())
    std::ofstream(a.json) << nlohmann::json{
        {"layers", a.layers},
        {"workers", a.workers},
        {"rows", rows},
        {"sweep_s", sweep.seconds},
        {"separate_full_s",
         full_sum}}.dump(2);
  return 0;
}
