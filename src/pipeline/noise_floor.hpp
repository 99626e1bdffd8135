// The noise floor of a unit: its base against an independent re-quantisation of itself in the
// tuned side's format (the base plus a dither of half a quantisation step, quantised as that
// format's producer does). Two quantisations of nearly the same weights rotate top vectors
// whose singular values lie closer than the rounding: what a fine-tune that changed nothing
// but was quantised on its own would count.
#pragma once

#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// A format the noise floor quantises in: FP8 with block scales (a channel's or the tensor's
/// scale is a block of 1 x cols or rows x cols), MXFP4, or a float dtype (BF16, F16, F32, F64).
struct TargetFormat {
  enum class Kind { Fp8, Mxfp4, Float };
  Kind kind = Kind::Float;
  DType dtype = DType::BF16;
  int64_t block_rows = 128, block_cols = 128;
  bool pow2 = false;
  std::string describe() const;
};

/// Whether `mode` asks for the noise floor of `u`: On, or Auto with either side quantised.
bool noise_floor_applies(const WorkUnit& u, AnalyzeOptions::NoiseFloorMode mode);

/// The tuned side's format of `u` for its matrix as analysed ([rows, cols]).
TargetFormat tuned_format(const WorkUnit& u);

/// w (row-major [rows, cols]), each value placed uniformly within its quantisation cell of `f`
/// and moved by a dither uniform in half a step either way (drawn from `seed`), quantised as
/// f's producer does, decoded back to doubles.
std::vector<double> requantise(const std::vector<double>& w, int64_t rows, int64_t cols,
                               const TargetFormat& f, uint64_t seed);

/// Computes the noise floor of `u` against its base's decomposition `base` and attaches it to
/// each of its records (one per side; keep k, the eps grid of the records).
void add_noise_floor(Backend& b, const WorkUnit& u, const Decomposition& base, int k,
                     const AnalyzeOptions& o, std::vector<MatrixResult>& records);

}  // namespace indim::detail
