#include "backend/lowrank_products.hpp"

#include <variant>

#include "backend/finite.hpp"
#include "backend/host_matrix.hpp"
#include "backend/thin_products.hpp"
#include "indim/error.hpp"

namespace indim::detail {

namespace {

// `v` sized n for overwriting: a buffer too small is released first, so that growing it
// neither copies contents about to be overwritten nor holds the old and the new storage at
// once.
void fit(std::vector<double>& v, size_t n) {
  if (v.capacity() < n) std::vector<double>().swap(v);
  v.resize(n);
}

// The stored base as the products read it: its own bytes where thin_supports its type (after
// a scan for non-finite values), else converted once into ws.w0 as fp64, in the stored
// orientation either way.
StoredMatrix stored_base(const LowRankProblem& pr, LowRankWorkspace& ws) {
  const size_t count = static_cast<size_t>(pr.rows * pr.cols);
  if (thin_supports(pr.dtype)) {
    const size_t bad = first_non_finite_stored(pr.base_bytes, pr.dtype, count);
    if (bad < count)
      throw BadInput(InputProblem::NonFinite, pr.base_label + " holds a non-finite value at " +
                                                  matrix_index_text(bad, pr.cols));
    return {pr.base_bytes, pr.dtype, pr.rows, pr.cols};
  }
  fit(ws.w0, count);
  std::vector<double> unused;
  stored_into(pr.base_bytes, pr.dtype, pr.rows, pr.cols, false, pr.base_label, ws.w0, unused);
  return {ws.w0.data(), DType::F64, pr.rows, pr.cols};
}

class HostProducts final : public LowRankProducts {
 public:
  HostProducts(const LowRankProblem& pr, LowRankWorkspace& ws)
      : LowRankProducts(pr.conv1d ? pr.cols : pr.rows, pr.conv1d ? pr.rows : pr.cols),
        w0_(stored_base(pr, ws)),
        conv1d_(pr.conv1d) {}
  // The analysed W0 is the stored matrix, or its transpose for a Conv1D.
  void base(bool transpose, const double* x, int64_t c, double* y) override {
    (transpose != conv1d_ ? thin_times_transposed : thin_times)(w0_, x, c, y);
  }
  void load_vectors(const Vectors& basis) override {
    const void* data =
        std::visit([](const auto& v) -> const void* { return v.data(); }, basis.data);
    u0_ = {data, basis.precision() == Precision::F32 ? DType::F32 : DType::F64, basis.dim,
           basis.count};
  }
  void vectors(bool transpose, const double* x, int64_t c, double* y) override {
    (transpose ? thin_times_transposed : thin_times)(u0_, x, c, y);
  }

 private:
  StoredMatrix w0_, u0_;
  bool conv1d_;
};

}  // namespace

std::unique_ptr<LowRankProducts> host_lowrank_products(const LowRankProblem& problem,
                                                       LowRankWorkspace& ws) {
  return std::make_unique<HostProducts>(problem, ws);
}

}  // namespace indim::detail
