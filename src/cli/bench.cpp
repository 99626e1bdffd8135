// For each shape: a generated base W0 (decaying spectrum) and a tuned W = W0 + a rank-8 update
// of large norm, as a LoRA makes. Up to min(out, in) = 4096, W0 = U diag(i^-0.6) V^T with Haar
// U, V (QR of Gaussians, O(n^3) on the host); above, where that would take the host longer than
// the GPU takes to decompose, W0 = G diag(j^-0.6) / sqrt(out) with G Gaussian: no structure for
// a solver to exploit, a similar decay, O(out in) to make (the "generator" field says which).
// Each run (backend:algorithm) decomposes the base fully and the tuned matrix to its top k,
// then compares them; its time is the pair's wall time, best of --reps, with the rate its flops
// give and, on a GPU the bench knows, that rate as a fraction of the datasheet peak (fp64 for
// gram64). Accuracy: max |maxcos - ref| over the top k and over every tuned vector (the tuned
// side decomposed fully once more, untimed), against the reference run in fp64.
#include "cli/bench.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "indim/backend.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "io/atomic_file.hpp"

namespace indim::cli {

namespace {

struct Shape {
  int64_t out, in;
};

Shape parse_shape(const std::string& s) {
  const auto x = s.find('x');
  try {
    if (x != std::string::npos) {
      Shape sh{std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))};
      if (sh.out > 0 && sh.in > 0 && sh.out <= 65536 && sh.in <= 65536) return sh;
    }
  } catch (const std::exception&) {
  }
  throw UsageError("--shapes takes OUTxIN with sides from 1 to 65536, not \"" + s + "\"");
}

// Flops of one decomposition, for the achieved rate: Golub-Van Loan's U-only R-SVD
// (6 m n^2 + 11 n^3, m >= n) for gesdd/gesvd; syrk + syevd with vectors (~9 n^3) + the
// recovering GEMM for gram64.
double flops(const std::string& algo, Shape s) {
  const double m = static_cast<double>(std::max(s.out, s.in));
  const double n = static_cast<double>(std::min(s.out, s.in));
  if (algo == "gram64") return m * n * n + 9 * n * n * n + 2 * m * n * n;
  return 6 * m * n * n + 11 * n * n * n;
}

// Vendor datasheet rates in GFLOP/s of the GPUs indim is measured on (fp64 through the tensor
// cores, which cuBLAS's DGEMM/DSYRK use; fp32 plain), or 0 for a device not listed.
double gpu_peak_gflops(const std::string& device_name, bool fp64) {
  struct Peak {
    const char* name;
    double fp64, fp32;
  };
  static const Peak peaks[] = {
      {"H200", 67000, 67000}, {"H100", 67000, 67000}, {"A100", 19500, 19500}};
  for (const Peak& p : peaks)
    if (device_name.find(p.name) != std::string::npos) return fp64 ? p.fp64 : p.fp32;
  return 0;
}

struct Pair {
  Dense<double> base, tuned;
};

constexpr int64_t kExactGeneratorMax = 4096;

// G diag(j^-0.6) / sqrt(out), rows filled in parallel blocks, each from its own seed.
Dense<double> gaussian_decaying(Shape s, uint64_t seed) {
  Dense<double> w{s.out, s.in, std::vector<double>(static_cast<size_t>(s.out * s.in))};
  const int threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  const int64_t block = (s.out + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(t));
      std::normal_distribution<double> g(0.0, 1.0 / std::sqrt(static_cast<double>(s.out)));
      for (int64_t i = t * block; i < std::min(s.out, (t + 1) * block); ++i)
        for (int64_t j = 0; j < s.in; ++j)
          w.at(i, j) = g(rng) * std::pow(static_cast<double>(j + 1), -0.6);
    });
  for (auto& th : pool) th.join();
  return w;
}

bool exact_generator(Shape s) { return std::min(s.out, s.in) <= kExactGeneratorMax; }

Pair make_pair_for(Shape s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Pair p{exact_generator(s) ? random_weight(s.out, s.in, 1.0, rng) : gaussian_decaying(s, seed),
         {}};
  std::vector<double> d(8);
  for (int i = 0; i < 8; ++i) d[i] = 0.9 - 0.05 * i;
  p.tuned = compose_svd(random_orthonormal(s.out, 8, rng), d, random_orthonormal(s.in, 8, rng));
  for (size_t i = 0; i < p.tuned.data.size(); ++i) p.tuned.data[i] += p.base.data[i];
  return p;
}

Decomposition decompose(Backend& b, const Dense<double>& w, int64_t keep) {
  if (b.precision() == Precision::F32) {
    Dense<float> f{w.rows, w.cols, std::vector<float>(w.data.begin(), w.data.end())};
    return b.decompose(std::move(f), Side::Left, keep, "bench");
  }
  Dense<double> d = w;
  return b.decompose(std::move(d), Side::Left, keep, "bench");
}

std::unique_ptr<Backend> backend_for(const std::string& run, Precision p) {
  const auto colon = run.find(':');
  const std::string name = run.substr(0, colon);
  const std::string algo = colon == std::string::npos ? "auto" : run.substr(colon + 1);
  return make_backend(name, p, nullptr, algo);
}

struct Reference {
  std::vector<double> all;  // maxcos of every tuned vector
};

