#include "mitigate/mitigate_matrix.hpp"

#include <cmath>
#include <cstdio>

#include "backend/finite.hpp"
#include "backend/host_matrix.hpp"
#include "indim/error.hpp"
#include "indim/peft.hpp"
#include "mitigate/encode.hpp"
#include "pipeline/merge.hpp"

namespace indim::detail {

namespace {

MitigationRecord describe(const MatchedPair& p, const std::string& name, const KeptIntruders& k,
                          int64_t m, int64_t n) {
  MitigationRecord r;
  r.name = name;
  r.tuned_name = p.tuned_name;
  r.layer = layer_index(p.base_name);
  r.type = matrix_type(p.base_name);
  r.shape = {m, n};
  r.conv1d = p.conv1d;
  r.adapter = p.lora != nullptr;
  r.embedding = p.lora != nullptr && p.lora->embedding;
  r.intruders = k.js;
  r.sigma = k.sigma;
  r.maxcos = k.maxcos;
  return r;
}

// A stored matrix (or one slice of a stack) as fp64 [rows, cols].
Dense<double> stored(const TensorRef& t, int64_t slice) {
  return slice >= 0 ? load_slice<double>(t, slice) : load_matrix<double>(t);
}

// The analysed view of a stored matrix: transposed for a Conv1D, then the part's rows.
Dense<double> analysed(const Dense<double>& s, bool conv1d, const std::vector<int64_t>& rows) {
  Dense<double> a = conv1d ? transposed(s) : s;
  if (rows.empty()) return a;
  Dense<double> r{static_cast<int64_t>(rows.size()), a.cols, {}};
  for (int64_t row : rows)
    r.data.insert(r.data.end(), a.data.begin() + row * a.cols, a.data.begin() + (row + 1) * a.cols);
  return r;
}

// x (analysed, the part's rows) written into the stored matrix s.
void scatter(const Dense<double>& x, bool conv1d, const std::vector<int64_t>& rows,
             Dense<double>& s) {
  for (int64_t i = 0; i < x.rows; ++i) {
    const int64_t row = rows.empty() ? i : rows[static_cast<size_t>(i)];
    for (int64_t c = 0; c < x.cols; ++c) (conv1d ? s.at(c, row) : s.at(row, c)) = x.at(i, c);
  }
}

// A variant the checkpoint's dtype cannot hold (a control's rescaling of an F16 tensor can pass
// 65504) is refused rather than written with an infinity; nothing is published.
void refuse_overflow(const Dense<double>& m, DType dtype, const VariantSpec& v, const TensorRef& t,
                     int64_t slice) {
  const size_t bad = first_overflow(m.data, dtype);
  if (bad == m.data.size()) return;
  char value[32];
  std::snprintf(value, sizeof value, "%.6g", m.data[bad]);
  throw BadInput(InputProblem::Overflow,
                 t.file->path() + ": tensor '" + t.info->name + "' in variant " + v.folder() +
                     " would hold " + value + " at " + matrix_index_text(bad, m.cols, slice) +
                     ", beyond " + dtype_name(dtype) + "'s range; no variant was written");
}

}  // namespace

MitigationRecord mitigate_tensor(const MatchedPair& p, const MatrixPart& part,
                                 const KeptIntruders& k, const std::vector<VariantSpec>& specs,
                                 VariantOuts& outs) {
  const Dense<double> s = stored(p.tuned, part.slice);
  const Dense<double> w = analysed(s, p.conv1d, part.rows);
  const Dense<double> w0 = analysed(stored(p.base, part.slice), p.conv1d, part.rows);
  const std::string name = part.label.empty() ? p.base_name : p.base_name + "[" + part.label + "]";
  MitigationRecord rec = describe(p, name, k, w.rows, w.cols);
  const MatrixStart start = dense_start(w0, w, k.u, k.q());
  rec.update_fro = start.dw_fro, rec.weight_fro = start.w_fro;
  const DType dtype = p.tuned.info->dtype;
  const size_t count = static_cast<size_t>(s.rows * s.cols);
  const size_t bytes = count * static_cast<size_t>(dtype_bits(dtype) / 8);
  const uint64_t offset = part.slice >= 0 ? static_cast<uint64_t>(part.slice) * bytes : 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    MitigatedMatrix m;
    const Dense<double> x = dense_variant(start, w0, w, specs[i], m);
    // Read back what the folder holds (another part of this tensor may be in it already).
    Dense<double> now{s.rows, s.cols, std::vector<double>(count)};
    convert_elements(outs[i]->read(p.tuned, offset, bytes).data(), dtype, count, now.data.data());
    scatter(x, p.conv1d, part.rows, now);
    refuse_overflow(now, dtype, specs[i], p.tuned, part.slice);
    outs[i]->write(p.tuned, offset, encode_values(now.data, dtype));
    rec.variants.push_back(std::move(m));
  }
  return rec;
}

