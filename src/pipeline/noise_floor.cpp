#include "pipeline/noise_floor.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>

#include "pipeline/decompose.hpp"

namespace indim::detail {

namespace {

// The step of a float dtype at x: its unit in the last place (subnormals' at the bottom).
double float_step(double x, DType t) {
  if (x == 0 || t == DType::F64) return 0;
  int e = 0;
  std::frexp(x, &e);  // |x| in [2^(e-1), 2^e)
  switch (t) {
    case DType::BF16:
      return std::ldexp(1.0, std::max(e - 1, -126) - 7);
    case DType::F16:
      return std::ldexp(1.0, std::max(e - 1, -14) - 10);
    default:
      return std::ldexp(1.0, std::max(e - 1, -126) - 23);
  }
}

double float_round(double x, DType t) {
  switch (t) {
    case DType::BF16:
      return bf16_to_float(float_to_bf16(static_cast<float>(x)));
    case DType::F16:
      return fp16_to_float(float_to_fp16(static_cast<float>(x)));
    case DType::F64:
      return x;
    default:
      return static_cast<float>(x);
  }
}

double amax_of(const std::vector<double>& w, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
               int64_t c1) {
  double a = 0;
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t j = c0; j < c1; ++j) a = std::max(a, std::fabs(w[i * cols + j]));
  return a;
}

// Per element, the step of the block-scaled code format: scale (the producer's, from the
// block's amax) times the code's step at w / scale.
std::vector<double> block_steps(const std::vector<double>& w, int64_t rows, int64_t cols,
                                const TargetFormat& f) {
  const bool mx = f.kind == TargetFormat::Kind::Mxfp4;
  const DType codes = mx ? DType::F4 : f.dtype;
  const int64_t br = mx ? 1 : f.block_rows, bc = mx ? 32 : f.block_cols;
  double code_max = 0;
  const float* table = minifloat_table(codes);
  for (int c = 0; c < 256; ++c)
    if (std::isfinite(table[c])) code_max = std::max(code_max, static_cast<double>(table[c]));
  std::vector<double> step(w.size(), 0.0);
  for (int64_t r0 = 0; r0 < rows; r0 += br)
    for (int64_t c0 = 0; c0 < cols; c0 += bc) {
      const int64_t r1 = std::min(rows, r0 + br), c1 = std::min(cols, c0 + bc);
      const double amax = amax_of(w, cols, r0, r1, c0, c1);
      if (amax == 0) continue;
      double s =
          mx ? std::ldexp(1.0, static_cast<int>(std::floor(std::log2(amax))) - 2) : amax / code_max;
      if (!mx && f.pow2) s = std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(s))));
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = c0; j < c1; ++j)
          step[i * cols + j] = s * minifloat_step(static_cast<float>(w[i * cols + j] / s), codes);
    }
  return step;
}

