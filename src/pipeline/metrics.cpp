#include "pipeline/metrics.hpp"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "backend/host_matrix.hpp"
#include "backend/row_gemm.hpp"
#include "indim/peft.hpp"
#include "pipeline/decompose.hpp"
#include "pipeline/merge.hpp"

namespace indim::detail {

namespace {

// The update's energy along k vectors: along[j] = ||y_j^T D||^2 or ||D y_j||^2, and ||D||_F^2.
struct Energy {
  std::vector<double> along;
  double fro_sq = 0;
};

// Writes rows [r0, r0 + n) of D = W - W0 (stored orientation) into `out`, row-major.
using DiffRows = std::function<void(int64_t r0, int64_t n, double* out)>;

// D [rows, cols] read a block of rows at a time (about 8 MB), against y: with `row_vectors`
// y [rows, k] and energy ||y_j^T D||^2, else y [cols, k] and energy ||D y_j||^2.
Energy energy_by_blocks(int64_t rows, int64_t cols, const DiffRows& diff,
                        const std::vector<double>& y, int64_t k, bool row_vectors) {
  const int64_t block = std::clamp<int64_t>((int64_t{1} << 20) / std::max<int64_t>(cols, 1), 1,
                                            std::max<int64_t>(rows, 1));
  std::vector<double> d(static_cast<size_t>(block * cols));
  std::vector<double> z(static_cast<size_t>(row_vectors ? k * cols : block * k), 0.0);
  Energy e;
  e.along.assign(static_cast<size_t>(k), 0.0);
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    diff(r0, n, d.data());
    for (int64_t i = 0; i < n * cols; ++i) e.fro_sq += d[i] * d[i];
    if (row_vectors) {  // z [k, cols] += y[r0 .. r0 + n)^T D_block
      row_gemm(true, false, k, cols, n, 1.0, y.data() + r0 * k, k, d.data(), cols, 1.0, z.data(),
               cols);
      continue;
    }
    row_gemm(false, false, n, k, cols, 1.0, d.data(), cols, y.data(), k, 0.0, z.data(), k);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) e.along[j] += z[i * k + j] * z[i * k + j];
  }
  if (row_vectors)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < cols; ++c) e.along[j] += z[j * cols + c] * z[j * cols + c];
  return e;
}

// Both sides' stored bytes as they lie (contiguous, same block shape), converted a block at a time.
Energy stored_energy(const WorkUnit& u, const std::vector<double>& y, int64_t k, bool left) {
  const SideRead &t = u.tuned, &b = u.base;
  const DType tt = u.pair.tuned.info->dtype, bt = u.pair.base.info->dtype;
  const size_t te = static_cast<size_t>(dtype_bits(tt) / 8),
               be = static_cast<size_t>(dtype_bits(bt) / 8);
  std::vector<double> base_rows;
  const DiffRows diff = [&](int64_t r0, int64_t n, double* out) {
    const size_t count = static_cast<size_t>(n * t.cols), first = static_cast<size_t>(r0 * t.cols);
    base_rows.resize(count);
    convert_elements(t.data + first * te, tt, count, out);
    convert_elements(b.data + first * be, bt, count, base_rows.data());
    for (size_t i = 0; i < count; ++i) out[i] -= base_rows[i];
  };
  // Analysed as stored, or transposed (a Conv1D): left vectors live on the stored rows unless
  // transposed.
  return energy_by_blocks(t.rows, t.cols, diff, y, k, left != t.transposed);
}

// Both sides loaded as analysed ([out, in]) on the host: parts, DoRA and other host reads.
Energy dense_energy(const WorkUnit& u, const std::vector<double>& y, int64_t k, bool left) {
  Dense<double> w = load_side<double>(u, /*tuned=*/true);
  {
    const Dense<double> w0 = load_side<double>(u, /*tuned=*/false);
    for (size_t i = 0; i < w.data.size(); ++i) w.data[i] -= w0.data[i];
  }
  const DiffRows diff = [&](int64_t r0, int64_t n, double* out) {
    std::copy_n(w.data.data() + r0 * w.cols, n * w.cols, out);
  };
  return energy_by_blocks(w.rows, w.cols, diff, y, k, left);
}