namespace {

// The module's update as analysed (Backend::decompose_lowrank's orientation): W = W0 + s B A.
Factors analysed_factors(const LowRankUpdate& up, bool flip) {
  return {flip ? transposed(up.a) : up.b, flip ? transposed(up.b) : up.a, up.scale};
}

bool same_factors(const Factors& a, const Factors& b) {
  return a.b.rows == b.b.rows && a.b.cols == b.b.cols && a.a.rows == b.a.rows &&
         a.a.cols == b.a.cols && a.b.data == b.b.data && a.a.data == b.a.data;
}

double peft_scale(double alpha, int64_t rank, bool rslora) {
  return rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

// Hands a variant's factors to its folder: nothing when they and their scale are the module's;
// only a new alpha when the factors are; else new factors whose scale PEFT computes from the
// rank and alpha written with them (the rounding of that division folded into B).
void hand_over(VariantOut& out, const MatchedPair& p, const Factors& was, Factors x, bool flip,
               bool rslora, double module_alpha) {
  if (same_factors(x, was)) {
    if (x.scale != was.scale)
      out.set_module(*p.lora, nullptr, nullptr, was.rank(), module_alpha * (x.scale / was.scale));
    return;
  }
  const int64_t rank = x.rank();
  const double alpha = rslora ? x.scale * std::sqrt(static_cast<double>(rank)) : x.scale * rank;
  const double fold = x.scale / peft_scale(alpha, rank, rslora);
  for (double& v : x.b.data) v *= fold;
  const Dense<double> a = flip ? transposed(x.b) : x.a;  // back to the stored orientation
  const Dense<double> b = flip ? transposed(x.a) : x.b;
  out.set_module(*p.lora, &a, &b, rank, alpha);
}

}  // namespace

MitigationRecord mitigate_module(const MatchedPair& p, const KeptIntruders& k,
                                 const std::vector<VariantSpec>& specs, VariantOuts& outs,
                                 int64_t max_rank, const LoraConfig& config) {
  const bool rslora = config.use_rslora;
  const LowRankUpdate up = lora_update(p);
  const bool flip = up.transposed != p.conv1d;
  const Factors f = analysed_factors(up, flip);
  Dense<double> w0 = load_matrix<double>(p.base);
  if (p.conv1d) w0 = transposed(w0);
  MitigationRecord rec = describe(p, p.base_name, k, w0.rows, w0.cols);
  rec.rank = f.rank();
  const MatrixStart start = factor_start(w0, f, k.u, k.q());
  rec.update_fro = start.dw_fro, rec.weight_fro = start.w_fro;
  const double module_alpha = config.alpha_for(p.lora->module);
  for (size_t i = 0; i < specs.size(); ++i) {
    MitigatedMatrix m;
    Factors x = factor_variant(start, f, specs[i], max_rank, m);
    hand_over(*outs[i], p, f, std::move(x), flip, rslora, module_alpha);
    rec.variants.push_back(std::move(m));
  }
  return rec;
}

}  // namespace indim::detail
