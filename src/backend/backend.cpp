#include "indim/backend.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "indim/error.hpp"

namespace indim {

const char* precision_name(Precision p) { return p == Precision::F32 ? "fp32" : "fp64"; }

const char* side_name(Side s) {
  switch (s) {
    case Side::Left:
      return "left";
    case Side::Right:
      return "right";
    default:
      return "both";
  }
}

namespace {

template <typename T>
Dense<T> from_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transposed,
                     const std::string& label) {
  Dense<T> m{rows, cols, std::vector<T>(static_cast<size_t>(rows * cols))};
  convert_elements(bytes, dtype, m.data.size(), m.data.data());
  for (size_t i = 0; i < m.data.size(); ++i)
    if (!std::isfinite(m.data[i]))
      throw BadInput(label + " holds a non-finite value at [" + std::to_string(i / cols) + ", " +
                     std::to_string(i % cols) + "]");
  if (!transposed) return m;
  Dense<T> t{cols, rows, std::vector<T>(m.data.size())};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t.data[j * rows + i] = m.data[i * cols + j];
  return t;
}

}  // namespace

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
  if (!u.magnitude.empty()) {
    // Outputs are rows of w, or its columns when it is stored [in, out].
    const int64_t outs = u.transposed ? w.cols : w.rows, ins = u.transposed ? w.rows : w.cols;
    for (int64_t o = 0; o < outs; ++o) {
      auto at = [&](int64_t i) -> T& {
        return u.transposed ? w.data[i * w.cols + o] : w.data[o * w.cols + i];
      };
      double norm = 0;
      for (int64_t i = 0; i < ins; ++i) norm += static_cast<double>(at(i)) * at(i);
      norm = std::sqrt(norm);
      const double f = norm > 0 ? u.magnitude[o] / norm : 0.0;
      for (int64_t i = 0; i < ins; ++i) at(i) = static_cast<T>(at(i) * f);
    }
  }
  for (size_t i = 0; i < w.data.size(); ++i)
    if (!std::isfinite(w.data[i]))
      throw BadInput(label + ": merging the adapter gives a non-finite value at [" +
                     std::to_string(i / w.cols) + ", " + std::to_string(i % w.cols) + "]");
}
template void apply_update<float>(Dense<float>&, const LowRankUpdate&, const std::string&);
template void apply_update<double>(Dense<double>&, const LowRankUpdate&, const std::string&);

namespace {

template <typename T>
Decomposition merged_on_host(Backend& be, const void* bytes, DType dtype, int64_t rows,
                             int64_t cols, const LowRankUpdate& u, bool conv1d, Side side,
                             int64_t keep, const std::string& base_label,
                             const std::string& label) {
  Dense<T> w = from_stored<T>(bytes, dtype, rows, cols, false, base_label);
  apply_update(w, u, label);
  if (conv1d) {
    Dense<T> t{cols, rows, std::vector<T>(w.data.size())};
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) t.data[j * rows + i] = w.data[i * cols + j];
    w = std::move(t);
  }
  return be.decompose(std::move(w), side, keep, label);
}

}  // namespace

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

Decomposition Backend::decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                        bool transposed, Side side, int64_t keep,
                                        const std::string& label) {
  if (precision() == Precision::F32)
    return decompose(from_stored<float>(bytes, dtype, rows, cols, transposed, label), side, keep,
                     label);
  return decompose(from_stored<double>(bytes, dtype, rows, cols, transposed, label), side, keep,
                   label);
}

#ifdef INDIM_HAVE_CUDA
bool cuda_built() { return true; }
#else
bool cuda_built() { return false; }

int cuda_device_count(std::string* why) {
  if (why != nullptr) *why = "this build of indim has no CUDA backend";
  return 0;
}

std::string cuda_device_name(int) { return {}; }

std::vector<std::unique_ptr<Backend> > make_cuda_backends(Precision, const std::string&, int,
                                                          uint64_t, int) {
  throw UsageError(
      "--backend cuda: this build of indim has no CUDA backend (the CUDA toolkit "
      "was not found when it was built)");
}

