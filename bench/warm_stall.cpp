// The CPU default route's warm start on a clustered top spectrum (issue 31, section 4): a
// square base with singular values exp(-6 i / n), which a fine-tune (dense noise plus a rank-4
// change) mixes within the cluster, so the iteration started from the base's vectors converges
// slowly. Each run analyses the pair with the base's decomposition cached (as a user analysing
// several fine-tunes of one base does), by `--algo auto` (the warm start, which must give up
// early on a stall) and by `--algo gram64`; prints the route each took and the best wall time
// of `--repeat` runs.
//   indim_bench_warm_stall [--n 1536] [--repeat 3] [--noise 0.02] [--dir /tmp/indim-stall]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "fine_tune.hpp"
#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/safetensors.hpp"

using namespace indim;
namespace fs = std::filesystem;

namespace {

void write_matrix(const std::string& dir, const Dense<double>& w) {
  fs::create_directories(dir);
  const std::vector<float> v(w.data.begin(), w.data.end());
  write_safetensors(dir + "/model.safetensors",
                    {{"model.layers.0.mlp.down_proj.weight",
                      DType::F32,
                      {static_cast<uint64_t>(w.rows), static_cast<uint64_t>(w.cols)},
                      encode_floats(v, DType::F32)}});
}

struct Timed {
  double seconds = 1e300;
  std::string route;
  int intruders = 0;
};

Timed run(const std::string& dir, const std::string& algo, int repeat) {
  Timed t;
  for (int i = 0; i < repeat; ++i) {
    AnalyzeOptions o;
    o.base = dir + "/base";
    o.tuned = {dir + "/tuned"};
    o.out_dir = dir + "/out-" + algo;
    o.backend = "cpu";
    o.algo = algo;
    o.cache_dir = dir + "/cache-" + algo;
    if (i == 0) analyze_only(o);  // fills the cache with the base's decomposition
    const auto t0 = std::chrono::steady_clock::now();
    const AnalyzeResult r = analyze_only(o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < t.seconds) t.seconds = s;
    t.route = r.records.front().route;
    t.intruders = r.records.front().count_at(0.5);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 1536;
  int repeat = 3;
  double noise = 0.02;
  std::string dir = "/tmp/indim-stall";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--n") n = std::stoll(argv[i + 1]);
    if (a == "--repeat") repeat = std::stoi(argv[i + 1]);
    if (a == "--noise") noise = std::stod(argv[i + 1]);
    if (a == "--dir") dir = argv[i + 1];
  }
  fs::remove_all(dir);
  std::mt19937_64 rng(31);
  std::vector<double> s(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) s[i] = std::exp(-6.0 * static_cast<double>(i) / n);
  const Dense<double> w0 =
      compose_svd(random_orthonormal(n, n, rng), s, random_orthonormal(n, n, rng));
  write_matrix(dir + "/base", w0);
  write_matrix(dir + "/tuned", bench::fine_tune(w0, noise, s[0], rng));
  std::printf("| algo | best of %d (s) | route | intruders at 0.5 |\n| --- | --- | --- | --- |\n",
              repeat);
  for (const char* algo : {"auto", "gram64"}) {
    const Timed t = run(dir, algo, repeat);
    std::printf("| %s | %.3f | %s | %d |\n", algo, t.seconds, t.route.c_str(), t.intruders);
    std::fflush(stdout);
  }
  fs::remove_all(dir);
  return 0;
}
