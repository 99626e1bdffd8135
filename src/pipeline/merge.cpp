#include "pipeline/merge.hpp"

#include "backend/finite.hpp"
#include "indim/error.hpp"
#include "indim/peft.hpp"
#include "indim/quant.hpp"

namespace indim::detail {

namespace {

// A quantised tensor's matrix `slice` (-1: a 2-D weight) [rows, cols], decoded with its scales.
template <typename T>
void decode_ref(const TensorRef& r, int64_t slice, Dense<T>& m) {
  const QuantRef& q = *r.quant;
  if (q.format == QuantFormat::NoScale) throw BadInput(InputProblem::Unsupported, q.problem);
  const size_t bits = static_cast<size_t>(dtype_bits(r.info->dtype));
  const size_t at = slice < 0 ? 0 : static_cast<size_t>(slice * m.rows * m.cols) * bits / 8;
  const std::string label = r.file->path() + ": tensor '" + q.stored_name + "'" +
                            (slice < 0 ? "" : " [" + std::to_string(slice) + "]");
  decode_quantised(r.file->data(*r.info) + at, r.info->dtype, m.rows, m.cols,
                   q.scales_for(slice, m.rows, m.cols), false, label, m.data);
}

}  // namespace

template <typename T>
Dense<T> load_matrix(const TensorRef& r) {
  Dense<T> m;
  m.rows = static_cast<int64_t>(r.info->shape[0]);
  m.cols = r.info->shape.size() > 1 ? static_cast<int64_t>(r.info->shape[1]) : 1;
  if (r.quant != nullptr) {
    decode_ref(r, -1, m);
    r.file->release(*r.info);
    return m;
  }
  m.data.resize(static_cast<size_t>(m.rows * m.cols));
  const size_t bad =
      convert_finite(r.file->data(*r.info), r.info->dtype, m.data.size(), m.data.data());
  r.file->release(*r.info);
  if (bad < m.data.size())
    throw BadInput(InputProblem::NonFinite, r.file->path() + ": tensor '" + r.info->name +
                                                "' holds a non-finite value at " +
                                                matrix_index_text(bad, m.cols));
  return m;
}

template <typename T>
Dense<T> load_slice(const TensorRef& r, int64_t index) {
  Dense<T> m;
  m.rows = static_cast<int64_t>(r.info->shape[1]);
  m.cols = static_cast<int64_t>(r.info->shape[2]);
  if (r.quant != nullptr) {
    decode_ref(r, index, m);
    return m;
  }
  const size_t n = static_cast<size_t>(m.rows * m.cols);
  m.data.resize(n);
  const size_t bytes = n * static_cast<size_t>(dtype_bits(r.info->dtype) / 8);
  const size_t bad = convert_finite(r.file->data(*r.info) + static_cast<size_t>(index) * bytes,
                                    r.info->dtype, n, m.data.data());
  if (bad < n)
    throw BadInput(InputProblem::NonFinite, r.file->path() + ": tensor '" + r.info->name +
                                                "' holds a non-finite value at " +
                                                matrix_index_text(bad, m.cols, index));
  return m;
}

LowRankUpdate lora_update(const MatchedPair& p) {
  const LoraModule& m = *p.lora;
  LowRankUpdate u;
  u.a = load_matrix<double>(m.a);
  u.b = load_matrix<double>(m.b);
  u.scale = m.scale;
  u.transposed = p.transposed;
  if (m.magnitude) u.magnitude = load_matrix<double>(*m.magnitude).data;
  return u;
}

std::string lora_label(const MatchedPair& p) {
  return p.lora->b.file->path() + ": module '" + p.lora->module + "'";
}

template <typename T>
Dense<T> merge_lora(const MatchedPair& p) {
  Dense<T> w = load_matrix<T>(p.base);
  apply_update(w, lora_update(p), lora_label(p));
  return w;
}

template Dense<float> load_matrix<float>(const TensorRef&);
template Dense<double> load_matrix<double>(const TensorRef&);
template Dense<float> load_slice<float>(const TensorRef&, int64_t);
template Dense<double> load_slice<double>(const TensorRef&, int64_t);
template Dense<float> merge_lora<float>(const MatchedPair&);
template Dense<double> merge_lora<double>(const MatchedPair&);

}  // namespace indim::detail
