// A DeepSeek-V3-shaped slice in FP8 with 128 x 128 block scales (issue 31, section 3): MoE
// layers of `--experts` routed experts (gate/up [2048, 7168], down [7168, 2048]) plus the
// shared expert, the router (BF16 [256, 7168]) and the MLA attention matrices (q_a [1536, 7168],
// q_b [24576, 1536], kv_a [576, 7168], kv_b [32768, 512], o [7168, 16384]), a base and a
// fine-tune of it, both quantised as DeepSeek's weight_quant does (amax / 448 per block).
// Then `indim analyze` (the real binary, a child process) on the pair: wall time, peak RSS
// (the child's ru_maxrss), matrices per second by shape, written as a Markdown table.
//   indim_bench_deepseek --indim build/indim [--dir /tmp/indim-ds] [--layers 2] [--experts 256]
//       [--workers auto] [--extra "--no-noise-floor"] [--keep]
// The full slice (2 x 256 experts) is 45 GB of FP8 for the pair; --experts N < 256 writes the
// first N of each layer: every shape at its real size, fewer of the routed ones.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "indim/checkpoint.hpp"
#include "indim/quant.hpp"
#include "indim/safetensors.hpp"

using namespace indim;
namespace fs = std::filesystem;

namespace {

struct Matrix {
  std::string name;
  int64_t rows, cols;
  bool fp8 = true;
};

std::vector<Matrix> slice(int layers, int experts) {
  std::vector<Matrix> v;
  for (int l = 3; l < 3 + layers; ++l) {  // DeepSeek-V3's first MoE layer is 3
    const std::string p = "model.layers." + std::to_string(l) + ".";
    v.push_back({p + "self_attn.q_a_proj.weight", 1536, 7168});
    v.push_back({p + "self_attn.q_b_proj.weight", 24576, 1536});
    v.push_back({p + "self_attn.kv_a_proj_with_mqa.weight", 576, 7168});
    v.push_back({p + "self_attn.kv_b_proj.weight", 32768, 512});
    v.push_back({p + "self_attn.o_proj.weight", 7168, 16384});
    v.push_back({p + "mlp.gate.weight", 256, 7168, false});
    for (const char* m : {"gate_proj", "up_proj"})
      v.push_back({p + "mlp.shared_experts." + m + ".weight", 2048, 7168});
    v.push_back({p + "mlp.shared_experts.down_proj.weight", 7168, 2048});
    for (int e = 0; e < experts; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      v.push_back({x + "gate_proj.weight", 2048, 7168});
      v.push_back({x + "up_proj.weight", 2048, 7168});
      v.push_back({x + "down_proj.weight", 7168, 2048});
    }
  }
  return v;
}

// A trained-looking weight: a Gaussian bulk (0.02 per entry) plus 32 strong directions with a
// decaying spectrum; and a fine-tune of it: 1% dense noise plus, for every third matrix, a
// rank-2 change of a third of its top singular value (intruders).
struct Pair {
  std::vector<double> base, tuned;
};

Pair generate(const Matrix& m, size_t index, std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  const size_t n = static_cast<size_t>(m.rows * m.cols);
  Pair p{std::vector<double>(n), {}};
  for (double& x : p.base) x = 0.02 * g(rng);
  const double bulk = 0.02 * (std::sqrt(double(m.rows)) + std::sqrt(double(m.cols)));
  auto add_rank1 = [&](std::vector<double>& w, double sigma) {
    std::vector<double> a(static_cast<size_t>(m.rows)), b(static_cast<size_t>(m.cols));
    for (double& x : a) x = g(rng) / std::sqrt(double(m.rows));
    for (double& x : b) x = g(rng) / std::sqrt(double(m.cols));
    for (int64_t i = 0; i < m.rows; ++i)
      for (int64_t j = 0; j < m.cols; ++j) w[i * m.cols + j] += sigma * a[i] * b[j];
  };
  for (int r = 0; r < 32; ++r) add_rank1(p.base, 4.0 * bulk * std::pow(r + 1.0, -0.6));
  p.tuned = p.base;
  for (double& x : p.tuned) x += 0.0002 * g(rng);
  if (index % 3 == 0)
    for (int r = 0; r < 2; ++r) add_rank1(p.tuned, 1.3 * bulk);
  return p;
}

void append(std::vector<TensorData>& out, const Matrix& m, const std::vector<double>& w) {
  const std::vector<uint64_t> shape = {static_cast<uint64_t>(m.rows),
                                       static_cast<uint64_t>(m.cols)};
  if (!m.fp8) {
    out.push_back({m.name, DType::BF16, shape,
                   encode_floats(std::vector<float>(w.begin(), w.end()), DType::BF16)});
    return;
  }
  Quantised q = quantise_fp8(w, m.rows, m.cols, DType::F8_E4M3, 128, 128);
  out.push_back({m.name, DType::F8_E4M3, shape, std::move(q.codes)});
  out.push_back({m.name + "_scale_inv",
                 DType::F32,
                 {static_cast<uint64_t>(q.grid_rows), static_cast<uint64_t>(q.grid_cols)},
                 std::move(q.scales)});
}

const char* kConfig =
    R"({"model_type":"deepseek_v3","hidden_size":7168,"moe_intermediate_size":2048,)"
    R"("n_routed_experts":256,"n_shared_experts":1,"num_attention_heads":128,)"
    R"("q_lora_rank":1536,"kv_lora_rank":512,"quantization_config":{"quant_method":"fp8",)"
    R"("fmt":"e4m3","activation_scheme":"dynamic","weight_block_size":[128,128]}})";

// One shard per layer, as the released checkpoint spreads layers over shards; each layer is
// generated, written and freed before the next.
void write_pair(const std::string& dir, const std::vector<Matrix>& ms) {
  std::mt19937_64 rng(671);
  std::map<std::string, std::string> maps[2];
  uint64_t totals[2] = {0, 0};
  const std::string sides[2] = {dir + "/base", dir + "/tuned"};
  for (const auto& d : sides) fs::create_directories(d);
  for (size_t i = 0; i < ms.size();) {
    const std::string layer = ms[i].name.substr(13, ms[i].name.find('.', 13) - 13);
    const std::string shard = "layer-" + layer + ".safetensors";
    std::vector<TensorData> t[2];
    for (; i < ms.size() && ms[i].name.rfind("model.layers." + layer + ".", 0) == 0; ++i) {
      const Pair p = generate(ms[i], i, rng);
      append(t[0], ms[i], p.base);
      append(t[1], ms[i], p.tuned);
    }
    for (int s = 0; s < 2; ++s) {
      write_safetensors(sides[s] + "/" + shard, t[s]);
      for (const auto& x : t[s]) maps[s][x.name] = shard, totals[s] += x.bytes.size();
    }
  }
  for (int s = 0; s < 2; ++s) {
    write_shard_index(sides[s] + "/model.safetensors.index.json", maps[s], totals[s]);
    std::ofstream(sides[s] + "/config.json") << kConfig;
  }
}

struct Run {
  double seconds = 0;
  long max_rss_kb = 0;
  int rc = -1;
};

Run run_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  Run r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.max_rss_kb = ru.ru_maxrss;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string indim = "build/indim", dir = "/tmp/indim-ds", workers = "auto", extra;
  int layers = 2, experts = 256;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--indim") indim = next();
    if (a == "--dir") dir = next();
    if (a == "--layers") layers = std::stoi(next());
    if (a == "--experts") experts = std::stoi(next());
    if (a == "--workers") workers = next();
    if (a == "--extra") extra = next();
    if (a == "--keep") keep = true;
  }
  const std::vector<Matrix> ms = slice(layers, experts);
  if (!fs::exists(dir + "/tuned/config.json")) {
    const auto t0 = std::chrono::steady_clock::now();
    write_pair(dir, ms);
    std::fprintf(stderr, "generated %zu matrices a side in %.0f s\n", ms.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<std::string> args = {indim,        "analyze",    dir + "/base", dir + "/tuned",
                                   "--out",      dir + "/out", "--backend",   "cpu",
                                   "--no-cache", "--workers",  workers,       "-q"};
  for (size_t at = 0; !extra.empty() && at != std::string::npos;) {
    const size_t sp = extra.find(' ', at);
    args.push_back(extra.substr(at, sp == std::string::npos ? sp : sp - at));
    at = sp == std::string::npos ? sp : sp + 1;
  }
  const Run r = run_child(args);
  if (r.rc != 0) {
    std::fprintf(stderr, "indim analyze exited %d\n", r.rc);
    return 1;
  }
  std::ifstream f(dir + "/out/report.json");
  const nlohmann::json rep = nlohmann::json::parse(f);
  std::map<std::string, std::pair<int, double>> by_shape;  // shape -> matrices, seconds
  int intruders = 0, noise = 0;
  for (const auto& m : rep["matrices"]) {
    const std::string s =
        std::to_string(m["shape"][0].get<int>()) + "x" + std::to_string(m["shape"][1].get<int>());
    by_shape[s].first += 1;
    by_shape[s].second += m["seconds"].get<double>();
    intruders += m["counts"]["0.5"].get<int>();
    if (m.contains("noise_floor")) noise += m["noise_floor"]["counts"]["0.5"].get<int>();
  }
  std::printf(
      "| layers | experts | matrices | wall (s) | peak RSS (MiB) | matrices/s | intruders "
      "at 0.5 | noise floor at 0.5 |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::printf("| %d | %d + shared | %zu | %.1f | %.0f | %.3f | %d | %d |\n\n", layers, experts,
              rep["matrices"].size(), r.seconds, r.max_rss_kb / 1024.0,
              rep["matrices"].size() / r.seconds, intruders, noise);
  std::printf("| shape | matrices | worker seconds each (mean) |\n| --- | --- | --- |\n");
  for (const auto& [s, v] : by_shape)
    std::printf("| %s | %d | %.2f |\n", s.c_str(), v.first, v.second / v.first);
  if (!keep) fs::remove_all(dir);
  return 0;
}
