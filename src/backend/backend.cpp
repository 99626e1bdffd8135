// What every backend shares: the names of precisions and sides, a Similarity from cosines, and
// the host defaults of decompose_stored (convert, then decompose) on which the CPU backend
// relies.
#include "indim/backend.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "backend/finite.hpp"
#include "backend/host_matrix.hpp"
#include "indim/analyze.hpp"
#include "indim/error.hpp"
#include "indim/quant.hpp"

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

std::optional<Side> parse_side(const std::string& name) {
  for (Side s : {Side::Left, Side::Right, Side::Both})
    if (name == side_name(s)) return s;
  return std::nullopt;
}

uint64_t new_vectors_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

namespace detail {

template <typename T>
void transpose_into(const T* src, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t kTile = 32;  // tiles keep both sides' lines in cache
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTile)
      for (int64_t i = i0; i < std::min(rows, i0 + kTile); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + kTile); ++j)
          dst[j * rows + i] = src[i * cols + j];
}

template <typename T>
Dense<T> transposed(const Dense<T>& w) {
  Dense<T> t{w.cols, w.rows, std::vector<T>(w.data.size())};
  transpose_into(w.data.data(), w.rows, w.cols, t.data.data());
  return t;
}

template <typename T>
void stored_into(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transpose,
                 const std::string& label, std::vector<T>& out, std::vector<T>& scratch) {
  const size_t count = static_cast<size_t>(rows * cols);
  std::vector<T>& dst = transpose ? scratch : out;
  dst.resize(count);
  const size_t bad = convert_finite(bytes, dtype, count, dst.data());
  if (bad < count)
    throw BadInput(InputProblem::NonFinite,
                   label + " holds a non-finite value at " + matrix_index_text(bad, cols));
  if (transpose) {
    out.resize(count);
    transpose_into(dst.data(), rows, cols, out.data());
  }
}

template <typename T>
Dense<T> from_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transpose,
                     const std::string& label) {
  Dense<T> m{transpose ? cols : rows, transpose ? rows : cols, {}};
  std::vector<T> scratch;
  stored_into(bytes, dtype, rows, cols, transpose, label, m.data, scratch);
  return m;
}

template void transpose_into(const float*, int64_t, int64_t, float*);
template void transpose_into(const double*, int64_t, int64_t, double*);
template void stored_into(const void*, DType, int64_t, int64_t, bool, const std::string&,
                          std::vector<float>&, std::vector<float>&);
template void stored_into(const void*, DType, int64_t, int64_t, bool, const std::string&,
                          std::vector<double>&, std::vector<double>&);
template Dense<float> transposed(const Dense<float>&);
template Dense<double> transposed(const Dense<double>&);
template Dense<float> from_stored(const void*, DType, int64_t, int64_t, bool, const std::string&);
template Dense<double> from_stored(const void*, DType, int64_t, int64_t, bool, const std::string&);

}  // namespace detail

Similarity similarity_of(const std::vector<double>& c, int64_t k, int64_t nb, int64_t head_cols) {
  Similarity sim;
  sim.head_cols = std::min(std::max<int64_t>(head_cols, 0), nb);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t i = 0; i < sim.head_cols; ++i)
      sim.head.push_back(static_cast<float>(std::fabs(c[j * nb + i])));
  for (int64_t j = 0; j < k; ++j) {
    double best = -1.0;
    int64_t arg = 0;
    for (int64_t i = 0; i < nb; ++i) {
      const double v = std::fabs(c[j * nb + i]);
      if (v > best) best = v, arg = i;
    }
    sim.maxcos.push_back(best < 0 ? 0.0 : best);
    sim.argmax.push_back(arg);
  }
  return sim;
}

void Backend::check_stop(const std::string& label) const {
  if (cancel_ != nullptr && cancel_->stop_requested())
    throw Cancelled(label + ": stopped in the middle of its decomposition");
}

std::optional<Decomposition> Backend::decompose_warm(const std::function<Dense<double>()>&, int64_t,
                                                     int64_t, const Decomposition&, Side, int64_t,
                                                     const std::string&, std::string*) {
  return std::nullopt;
}

bool Backend::warm_applies(int64_t, int64_t, int64_t) const { return false; }

Decomposition Backend::decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                        bool transposed, Side side, int64_t keep,
                                        const std::string& label) {
  if (precision() == Precision::F32)
    return decompose(detail::from_stored<float>(bytes, dtype, rows, cols, transposed, label), side,
                     keep, label);
  return decompose(detail::from_stored<double>(bytes, dtype, rows, cols, transposed, label), side,
                   keep, label);
}

Decomposition Backend::decompose_quantised(const void* codes, DType dtype, int64_t rows,
                                           int64_t cols, bool transposed, const QuantScales& scales,
                                           Side side, int64_t keep, const std::string& label) {
  const auto* p = static_cast<const uint8_t*>(codes);
  if (precision() == Precision::F32) {
    Dense<float> w{transposed ? cols : rows, transposed ? rows : cols, {}};
    decode_quantised(p, dtype, rows, cols, scales, transposed, label, w.data);
    return decompose(std::move(w), side, keep, label);
  }
  Dense<double> w{transposed ? cols : rows, transposed ? rows : cols, {}};
  decode_quantised(p, dtype, rows, cols, scales, transposed, label, w.data);
  return decompose(std::move(w), side, keep, label);
}

}  // namespace indim
