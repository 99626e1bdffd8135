// A LoRA (or DoRA) update merged into a base matrix on the host, as PEFT merges it, and the
// backends' host default of decompose_merged built on it.
#include <cblas.h>

#include <cmath>

#include "backend/finite.hpp"
#include "backend/host_matrix.hpp"
#include "indim/backend.hpp"
#include "indim/error.hpp"

namespace indim {

namespace {

// C += s * op(A) op(B), row-major.
void gemm_acc(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double s, const float* a,
              int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, static_cast<float>(s), a, lda, b, ldb, 1.0f, c, ldc);
}
void gemm_acc(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double s, const double* a,
              int64_t lda, const double* b, int64_t ldb, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, s, a, lda, b, ldb, 1.0, c, ldc);
}

// DoRA: output o (a row of w, or a column when w is stored [in, out]) scaled to magnitude[o].
template <typename T>
void rescale_outputs(Dense<T>& w, const std::vector<double>& magnitude, bool transposed) {
  const int64_t outs = transposed ? w.cols : w.rows, ins = transposed ? w.rows : w.cols;
  for (int64_t o = 0; o < outs; ++o) {
    auto at = [&](int64_t i) -> T& {
      return transposed ? w.data[i * w.cols + o] : w.data[o * w.cols + i];
    };
    double norm = 0;
    for (int64_t i = 0; i < ins; ++i) norm += static_cast<double>(at(i)) * at(i);
    norm = std::sqrt(norm);
    const double f = norm > 0 ? magnitude[o] / norm : 0.0;
    for (int64_t i = 0; i < ins; ++i) at(i) = static_cast<T>(at(i) * f);
  }
}

template <typename T>
Decomposition merged_on_host(Backend& be, const void* bytes, DType dtype, int64_t rows,
                             int64_t cols, const LowRankUpdate& u, bool conv1d, Side side,
                             int64_t keep, const std::string& base_label,
                             const std::string& label) {
  Dense<T> w = detail::from_stored<T>(bytes, dtype, rows, cols, false, base_label);
  apply_update(w, u, label);
  if (conv1d) w = detail::transposed(w);
  return be.decompose(std::move(w), side, keep, label);
}

}  // namespace

template <typename T>
void apply_update(Dense<T>& w, const LowRankUpdate& u, const std::string& label) {
  const Dense<T> a{u.a.rows, u.a.cols, std::vector<T>(u.a.data.begin(), u.a.data.end())};
  const Dense<T> b{u.b.rows, u.b.cols, std::vector<T>(u.b.data.begin(), u.b.data.end())};
  const int64_t r = a.rows;
  if (!u.transposed)  // w [out, in] += s * B [out, r] A [r, in]
    gemm_acc(false, false, w.rows, w.cols, r, u.scale, b.data.data(), r, a.data.data(), a.cols,
             w.data.data(), w.cols);
  else  // w [in, out] += s * A^T [in, r] B^T [r, out]
    gemm_acc(true, true, w.rows, w.cols, r, u.scale, a.data.data(), a.cols, b.data.data(), r,
             w.data.data(), w.cols);
  if (!u.magnitude.empty()) rescale_outputs(w, u.magnitude, u.transposed);
  const size_t bad = detail::first_non_finite(w.data.data(), w.data.size());
  if (bad < w.data.size())
    throw BadInput(InputProblem::NonFinite,
                   label + ": merging the adapter gives a non-finite value at " +
                       detail::matrix_index_text(bad, w.cols));
}
template void apply_update<float>(Dense<float>&, const LowRankUpdate&, const std::string&);
template void apply_update<double>(Dense<double>&, const LowRankUpdate&, const std::string&);

Decomposition Backend::decompose_merged(const void* base_bytes, DType dtype, int64_t rows,
                                        int64_t cols, const LowRankUpdate& update, bool conv1d,
                                        Side side, int64_t keep, const std::string& base_label,
                                        const std::string& label) {
  if (precision() == Precision::F32)
    return merged_on_host<float>(*this, base_bytes, dtype, rows, cols, update, conv1d, side, keep,
                                 base_label, label);
  return merged_on_host<double>(*this, base_bytes, dtype, rows, cols, update, conv1d, side, keep,
                                base_label, label);
}

}  // namespace indim
