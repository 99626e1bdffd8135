#include "pipeline/decompose.hpp"

#include <algorithm>
#include <optional>

#include "backend/finite.hpp"
#include "backend/host_matrix.hpp"
#include "indim/error.hpp"
#include "indim/peft.hpp"
#include "indim/schedule.hpp"
#include "pipeline/merge.hpp"

namespace indim::detail {

namespace {

template <typename T>
Dense<T> take_rows(Dense<T>&& w, const std::vector<int64_t>& rows) {
  if (rows.empty()) return std::move(w);
  Dense<T> r{static_cast<int64_t>(rows.size()), w.cols, {}};
  r.data.reserve(rows.size() * static_cast<size_t>(w.cols));
  for (int64_t row : rows)
    r.data.insert(r.data.end(), w.data.begin() + row * w.cols, w.data.begin() + (row + 1) * w.cols);
  return r;
}

template <typename T>
Dense<T> oriented(Dense<T>&& w, bool conv1d) {
  return conv1d ? transposed(w) : std::move(w);
}

// What names a side in errors: "<file>: tensor '<name>'" or "<file>: module '<name>' merged".
std::string read_label(const WorkUnit& u, bool tuned) {
  const MatchedPair& p = u.pair;
  const std::string label = tuned
                                ? p.tuned.file->path() + ": " + (p.lora ? "module '" : "tensor '") +
                                      p.tuned_name + (p.lora ? "' merged" : "'")
                                : p.base.file->path() + ": tensor '" + p.base_name + "'";
  return u.part.label.empty() ? label : label + " [" + u.part.label + "]";
}

Decomposition on_backend(Backend& b, const WorkUnit& u, bool tuned, Side side, int64_t keep) {
  const MatchedPair& p = u.pair;
  const SideRead& r = tuned ? u.tuned : u.base;
  const TensorRef& ref = tuned ? p.tuned : p.base;
  if (r.kind == SideRead::Kind::Merged) {  // merged where the backend works: on the device
    Decomposition d = b.decompose_merged(
        r.data, p.base.info->dtype, r.rows, r.cols, lora_update(p), p.conv1d, side, keep,
        p.base.file->path() + ": tensor '" + p.base_name + "'", lora_label(p));
    p.base.file->release(*p.base.info);
    return d;
  }
  // Contiguous stored bytes go as they are (quantised codes with their scales); a non-finite
  // value is reported within the part.
  Decomposition d = r.scales.present()
                        ? b.decompose_quantised(r.data, r.dtype, r.rows, r.cols, r.transposed,
                                                r.scales, side, keep, read_label(u, tuned))
                        : b.decompose_stored(r.data, r.dtype, r.rows, r.cols, r.transposed, side,
                                             keep, read_label(u, tuned));
  if (u.part.label.empty()) ref.file->release(*ref.info);
  return d;
}

// Finite input can still overflow a decomposition in fp32 (values near 3.4e38): refuse rather
// than report infinite or NaN singular values.
void check_finite(const Decomposition& d, Precision precision, const std::string& where) {
  auto finite = [](const Vectors& v) {
    return std::visit([](const auto& x) { return all_finite(x); }, v.data);
  };
  const bool ok = all_finite(d.sigma) && finite(d.left) && finite(d.right);
  if (!ok)
    throw BadInput(InputProblem::Overflow,
                   where + ": its decomposition overflows in " + precision_name(precision) +
                       (precision == Precision::F32 ? " (values too large); use --precision fp64"
                                                    : " (values too large)"));
}

// "<file>: tensor '<name>[part]'": where an overflow is reported.
std::string tensor_where(const WorkUnit& u, bool tuned) {
  const MatchedPair& p = u.pair;
  return (tuned ? p.tuned.file->path() : p.base.file->path()) + ": tensor '" +
         (tuned ? p.tuned_name : p.base_name) +
         (u.part.label.empty() ? "" : "[" + u.part.label + "]") + "'";
}

}  // namespace

template <typename T>
Dense<T> load_side(const WorkUnit& u, bool tuned) {
  const MatchedPair& p = u.pair;
  const TensorRef& ref = tuned ? p.tuned : p.base;
  Dense<T> w;
  if (u.part.slice >= 0)
    w = load_slice<T>(ref, u.part.slice);
  else if (tuned && p.lora != nullptr)
    w = oriented(merge_lora<T>(p), p.conv1d);
  else
    w = oriented(load_matrix<T>(ref), p.conv1d);
  return take_rows(std::move(w), u.part.rows);
}
template Dense<float> load_side<float>(const WorkUnit&, bool);
template Dense<double> load_side<double>(const WorkUnit&, bool);

Decomposition decompose_side(Backend& b, const WorkUnit& u, bool tuned, Side side, int64_t keep) {
  Decomposition d;
  if ((tuned ? u.tuned : u.base).on_backend())
    d = on_backend(b, u, tuned, side, keep);
  else if (b.precision() == Precision::F32)
    d = b.decompose(load_side<float>(u, tuned), side, keep, read_label(u, tuned));
  else
    d = b.decompose(load_side<double>(u, tuned), side, keep, read_label(u, tuned));
  check_finite(d, b.precision(), tensor_where(u, tuned));
  return d;
}

namespace {

// Why a LoRA unit cannot take the low-rank route before trying it; empty when it may.
std::string lowrank_precheck(const Backend& b, const WorkUnit& u, int64_t keep,
                             const AnalyzeOptions& o) {
  if (!o.lowrank) return "--no-lowrank";
  if (!u.part.label.empty()) return "a part of a fused matrix";
  if (u.pair.base.quant != nullptr) return "a quantised base (decoded on the host)";
  if (u.tuned.kind != SideRead::Kind::Merged) return "the base is not read whole";
  const int64_t r = static_cast<int64_t>(u.pair.lora->a.info->shape[0]);
  const bool warm = o.algo == "auto" && b.warm_applies(u.rows, u.cols, keep);
  const int64_t most = lowrank_max_rank(u.rows, u.cols, warm);
  if (r > most)
    return "r = " + std::to_string(r) + " is past the break-even " + std::to_string(most) +
           " for " + std::to_string(u.rows) + " x " + std::to_string(u.cols) +
           (warm ? " against the warm start" : "");
  return {};
}

// The full route on the tuned side: the iteration warm-started from the base's vectors where
// the backend runs it and --algo is left to choose, else the Gram (or the --algo asked for);
// a warm start that was tried and gave up is said in the route.
Decomposition full_route(Backend& b, const WorkUnit& u, const Decomposition& base, Side side,
                         int64_t keep, const AnalyzeOptions& o) {
  std::string why;
  if (o.algo == "auto") {
    std::optional<Decomposition> d =
        b.decompose_warm([&] { return load_side<double>(u, /*tuned=*/true); }, u.rows, u.cols, base,
                         side, keep, read_label(u, true), &why);
    if (d) {
      check_finite(*d, b.precision(), tensor_where(u, true));
      return std::move(*d);
    }
  }
  Decomposition d = decompose_side(b, u, /*tuned=*/true, side, keep);
  if (!why.empty()) d.route += " (warm start: " + why + ")";
  return d;
}

}  // namespace

Decomposition decompose_tuned(Backend& b, const WorkUnit& u, const Decomposition& base, Side side,
                              int64_t keep, const AnalyzeOptions& o) {
  const MatchedPair& p = u.pair;
  if (p.lora == nullptr) return full_route(b, u, base, side, keep, o);
  std::string why = lowrank_precheck(b, u, keep, o);
  if (why.empty()) {
    const LowRankUpdate update = lora_update(p);
    LowRankProblem pr;
    pr.base_bytes = u.tuned.data;
    pr.dtype = p.base.info->dtype;
    pr.rows = u.tuned.rows, pr.cols = u.tuned.cols;
    pr.update = &update;
    pr.conv1d = p.conv1d;
    pr.base = &base;
    pr.side = side;
    pr.keep = keep;
    pr.tol = o.lowrank_tol;
    pr.base_label = p.base.file->path() + ": tensor '" + p.base_name + "'";
    pr.label = lora_label(p);
    std::optional<Decomposition> d = b.decompose_lowrank(pr, &why);
    if (d) {
      p.base.file->release(*p.base.info);
      check_finite(*d, b.precision(), pr.label);
      return std::move(*d);
    }
  }
  Decomposition d = full_route(b, u, base, side, keep, o);
  d.route += " (full route: " + why + ")";
  return d;
}

}  // namespace indim::detail
