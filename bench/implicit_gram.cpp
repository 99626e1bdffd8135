// Issue 12, item 5 (an experiment): the full route's tuned side by a block Krylov iteration on
// the implicit operator W W^T (a product is W (W^T x), 4 m n flops per vector, in fp64),
// started from the base's top left vectors, against the gram64 route that forms the Gram
// first (m n min(m, n) flops). For each shape of one Llama-shaped layer: a base with a
// decaying spectrum, a full fine-tune of it (dense noise plus a strong rank-4 change that
// brings in intruders), the seconds of each, the operator products the iteration needed, and
// the agreement of the top k with the gram64 route (max 1 - |cos| and max relative sigma
// difference).
//   indim_bench_implicit [--k 10] [--noise 0.02] [--square N: only an N x N matrix]
#include <cblas.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backend/block_krylov.hpp"
#include "backend/gram_host.hpp"
#include "fine_tune.hpp"
#include "indim/backend.hpp"
#include "indim/demo.hpp"

using namespace indim;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Implicit {
  double seconds = 0;
  int64_t products = 0;
  bool converged = false;
  std::vector<double> theta, u;  // u column-major [m, k]
};

Implicit implicit_top(const Dense<double>& w, const Vectors& base, int64_t k, int64_t lead) {
  const int64_t m = w.rows, n = w.cols;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<double> y;
  detail::BlockApply apply = [&](const double* x, int64_t cols, double* out) {
    y.resize(static_cast<size_t>(n * cols));  // W row-major [m, n] is W^T column-major [n, m]
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, cols, m, 1.0, w.data.data(), n, x, m,
                0.0, y.data(), n);
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, m, cols, n, 1.0, w.data.data(), n,
                y.data(), n, 0.0, out, m);
  };
  std::vector<double> start(static_cast<size_t>(m * lead));
  const auto& u0 = base.values<double>();
  for (int64_t j = 0; j < lead; ++j)
    for (int64_t i = 0; i < m; ++i) start[i + j * m] = u0[i * base.count + j];
  detail::KrylovOptions o;
  const int64_t block = detail::subspace_block(k);
  o.keep = k, o.shown = detail::kSubspaceShown, o.restart = block;
  o.max_basis = lead + 4 * block;
  o.max_products = 40 * block;  // measured without a budget: the products it needs
  o.tol = detail::kSubspaceTol;
  detail::KrylovResult r = detail::block_krylov_top(m, apply, std::move(start), lead, o);
  Implicit res;
  res.seconds = seconds_since(t0);
  res.products = r.products;
  res.converged = r.converged;
  res.theta = r.theta;
  res.u = r.vectors;
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t k = 10;
  double noise = 0.02;
  int64_t square = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--k") k = std::stoll(argv[i + 1]);
    if (a == "--noise") noise = std::stod(argv[i + 1]);
    if (a == "--square") square = std::stoll(argv[i + 1]);
  }
  std::mt19937_64 rng(11);
  auto fp64 = make_cpu_backend(Precision::F64, "gram64");
  std::printf(
      "| shape | gram64 (s) | implicit, base start (s) | products | speed-up | max 1-|cos| | "
      "max sigma rel diff |\n| --- | --- | --- | --- | --- | --- | --- |\n");
  std::vector<std::pair<int64_t, int64_t>> shapes = {{2048, 2048}, {5504, 2048}, {2048, 5504}};
  if (square > 0) shapes = {{square, square}};
  for (auto [m, n] : shapes) {
    const Dense<double> w0 = random_weight(m, n, 1.0, rng);
    const Decomposition base = fp64->decompose(Dense<double>(w0), Side::Left, 0, "base");
    const Dense<double> w = bench::fine_tune(w0, noise, base.sigma[0], rng);
    auto t0 = std::chrono::steady_clock::now();
    const Decomposition full = fp64->decompose(Dense<double>(w), Side::Left, k, "tuned");
    const double full_s = seconds_since(t0);
    const Implicit im = implicit_top(w, base.left, k, k + detail::kSubspaceOversample);
    double cos_gap = 0, sig = 0;
    const auto& uf = full.left.values<double>();
    for (int64_t j = 0; j < k; ++j) {
      double dot = 0;
      for (int64_t i = 0; i < m; ++i) dot += uf[i * full.left.count + j] * im.u[i + j * m];
      cos_gap = std::max(cos_gap, 1.0 - std::fabs(dot));
      sig = std::max(sig, std::fabs(std::sqrt(im.theta[j]) - full.sigma[j]) / full.sigma[j]);
    }
    std::printf("| %lldx%lld | %.3f | %.3f%s | %lld | %.1fx | %.1e | %.1e |\n",
                static_cast<long long>(m), static_cast<long long>(n), full_s, im.seconds,
                im.converged ? "" : " (not converged)", static_cast<long long>(im.products),
                full_s / im.seconds, cos_gap, sig);
    std::fflush(stdout);
  }
  return 0;
}