std::vector<double> decoded(const Quantised& q, DType codes, DType scale_dtype, int64_t rows,
                            int64_t cols, int64_t br, int64_t bc) {
  QuantScales s;
  s.data = q.scales.data();
  s.dtype = scale_dtype;
  s.block_rows = br, s.block_cols = bc;
  s.grid_rows = q.grid_rows, s.grid_cols = q.grid_cols;
  s.label = "noise floor scales";
  std::vector<double> out;
  decode_quantised(q.codes.data(), codes, rows, cols, s, false, "noise floor", out);
  return out;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

std::string TargetFormat::describe() const {
  switch (kind) {
    case Kind::Fp8:
      return std::string(dtype_name(dtype)) + " " + std::to_string(block_rows) + "x" +
             std::to_string(block_cols) + " blocks" + (pow2 ? " (ue8m0)" : "");
    case Kind::Mxfp4:
      return "MXFP4";
    default:
      return dtype_name(dtype);
  }
}

bool noise_floor_applies(const WorkUnit& u, AnalyzeOptions::NoiseFloorMode mode) {
  using M = AnalyzeOptions::NoiseFloorMode;
  if (mode == M::Off) return false;
  if (mode == M::On) return true;
  return u.pair.base.quant != nullptr || u.pair.tuned.quant != nullptr;
}

TargetFormat tuned_format(const WorkUnit& u) {
  TargetFormat f;
  if (u.pair.lora != nullptr) {  // an adapter's matrix is merged in fp32 or fp64, never stored
    f.dtype = DType::F32;
    return f;
  }
  const TensorRef& t = u.pair.tuned;
  const QuantRef* q = t.quant;
  if (q == nullptr || q->format == QuantFormat::NoScale) {
    f.dtype = dtype_is_analysable(t.info->dtype) ? t.info->dtype : DType::F32;
    return f;
  }
  if (q->format == QuantFormat::Mxfp4) {
    f.kind = TargetFormat::Kind::Mxfp4;
    f.dtype = DType::F4;
    return f;
  }
  f.kind = TargetFormat::Kind::Fp8;
  f.dtype = t.info->dtype;
  f.pow2 = q->pow2;
  f.block_rows = q->format == QuantFormat::Fp8Tensor ? u.rows : q->block_rows;
  f.block_cols = q->format == QuantFormat::Fp8Block ? q->block_cols : u.cols;
  return f;
}

std::vector<double> requantise(const std::vector<double>& w, int64_t rows, int64_t cols,
                               const TargetFormat& f, uint64_t seed) {
  // A base value on its format's grid stands for any weight of its cell: placed uniformly in
  // it (u) and moved by the dither of half a step (d), a quarter of the codes land in a
  // neighbouring cell, as two quantisations of nearly the same weights differ. (A dither alone
  // would round every code back to itself.)
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> half(-0.5, 0.5);
  auto moved = [&](double v, double step) {
    const double u = half(rng);
    return v + (u + half(rng)) * step;
  };
  std::vector<double> x(w.size());
  if (f.kind == TargetFormat::Kind::Float) {
    for (size_t i = 0; i < w.size(); ++i)
      x[i] = float_round(moved(w[i], float_step(w[i], f.dtype)), f.dtype);
    return x;
  }
  const std::vector<double> step = block_steps(w, rows, cols, f);
  for (size_t i = 0; i < w.size(); ++i) x[i] = moved(w[i], step[i]);
  if (f.kind == TargetFormat::Kind::Mxfp4)
    return decoded(quantise_mxfp4(x, rows, cols), DType::F4, DType::U8, rows, cols, 1, 32);
  return decoded(quantise_fp8(x, rows, cols, f.dtype, f.block_rows, f.block_cols, f.pow2), f.dtype,
                 DType::F32, rows, cols, f.block_rows, f.block_cols);
}

namespace {

Decomposition decompose_copy(Backend& b, const std::vector<double>& w, int64_t rows, int64_t cols,
                             const Decomposition& base, Side side, int k, const AnalyzeOptions& o,
                             const std::string& label) {
  std::string why;
  if (o.algo == "auto") {
    std::optional<Decomposition> d = b.decompose_warm(
        [&] {
          return Dense<double>{rows, cols, w};
        },
        rows, cols, base, side, k, label, &why);
    if (d) return std::move(*d);
  }
  if (b.precision() == Precision::F64)
    return b.decompose(Dense<double>{rows, cols, w}, side, k, label);
  return b.decompose(Dense<float>{rows, cols, std::vector<float>(w.begin(), w.end())}, side, k,
                     label);
}

}  // namespace

void add_noise_floor(Backend& b, const WorkUnit& u, const Decomposition& base, int k,
                     const AnalyzeOptions& o, std::vector<MatrixResult>& records) {
  if (records.empty()) return;
  const TargetFormat f = tuned_format(u);
  if (f.kind == TargetFormat::Kind::Mxfp4 && u.cols % 32 != 0) return;  // no such producer
  const Dense<double> w0 = load_side<double>(u, /*tuned=*/false);
  const std::vector<double> w = requantise(w0.data, w0.rows, w0.cols, f,
                                           fnv1a(u.name) ^ static_cast<uint64_t>(u.tuned_index));
  const Decomposition d =
      decompose_copy(b, w, w0.rows, w0.cols, base, o.side, k, o, u.name + " (noise floor)");
  for (MatrixResult& r : records) {
    const Side s = r.side == "right" ? Side::Right : Side::Left;
    const MatrixResult nf = intruder_record(b, d, base, s, k, records.front().eps);
    r.has_noise_floor = true;
    r.noise_floor.format = f.describe();
    r.noise_floor.maxcos = nf.maxcos;
    r.noise_floor.counts = nf.counts;
  }
}

}  // namespace indim::detail
