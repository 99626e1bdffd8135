// --delta: the update W - W0 itself, described by its norms and singular values.
#include <cmath>

#include "indim/error.hpp"
#include "pipeline/decompose.hpp"

namespace indim::detail {

namespace {

template <typename T>
MatrixResult::Delta describe(Backend& b, const WorkUnit& u) {
  Dense<T> w0 = load_side<T>(u, /*tuned=*/false);
  Dense<T> w = load_side<T>(u, /*tuned=*/true);
  double base_sq = 0, fro_sq = 0;
  for (size_t i = 0; i < w.data.size(); ++i) {
    base_sq += static_cast<double>(w0.data[i]) * w0.data[i];
    w.data[i] -= w0.data[i];
    fro_sq += static_cast<double>(w.data[i]) * w.data[i];
  }
  if (!std::isfinite(fro_sq))
    throw BadInput(InputProblem::Overflow,
                   u.pair.tuned.file->path() + ": tensor '" + u.pair.tuned_name +
                       "': the update W - W0 overflows " + precision_name(b.precision()) +
                       " (--delta); use --precision fp64");
  MatrixResult::Delta d;
  d.fro = std::sqrt(fro_sq);
  d.rel_fro = base_sq > 0 ? d.fro / std::sqrt(base_sq) : 0.0;
  if (fro_sq == 0) return d;
  const std::vector<double> s =
      b.decompose(std::move(w), Side::Left, 0, u.pair.base_name + " (update)").sigma;
  d.spectral = s.empty() ? 0.0 : s[0];
  double total = 0;
  for (double x : s) total += x, d.rank += x > 1e-3 * d.spectral ? 1 : 0;
  double entropy = 0;
  for (double x : s)
    if (x > 0) entropy -= (x / total) * std::log(x / total);
  d.effective_rank = std::exp(entropy);
  return d;
}

}  // namespace

MatrixResult::Delta describe_delta(Backend& b, const WorkUnit& u) {
  return b.precision() == Precision::F32 ? describe<float>(b, u) : describe<double>(b, u);
}

}  // namespace indim::detail
