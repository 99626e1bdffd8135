// The batched eigensolver tried against the one in use: `batch` random fp64 Grams of order n,
// decomposed by Xsyevd one after another on one stream, by Xsyevd spread over `streams`
// streams, and by XsyevBatched in one call; eigenvalues and the top eigenvectors checked
// against the first. Prints a table and writes JSON (--json FILE). A way that fails (a solver
// error, out of memory) is a row saying why; the others still run, and the exit status is 1.
//
// usage: indim_bench_syev [--n 4096] [--batch 4] [--streams 4] [--json FILE]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cuda/batched_eig.hpp"
#include "indim/backend.hpp"

using namespace indim;
using cuda::DeviceBuffer;
using cuda::GpuContext;

namespace {

struct Args {
  int64_t n = 4096, batch = 4;
  int streams = 4;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--n")
      a.n = std::stoll(v);
    else if (k == "--batch")
      a.batch = std::stoll(v);
    else if (k == "--streams")
      a.streams = std::stoi(v);
    else if (k == "--json")
      a.json = v;
  }
  return a;
}

// Random Grams G = B^T B / n for Gaussian B (fixed seed), column-major, packed [batch, n, n]
// on the device; the products by syrk there (the host would take minutes at n = 4096).
DeviceBuffer<double> grams(GpuContext& ctx, int64_t n, int64_t batch) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> g;
  const size_t nn = static_cast<size_t>(n * n);
  DeviceBuffer<double> out = ctx.buffer<double>(nn * batch), b = ctx.buffer<double>(nn);
  std::vector<double> host(nn);
  const double scale = 1.0 / static_cast<double>(n), zero = 0;
  for (int64_t m = 0; m < batch; ++m) {
    for (double& x : host) x = g(rng);
    INDIM_CUDA_CHECK(cudaMemcpyAsync(b.get(), host.data(), nn * sizeof(double),
                                     cudaMemcpyHostToDevice, ctx.stream()));
    INDIM_CUBLAS_CHECK(cublasDsyrk(ctx.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, n, n, &scale,
                                   b.get(), n, &zero, out.get() + m * nn, n));
    ctx.sync();
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Result {
  std::string how;
  double seconds = 0;
  std::vector<double> w, top;  // eigenvalues; the top 10 eigenvectors of each matrix
  std::string error;           // why this way failed, or empty
};

// Copies the pristine Grams into a fresh buffer on `ctx`, runs `solve`, and keeps the results
// (every copy in the order of ctx's stream, where the buffers were allocated).
template <typename Solve>
Result solved(const std::string& how, GpuContext& ctx, const DeviceBuffer<double>& pristine,
              int64_t n, int64_t batch, Solve&& solve) {
  const size_t nn = static_cast<size_t>(n * n);
  DeviceBuffer<double> a = ctx.buffer<double>(nn * batch), w = ctx.buffer<double>(n * batch);
  INDIM_CUDA_CHECK(cudaMemcpyAsync(a.get(), pristine.get(), nn * batch * sizeof(double),
                                   cudaMemcpyDeviceToDevice, ctx.stream()));
  ctx.sync();
  const auto t0 = std::chrono::steady_clock::now();
  solve(a.get(), w.get());
  Result r{how, seconds_since(t0), std::vector<double>(n * batch), {}, {}};
  INDIM_CUDA_CHECK(cudaMemcpyAsync(r.w.data(), w.get(), r.w.size() * sizeof(double),
                                   cudaMemcpyDeviceToHost, ctx.stream()));
  const int64_t top = std::min<int64_t>(10, n);
  r.top.resize(static_cast<size_t>(batch * top * n));
  for (int64_t m = 0; m < batch; ++m)  // columns n - top .. n - 1: the largest eigenvalues
    INDIM_CUDA_CHECK(cudaMemcpyAsync(r.top.data() + m * top * n, a.get() + m * nn + (n - top) * n,
                                     top * n * sizeof(double), cudaMemcpyDeviceToHost,
                                     ctx.stream()));
  ctx.sync();
  return r;
}

// solved(), or a row saying why it failed.
template <typename Solve>
Result run(const std::string& how, GpuContext& ctx, const DeviceBuffer<double>& pristine, int64_t n,
           int64_t batch, Solve&& solve) {
  try {
    return solved(how, ctx, pristine, n, batch, solve);
  } catch (const std::exception& e) {
    Result r;
    r.how = how;
    r.error = e.what();
    return r;
  }
}

// Largest relative eigenvalue difference, and the smallest |<v, v_ref>| of the top vectors.
std::pair<double, double> agreement(const Result& r, const Result& ref, int64_t n) {
  double dw = 0, cos_min = 1;
  if (r.w.size() != ref.w.size() || r.top.size() != ref.top.size()) return {NAN, NAN};
  for (size_t i = 0; i < r.w.size(); ++i)
    dw = std::max(dw, std::fabs(r.w[i] - ref.w[i]) / std::max(std::fabs(ref.w[i]), 1e-300));
  for (size_t c = 0; c * n < r.top.size(); ++c) {
    double dot = 0;
    for (int64_t i = 0; i < n; ++i) dot += r.top[c * n + i] * ref.top[c * n + i];
    cos_min = std::min(cos_min, std::fabs(dot));
  }
  return {dw, cos_min};
}

int bench(const Args& a) {
  std::string why;
  if (cuda_device_count(&why) == 0) {
    std::printf("skipped: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  std::printf("%lld Grams of order %lld (fp64), generating...\n", static_cast<long long>(a.batch),
              static_cast<long long>(a.n));
  const cuda::DeviceScope scope(0);
  const std::shared_ptr<cuda::MemPool> pool = cuda::make_device_pool(0, ~0ull);
  std::vector<std::unique_ptr<GpuContext>> ctx;
  for (int s = 0; s < std::max(a.streams, 1); ++s)
    ctx.push_back(std::make_unique<GpuContext>(0, pool));
  const DeviceBuffer<double> pristine = grams(*ctx[0], a.n, a.batch);
  const int64_t n = a.n, nn = n * n, batch = a.batch;
  std::vector<Result> rows;
  rows.push_back(run("syevd, one stream", *ctx[0], pristine, n, batch, [&](double* m, double* w) {
    for (int64_t i = 0; i < batch; ++i) cuda::syevd_one(*ctx[0], m + i * nn, n, w + i * n, "g");
  }));
  rows.push_back(run("syevd, " + std::to_string(ctx.size()) + " streams", *ctx[0], pristine, n,
                     batch, [&](double* m, double* w) {
                       std::vector<std::thread> t;
                       std::vector<std::string> errors(ctx.size());
                       for (size_t s = 0; s < ctx.size(); ++s)
                         t.emplace_back([&, s] {
                           try {
                             const cuda::DeviceScope thread_scope(0);
                             for (int64_t i = s; i < batch; i += ctx.size())
                               cuda::syevd_one(*ctx[s], m + i * nn, n, w + i * n, "g");
                             ctx[s]->sync();
                           } catch (const std::exception& e) {
                             errors[s] = e.what();
                           }
                         });
                       for (auto& th : t) th.join();
                       for (const std::string& e : errors)
                         if (!e.empty()) throw std::runtime_error(e);
                     }));
  rows.push_back(run("syevBatched", *ctx[0], pristine, n, batch, [&](double* m, double* w) {
    cuda::syev_batched(*ctx[0], m, n, batch, w, "g");
  }));
  std::string json = "[";
  int status = 0;
  std::printf("%-20s %10s %14s %14s\n", "how", "seconds", "max rel dw", "min |cos| top");
  for (const Result& r : rows) {
    if (!r.error.empty()) {
      status = 1;
      std::printf("%-20s failed: %s\n", r.how.c_str(), r.error.c_str());
      json += std::string(json.size() > 1 ? ", " : "") + "{\"how\": \"" + r.how +
              "\", \"failed\": true}";
      continue;
    }
    const auto [dw, cmin] = agreement(r, rows[0], n);
    std::printf("%-20s %10.3f %14.2e %14.10f\n", r.how.c_str(), r.seconds, dw, cmin);
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%s{\"how\": \"%s\", \"n\": %lld, \"batch\": %lld, \"seconds\": %.6f, "
                  "\"max_rel_dw\": %.3e, \"min_cos_top10\": %.12f}",
                  json.size() > 1 ? ", " : "", r.how.c_str(), static_cast<long long>(n),
                  static_cast<long long>(batch), r.seconds, dw, cmin);
    json += buf;
  }
  json += "]\n";
  if (!a.json.empty()) {
    if (std::FILE* f = std::fopen(a.json.c_str(), "w")) std::fputs(json.c_str(), f), std::fclose(f);
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return bench(parse(argc, argv));
  } catch (const std::exception& e) {  // generating the Grams, or no room for them
    std::printf("failed: %s\n", e.what());
    return 1;
  }
}
