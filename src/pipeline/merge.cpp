#include "pipeline/merge.hpp"

#include <cblas.h>

#include <cmath>

#include "indim/error.hpp"
#include "indim/peft.hpp"

namespace indim::detail {

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

}  // namespace

template <typename T>
Dense<T> load_matrix(const TensorRef& r) {
  Dense<T> m;
  m.rows = static_cast<int64_t>(r.info->shape[0]);
  m.cols = r.info->shape.size() > 1 ? static_cast<int64_t>(r.info->shape[1]) : 1;
  m.data.resize(static_cast<size_t>(m.rows * m.cols));
  convert_elements(r.file->data(*r.info), r.info->dtype, m.data.size(), m.data.data());
  r.file->release(*r.info);
  for (size_t i = 0; i < m.data.size(); ++i)
    if (!std::isfinite(m.data[i]))
      throw BadInput(r.file->path() + ": tensor '" + r.info->name +
                     "' holds a non-finite value at [" + std::to_string(i / m.cols) + ", " +
                     std::to_string(i % m.cols) + "]");
  return m;
}

template <typename T>
Dense<T> load_slice(const TensorRef& r, int64_t index) {
  Dense<T> m;
  m.rows = static_cast<int64_t>(r.info->shape[1]);
  m.cols = static_cast<int64_t>(r.info->shape[2]);
  const size_t n = static_cast<size_t>(m.rows * m.cols);
  m.data.resize(n);
  const size_t bytes = n * static_cast<size_t>(dtype_bits(r.info->dtype) / 8);
  convert_elements(r.file->data(*r.info) + static_cast<size_t>(index) * bytes, r.info->dtype, n,
                   m.data.data());
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(m.data[i]))
      throw BadInput(r.file->path() + ": tensor '" + r.info->name +
                     "' holds a non-finite value at [" + std::to_string(index) + ", " +
                     std::to_string(i / m.cols) + ", " + std::to_string(i % m.cols) + "]");
  return m;
}

template <typename T>
Dense<T> merge_lora(const MatchedPair& p) {
  const LoraModule& m = *p.lora;
  Dense<T> w = load_matrix<T>(p.base);
  const Dense<T> a = load_matrix<T>(m.a), b = load_matrix<T>(m.b);
  const int64_t r = a.rows;
  if (!p.transposed)  // w [out, in] += s * B [out, r] A [r, in]
    gemm_acc(false, false, w.rows, w.cols, r, m.scale, b.data.data(), r, a.data.data(), a.cols,
             w.data.data(), w.cols);
  else  // w [in, out] += s * A^T [in, r] B^T [r, out]
    gemm_acc(true, true, w.rows, w.cols, r, m.scale, a.data.data(), a.cols, b.data.data(), r,
             w.data.data(), w.cols);
  if (m.magnitude) {
    const Dense<T> mag = load_matrix<T>(*m.magnitude);
    // Outputs are rows of w, or its columns when it is stored [in, out].
    const int64_t outs = p.transposed ? w.cols : w.rows, ins = p.transposed ? w.rows : w.cols;
    for (int64_t o = 0; o < outs; ++o) {
      auto at = [&](int64_t i) -> T& {
        return p.transposed ? w.data[i * w.cols + o] : w.data[o * w.cols + i];
      };
      double norm = 0;
      for (int64_t i = 0; i < ins; ++i) norm += static_cast<double>(at(i)) * at(i);
      norm = std::sqrt(norm);
      const double f = norm > 0 ? mag.data[o] / norm : 0.0;
      for (int64_t i = 0; i < ins; ++i) at(i) = static_cast<T>(at(i) * f);
    }
  }
  for (size_t i = 0; i < w.data.size(); ++i)
    if (!std::isfinite(w.data[i]))
      throw BadInput(m.b.file->path() + ": module '" + m.module +
                     "': merging the adapter gives a non-finite value at [" +
                     std::to_string(i / w.cols) + ", " + std::to_string(i % w.cols) + "]");
  return w;
}

template Dense<float> load_matrix<float>(const TensorRef&);
template Dense<double> load_matrix<double>(const TensorRef&);
template Dense<float> load_slice<float>(const TensorRef&, int64_t);
template Dense<double> load_slice<double>(const TensorRef&, int64_t);
template Dense<float> merge_lora<float>(const MatchedPair&);
template Dense<double> merge_lora<double>(const MatchedPair&);

}  // namespace indim::detail