// A plain LoRA, from its factors: as analysed, D = s B A with B [m, r], A [r, n], so
// y^T D = s (y^T B) A and D y = s B (A y); ||D||_F^2 = s^2 tr((B^T B)(A A^T)).
Energy lora_energy(const WorkUnit& u, const std::vector<double>& y, int64_t k, bool left) {
  const LowRankUpdate up = lora_update(u.pair);
  const bool flip = up.transposed != u.pair.conv1d;  // as Backend::decompose_lowrank orients it
  const Dense<double> b = flip ? transposed(up.a) : up.b;
  const Dense<double> a = flip ? transposed(up.b) : up.a;
  const int64_t m = b.rows, n = a.cols, r = b.cols;
  Energy e;
  e.along.assign(static_cast<size_t>(k), 0.0);
  std::vector<double> small(static_cast<size_t>(r * k)), z;
  if (left) {  // small [k, r] = y^T B, z [k, n] = s small A
    row_gemm(true, false, k, r, m, 1.0, y.data(), k, b.data.data(), r, 0.0, small.data(), r);
    z.resize(static_cast<size_t>(k * n));
    row_gemm(false, false, k, n, r, up.scale, small.data(), r, a.data.data(), n, 0.0, z.data(), n);
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < n; ++c) e.along[j] += z[j * n + c] * z[j * n + c];
  } else {  // small [r, k] = A y, z [m, k] = s B small
    row_gemm(false, false, r, k, n, 1.0, a.data.data(), n, y.data(), k, 0.0, small.data(), k);
    z.resize(static_cast<size_t>(m * k));
    row_gemm(false, false, m, k, r, up.scale, b.data.data(), r, small.data(), k, 0.0, z.data(), k);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < k; ++j) e.along[j] += z[i * k + j] * z[i * k + j];
  }
  std::vector<double> bb(static_cast<size_t>(r * r)), aa(static_cast<size_t>(r * r));
  row_gemm(true, false, r, r, m, 1.0, b.data.data(), r, b.data.data(), r, 0.0, bb.data(), r);
  row_gemm(false, true, r, r, n, 1.0, a.data.data(), n, a.data.data(), n, 0.0, aa.data(), r);
  for (size_t i = 0; i < bb.size(); ++i) e.fro_sq += bb[i] * aa[i];
  e.fro_sq = std::max(0.0, e.fro_sq) * up.scale * up.scale;
  return e;
}

Energy update_energy(const WorkUnit& u, const std::vector<double>& y, int64_t k, bool left) {
  const MatchedPair& p = u.pair;
  const bool whole = u.part.label.empty();
  if (p.lora != nullptr && !p.lora->magnitude && whole) return lora_energy(u, y, k, left);
  if (p.lora == nullptr && u.tuned.kind == SideRead::Kind::Stored &&
      u.base.kind == SideRead::Kind::Stored && u.tuned.rows == u.base.rows &&
      u.tuned.cols == u.base.cols && u.tuned.transposed == u.base.transposed &&
      p.tuned.quant == nullptr && p.base.quant == nullptr)  // codes with scales decode whole
    return stored_energy(u, y, k, left);
  return dense_energy(u, y, k, left);
}

}  // namespace

std::vector<double> leading_columns(const Vectors& v, int64_t count) {
  std::vector<double> out(static_cast<size_t>(v.dim * count));
  std::visit(
      [&](const auto& x) {
        for (int64_t i = 0; i < v.dim; ++i)
          for (int64_t j = 0; j < count; ++j)
            out[i * count + j] = static_cast<double>(x[static_cast<size_t>(i * v.count + j)]);
      },
      v.data);
  return out;
}

double subspace_overlap(const std::vector<double>& y, const std::vector<double>& x, int64_t dim,
                        int64_t t, std::vector<double>* cosines) {
  std::vector<double> m(static_cast<size_t>(t * t));
  row_gemm(true, false, t, t, dim, 1.0, y.data(), t, x.data(), t, 0.0, m.data(), t);
  double fro = 0;
  for (double c : m) fro += c * c;
  if (cosines != nullptr) {  // the singular values of M: square roots of M^T M's eigenvalues
    std::vector<double> mtm(static_cast<size_t>(t * t)), ev(static_cast<size_t>(t));
    row_gemm(true, false, t, t, t, 1.0, m.data(), t, m.data(), t, 0.0, mtm.data(), t);
    const lapack_int n = static_cast<lapack_int>(t);
    cosines->assign(static_cast<size_t>(t), std::numeric_limits<double>::quiet_NaN());
    if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', n, mtm.data(), n, ev.data()) == 0)
      for (int64_t i = 0; i < t; ++i)  // ascending -> descending; rounding may pass 1
        (*cosines)[i] = std::min(std::sqrt(std::max(ev[t - 1 - i], 0.0)), 1.0);
  }
  return std::min(fro / static_cast<double>(t), 1.0);
}

void add_metrics(MatrixResult& r, const WorkUnit& u, const Decomposition* tuned,
                 const Decomposition& base, Side side) {
  const bool left = side != Side::Right;
  const Vectors& b = left ? base.left : base.right;
  r.null_maxcos = null_maxcos(b.dim, b.count);
  const int64_t tested = r.k - r.null_directions;
  r.update_energy.assign(static_cast<size_t>(r.k), 0.0);
  r.update_fro = 0;
  if (tuned == nullptr) {  // W = W0: no update, and the top subspace is the base's own
    r.subspace_overlap = tested > 0 ? 1.0 : std::numeric_limits<double>::quiet_NaN();
    r.principal_cos.assign(static_cast<size_t>(std::max<int64_t>(tested, 0)), 1.0);
    return;
  }
  const Vectors& t = left ? tuned->left : tuned->right;
  const std::vector<double> y = leading_columns(t, r.k);
  const Energy e = update_energy(u, y, r.k, left);
  r.update_fro = std::sqrt(e.fro_sq);
  for (int j = 0; j < r.k; ++j)
    r.update_energy[j] = e.fro_sq > 0 ? std::min(e.along[j] / e.fro_sq, 1.0) : 0.0;
  r.principal_cos.clear();
  if (tested <= 0 || b.count < tested) {
    r.subspace_overlap = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  r.subspace_overlap = subspace_overlap(leading_columns(t, tested), leading_columns(b, tested),
                                        t.dim, tested, &r.principal_cos);
}

}  // namespace indim::detail
