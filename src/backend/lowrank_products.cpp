#include "backend/lowrank_products.hpp"

#include <cblas.h>

#include <variant>

#include "backend/host_matrix.hpp"

namespace indim::detail {

namespace {

// `v` sized n for overwriting: a buffer too small is released first, so that growing it
// neither copies contents about to be overwritten nor holds the old and the new storage at
// once.
void fit(std::vector<double>& v, size_t n) {
  if (v.capacity() < n) std::vector<double>().swap(v);
  v.resize(n);
}

// Row-major y [m, c] = op(a) x with a [rows, cols] (op(a) [m, k]).
void times(const double* a, int64_t rows, int64_t cols, bool transpose, const double* x, int64_t c,
           double* y) {
  const int64_t m = transpose ? cols : rows, k = transpose ? rows : cols;
  cblas_dgemm(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, CblasNoTrans, m, c, k, 1.0, a,
              cols, x, c, 0.0, y, c);
}

class HostProducts final : public LowRankProducts {
 public:
  HostProducts(const LowRankProblem& pr, LowRankWorkspace& ws)
      : LowRankProducts(pr.conv1d ? pr.cols : pr.rows, pr.conv1d ? pr.rows : pr.cols), ws_(ws) {
    const size_t count = static_cast<size_t>(rows() * cols());
    fit(ws_.w0, count);
    if (pr.conv1d) fit(ws_.stored, count);
    stored_into(pr.base_bytes, pr.dtype, pr.rows, pr.cols, pr.conv1d, pr.base_label, ws_.w0,
                ws_.stored);
  }
  void base(bool transpose, const double* x, int64_t c, double* y) override {
    times(ws_.w0.data(), rows(), cols(), transpose, x, c, y);
  }
  void load_vectors(const Vectors& basis) override {
    fit(ws_.u0, static_cast<size_t>(basis.dim * basis.count));
    std::visit([&](const auto& v) { std::copy(v.begin(), v.end(), ws_.u0.begin()); }, basis.data);
    dim_ = basis.dim, count_ = basis.count;
  }
  void vectors(bool transpose, const double* x, int64_t c, double* y) override {
    times(ws_.u0.data(), dim_, count_, transpose, x, c, y);
  }

 private:
  LowRankWorkspace& ws_;
  int64_t dim_ = 0, count_ = 0;
};

}  // namespace

std::unique_ptr<LowRankProducts> host_lowrank_products(const LowRankProblem& problem,
                                                       LowRankWorkspace& ws) {
  return std::make_unique<HostProducts>(problem, ws);
}

}  // namespace indim::detail