std::unique_ptr<Backend> make_cuda_backend(Precision precision, const std::string& algo, int device,
                                           uint64_t gpu_mem) {
  return std::move(make_cuda_backends(precision, algo, device, gpu_mem, 1).front());
}
#endif

uint64_t cuda_bytes_needed(const std::string& algo, Precision precision, int64_t rows, int64_t cols,
                           int64_t keep) {
  const double m = static_cast<double>(std::max(rows, cols));
  const double n = static_cast<double>(std::min(rows, cols));
  const double k =
      static_cast<double>(keep <= 0 ? n : std::min<int64_t>(keep, std::min(rows, cols)));
  const double t = precision == Precision::F32 ? 4 : 8;
  double bytes;
  if (algo == "gram64")  // fp64 copy + staged input, Gram, syevd workspace (~2 n^2), vectors
    bytes = 8 * m * n + t * m * n + 8 * n * n + 16 * n * n + 8 * n * k + 8 * m * k + t * m * k;
  else if (algo == "gesvdp")  // as gesvd, with U and V and 1.66x gesvd's workspace
    bytes = t * (2 * m * n + m * n + n * n + 2 * (m + n) * n);
  else if (algo == "gesvdj")  // input + transposed copy, U, V, Jacobi workspace (~ m n + n^2)
    bytes = t * (2 * m * n + m * n + n * n + m * n + n * n);
  else  // gesvd: input + transposed copy, U, VT, workspace (~ (m + n) n)
    bytes = t * (2 * m * n + m * n + n * n + (m + n) * n);
  return static_cast<uint64_t>(bytes) + (64ull << 20);  // handles, small buffers
}

namespace {

// The algorithms of each backend; the first is the one "auto" picks. On the CPU gram64 was
// 1.9-2.7x faster than gesdd and 40x closer to the fp64 reference (bench/RESULTS.md).
const std::vector<std::string> kCpuAlgos = {"gram64", "gesdd"};
const std::vector<std::string> kCudaAlgos = {"gram64", "gesvd", "gesvdp", "gesvdj"};

bool has(const std::vector<std::string>& set, const std::string& a) {
  return std::find(set.begin(), set.end(), a) != set.end();
}

std::string joined(const std::vector<std::string>& set) {
  std::string s;
  for (const auto& a : set) s += (s.empty() ? "" : ", ") + a;
  return s;
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& name, Precision precision,
                                      std::string* note, const std::string& algo, uint64_t gpu_mem,
                                      int device) {
  const bool cpu_algo = algo == "auto" || has(kCpuAlgos, algo);
  const bool cuda_algo = algo == "auto" || has(kCudaAlgos, algo);
  if (!cpu_algo && !cuda_algo)
    throw UsageError("--algo must be auto, " + joined(kCpuAlgos) + " (cpu) or " +
                     joined(kCudaAlgos) + " (cuda), not \"" + algo + "\"");
  const std::string cpu_algo_name = algo == "auto" ? kCpuAlgos.front() : algo;
  const std::string cuda_algo_name = algo == "auto" ? kCudaAlgos.front() : algo;
  if (name == "cpu") {
    if (!cpu_algo) throw UsageError("--algo " + algo + " runs on the CUDA backend only");
    return make_cpu_backend(precision, cpu_algo_name);
  }
  if (name == "cuda") {
    if (!cuda_algo) throw UsageError("--algo " + algo + " runs on the CPU backend only");
    return make_cuda_backend(precision, cuda_algo_name, device, gpu_mem);
  }
  if (name == "auto") {
    std::string why;
    if (cuda_device_count(&why) > 0 && cuda_algo)
      return make_cuda_backend(precision, cuda_algo_name, device, gpu_mem);
    if (!cpu_algo) throw UsageError("--algo " + algo + " needs a CUDA device (" + why + ")");
    if (note != nullptr)
      *note = "indim: no usable CUDA device (" + why + "); using the CPU backend (LAPACK)";
    return make_cpu_backend(precision, cpu_algo_name);
  }
  throw UsageError("--backend must be auto, cpu or cuda, not \"" + name + "\"");
}

}  // namespace indim
