// What every backend shares: the names of precisions and sides, and the host defaults of
// decompose_stored (convert, then decompose) on which the CPU backend relies.
#include "indim/backend.hpp"

#include "backend/finite.hpp"
#include "backend/host_matrix.hpp"
#include "indim/analyze.hpp"
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

std::optional<Side> parse_side(const std::string& name) {
  for (Side s : {Side::Left, Side::Right, Side::Both})
    if (name == side_name(s)) return s;
  return std::nullopt;
}

namespace detail {

template <typename T>
Dense<T> transposed(const Dense<T>& w) {
  Dense<T> t{w.cols, w.rows, std::vector<T>(w.data.size())};
  for (int64_t i = 0; i < w.rows; ++i)
    for (int64_t j = 0; j < w.cols; ++j) t.data[j * w.rows + i] = w.data[i * w.cols + j];
  return t;
}

template <typename T>
Dense<T> from_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transpose,
                     const std::string& label) {
  Dense<T> m{rows, cols, std::vector<T>(static_cast<size_t>(rows * cols))};
  convert_elements(bytes, dtype, m.data.size(), m.data.data());
  const size_t bad = first_non_finite(m.data.data(), m.data.size());
  if (bad < m.data.size())
    throw BadInput(InputProblem::NonFinite,
                   label + " holds a non-finite value at " + matrix_index_text(bad, cols));
  return transpose ? transposed(m) : m;
}

template Dense<float> transposed(const Dense<float>&);
template Dense<double> transposed(const Dense<double>&);
template Dense<float> from_stored(const void*, DType, int64_t, int64_t, bool, const std::string&);
template Dense<double> from_stored(const void*, DType, int64_t, int64_t, bool, const std::string&);

}  // namespace detail

void Backend::check_stop(const std::string& label) const {
  if (cancel_ != nullptr && cancel_->stop_requested())
    throw Cancelled(label + ": stopped in the middle of its decomposition");
}

Decomposition Backend::decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                        bool transposed, Side side, int64_t keep,
                                        const std::string& label) {
  if (precision() == Precision::F32)
    return decompose(detail::from_stored<float>(bytes, dtype, rows, cols, transposed, label), side,
                     keep, label);
  return decompose(detail::from_stored<double>(bytes, dtype, rows, cols, transposed, label), side,
                   keep, label);
}

}  // namespace indim
