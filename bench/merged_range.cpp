// Issue 12, item 4 (an experiment): does a merged LoRA checkpoint pay for a randomized range
// finder that recovers W - W0 = Q A (Q [m, l] orthonormal) and feeds the exact low-rank route,
// against the full route as it now runs on the CPU (the warm-started iteration)? For each shape
// of one Llama-shaped layer: a bf16 base, an adapter of rank r merged in fp32 (as
// merge_and_unload with an fp32 model writes it), the base decomposed in fp32 (as cached);
// then (a) the full route, (b) the range finder (l = r + 16 Gaussian samples, Householder QR,
// rank where |R_jj| > 1e-5 |R_00|, A = Q^T (W - W0)) plus the low-rank route plus the
// certificate on the real merged W (the route's own one holds for W0 + Q A only). Prints the
// seconds of each step, the speed-up, the real-W residual and the agreement of the top k.
//   indim_bench_merged_range [--r 16]
#include <cblas.h>
#include <lapacke.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/demo.hpp"
#include "indim/safetensors.hpp"

using namespace indim;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Dense<double> gaussian(int64_t rows, int64_t cols, double sd, std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, sd);
  Dense<double> m{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (auto& x : m.data) x = g(rng);
  return m;
}

// Rounds every value to `t` and back (the stored checkpoint's values).
void round_to(Dense<double>& m, DType t) {
  std::vector<float> v(m.data.begin(), m.data.end());
  std::vector<uint8_t> bytes = encode_floats(v, t);
  convert_elements(bytes.data(), t, v.size(), m.data.data());
}

// The orthonormal range of d [m, n] from l samples and its numerical rank: Q row-major [m, rank].
Dense<double> range_of(const Dense<double>& d, int64_t l, std::mt19937_64& rng) {
  const int64_t m = d.rows, n = d.cols;
  const Dense<double> omega = gaussian(n, l, 1.0, rng);
  std::vector<double> y(static_cast<size_t>(m * l));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, l, n, 1.0, d.data.data(), n,
              omega.data.data(), l, 0.0, y.data(), l);
  std::vector<double> tau(static_cast<size_t>(l));
  LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, m, l, y.data(), l, tau.data());
  int64_t rank = 0;
  while (rank < l && std::fabs(y[rank * l + rank]) > 1e-5 * std::fabs(y[0])) ++rank;
  LAPACKE_dorgqr(LAPACK_ROW_MAJOR, m, l, l, y.data(), l, tau.data());
  Dense<double> q{m, rank, std::vector<double>(static_cast<size_t>(m * rank))};
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < rank; ++j) q.at(i, j) = y[i * l + j];
  return q;
}

// max_j ||W W^T u_j - theta_j u_j|| / theta_1 for the real W [m, n] and u row-major [m, k].
double real_residual(const Dense<double>& w, const Decomposition& d, int64_t k) {
  const int64_t m = w.rows, n = w.cols;
  std::vector<double> u(static_cast<size_t>(m * k)), y(static_cast<size_t>(n * k)),
      wy(static_cast<size_t>(m * k));
  const auto& f = d.left.values<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) u[i * k + j] = f[i * d.left.count + j];
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0, w.data.data(), n, u.data(), k,
              0.0, y.data(), k);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0, w.data.data(), n, y.data(),
              k, 0.0, wy.data(), k);
  double worst = 0;
  for (int64_t j = 0; j < k; ++j) {
    double acc = 0;
    const double th = d.sigma[j] * d.sigma[j];
    for (int64_t i = 0; i < m; ++i) acc += std::pow(wy[i * k + j] - th * u[i * k + j], 2);
    worst = std::max(worst, std::sqrt(acc));
  }
  return worst / (d.sigma[0] * d.sigma[0]);
}

double worst_cos_gap(const Decomposition& a, const Decomposition& b, int64_t k) {
  double gap = 0;
  const auto& x = a.left.values<float>();
  const auto& y = b.left.values<float>();
  for (int64_t j = 0; j < k; ++j) {
    double dot = 0;
    for (int64_t i = 0; i < a.left.dim; ++i)
      dot += double(x[i * a.left.count + j]) * double(y[i * b.left.count + j]);
    gap = std::max(gap, 1.0 - std::fabs(dot));
  }
  return gap;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t r = 16;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--r") r = std::stoll(argv[i + 1]);
  const int64_t k = 10;
  std::mt19937_64 rng(5);
  auto cpu = make_cpu_backend(Precision::F32, "gram64");
  std::printf(
      "| shape | full route, warm (s) | range finder (s) | rank found | low-rank route (s) | "
      "real-W "
      "check (s) | total (s) | speed-up | real-W residual | max 1-\\|cos\\| |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (auto [m, n] : {std::pair<int64_t, int64_t>{2048, 2048}, {5504, 2048}, {2048, 5504}}) {
    Dense<double> w0 = random_weight(m, n, 1.0, rng);
    round_to(w0, DType::BF16);
    const Dense<double> a = gaussian(r, n, 1.0 / std::sqrt(double(n)), rng);
    Dense<double> b = gaussian(m, r, 0.5 / std::sqrt(double(m)), rng);
    Dense<double> w = w0;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, r, 1.0, b.data.data(), r,
                a.data.data(), n, 1.0, w.data.data(), n);
    round_to(w, DType::F32);  // merged in fp32
    std::vector<float> w0f(w0.data.begin(), w0.data.end());
    const std::vector<uint8_t> w0_bytes = encode_floats(w0f, DType::BF16);
    const Decomposition base =
        cpu->decompose(Dense<float>{m, n, std::vector<float>(w0f)}, Side::Left, 0, "base");

    auto t0 = Clock::now();
    std::string why;
    std::optional<Decomposition> full =
        cpu->decompose_warm([&] { return w; }, m, n, base, Side::Left, k, "merged", &why);
    const double full_s = since(t0);
    if (!full) return std::fprintf(stderr, "warm route: %s\n", why.c_str()), 1;

    t0 = Clock::now();
    Dense<double> delta = w;
    for (size_t i = 0; i < delta.data.size(); ++i) delta.data[i] -= w0.data[i];
    LowRankUpdate up;
    up.b = range_of(delta, r + 16, rng);
    const int64_t rank = up.b.cols;
    up.a = Dense<double>{rank, n, std::vector<double>(static_cast<size_t>(rank * n))};
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rank, n, m, 1.0, up.b.data.data(), rank,
                delta.data.data(), n, 0.0, up.a.data.data(), n);
    const double range_s = since(t0);

    t0 = Clock::now();
    LowRankProblem pr;
    pr.base_bytes = w0_bytes.data();
    pr.dtype = DType::BF16;
    pr.rows = m, pr.cols = n;
    pr.update = &up;
    pr.base = &base;
    pr.keep = k;
    pr.base_label = pr.label = "merged";
    std::optional<Decomposition> low = cpu->decompose_lowrank(pr, &why);
    const double low_s = since(t0);
    if (!low) return std::fprintf(stderr, "low-rank route: %s\n", why.c_str()), 1;

    t0 = Clock::now();
    const double resid = real_residual(w, *low, k);
    const double check_s = since(t0);
    const double total = range_s + low_s + check_s;
    std::printf("| %lldx%lld | %.3f | %.3f | %lld | %.3f | %.3f | %.3f | %.2fx | %.1e | %.1e |\n",
                static_cast<long long>(m), static_cast<long long>(n), full_s, range_s,
                static_cast<long long>(rank), low_s, check_s, total, full_s / total, resid,
                worst_cos_gap(*full, *low, k));
    std::fflush(stdout);
  }
  return 0;
}