// One backend:algorithm on one shape: its best time over the repetitions, throughput and
// accuracy against the reference; printed as a row and returned as JSON.
nlohmann::json measure(const BenchArgs& a, const std::string& shape_text, const Shape& s,
                       const Pair& pair, const Reference& ref, Backend* b, const std::string& run,
                       double& first) {
  const Precision prec = b->precision();
  const int64_t r = std::min(s.out, s.in);
  double best = 1e300;
  Similarity top;
  std::string base_route, tuned_route;
  for (int rep = 0; rep < std::max(1, a.reps); ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    Decomposition bd = decompose(*b, pair.base, 0);
    Decomposition td = decompose(*b, pair.tuned, a.k);
    top = b->compare(td.left, bd.left, a.k);
    base_route = bd.route, tuned_route = td.route;
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  double err_top = NAN, err_all = NAN;
  if (!ref.all.empty()) {
    err_top = 0;
    for (size_t j = 0; j < top.maxcos.size(); ++j)
      err_top = std::max(err_top, std::fabs(top.maxcos[j] - ref.all[j]));
    Decomposition bd = decompose(*b, pair.base, 0), td = decompose(*b, pair.tuned, 0);
    const auto all = b->compare(td.left, bd.left, r).maxcos;
    err_all = 0;
    for (size_t j = 0; j < all.size(); ++j)
      err_all = std::max(err_all, std::fabs(all[j] - ref.all[j]));
  }
  const double gflops = (flops(b->algo(), s) * 2) / best / 1e9;  // base + tuned
  // gram64 computes in fp64 whatever the working precision; the others in that precision.
  const double peak =
      b->name() == "cuda"
          ? gpu_peak_gflops(cuda_device_name(0), b->algo() == "gram64" || prec == Precision::F64)
          : 0.0;
  const std::string of_peak =
      peak > 0 ? std::to_string(static_cast<int>(100 * gflops / peak + 0.5)) + "%" : "-";
  if (first == 0) first = best;
  std::printf("%-12s %-14s %-5s %10.3f %10.1f %8s %8.1fx %12.2e %12.2e\n", shape_text.c_str(),
              run.c_str(), a.precision.c_str(), best, gflops, of_peak.c_str(), first / best,
              err_top, err_all);
  // A route with a remark (a fallback, gesvdp's perturbation of sigma) is worth a line.
  for (const std::string* route : {&base_route, &tuned_route})
    if (route->find('(') != std::string::npos)
      std::printf("%-12s %-14s   %s route: %s\n", "", "", route == &base_route ? "base" : "tuned",
                  route->c_str());
  auto or_null = [](double v) { return std::isnan(v) ? nlohmann::json() : nlohmann::json(v); };
  return {{"shape", shape_text},
          {"run", run},
          {"backend", b->name()},
          {"algo", b->algo()},
          {"precision", a.precision},
          {"seconds", best},
          {"gflops", gflops},
          {"peak_gflops", peak > 0 ? nlohmann::json(peak) : nlohmann::json()},
          {"speedup_vs_first", first / best},
          {"err_topk", or_null(err_top)},
          {"err_all", or_null(err_all)},
          {"routes", {{"base", base_route}, {"tuned", tuned_route}}},
          {"k", a.k},
          {"reference", a.reference},
          {"generator", exact_generator(s) ? "haar-decaying" : "gaussian-decaying"}};
}

Reference reference_for(const BenchArgs& a, const Pair& pair, const Shape& s) {
  Reference ref;
  if (a.reference == "none") return ref;
  auto rb = a.reference == "cpu" ? make_backend("cpu", Precision::F64, nullptr, "gesdd")
                                 : make_backend("cuda", Precision::F64, nullptr, "gram64");
  Decomposition b = decompose(*rb, pair.base, 0), t = decompose(*rb, pair.tuned, 0);
  ref.all = rb->compare(t.left, b.left, std::min(s.out, s.in)).maxcos;
  return ref;
}

}  // namespace

int run_bench(const BenchArgs& a) {
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-12s %-14s %-5s %10s %10s %8s %9s %12s %12s\n", "shape", "run", "prec", "seconds",
              "GFLOP/s", "of peak", "vs first", "err top-k", "err all");
  int failures = 0;
  for (const std::string& shape_text : a.shapes) {
    const Shape s = parse_shape(shape_text);
    const Pair pair = make_pair_for(s, static_cast<uint64_t>(s.out * 7919 + s.in));
    Reference ref;
    try {
      ref = reference_for(a, pair, s);
    } catch (const std::exception& e) {  // rows still time; their accuracy stays unknown
      std::printf("%-12s %-14s failed: %s\n", shape_text.c_str(), "reference", e.what());
    }
    double first = 0;
    for (const std::string& run : a.runs) {
      std::unique_ptr<Backend> b;
      try {
        b = backend_for(run, a.precision == "fp64" ? Precision::F64 : Precision::F32);
      } catch (const Error& e) {  // not in this build or on this machine: not a failure
        std::printf("%-12s %-14s skipped: %s\n", shape_text.c_str(), run.c_str(), e.what());
        continue;
      }
      try {
        rows.push_back(measure(a, shape_text, s, pair, ref, b.get(), run, first));
      } catch (const std::exception& e) {  // one run failing on a shape stops neither
        ++failures;
        std::printf("%-12s %-14s failed: %s\n", shape_text.c_str(), run.c_str(), e.what());
        rows.push_back({{"shape", shape_text}, {"run", run}, {"failed", e.what()}});
      }
      std::fflush(stdout);
    }
    // After every shape: a run cut short by a time limit still leaves what it measured.
    if (!a.json.empty()) detail::write_file_atomic(a.json, rows.dump(2) + "\n");
  }
  return failures == 0 ? 0 : kExitRuntime;
}

}  // namespace indim::cli
