// Quantised weights: FP8 codes with block, channel or tensor scales (DeepSeek and Qwen3-FP8's
// `weight_scale_inv`, compressed-tensors' `weight_scale`) and MXFP4 experts (gpt-oss's `_blocks`
// and `_scales`). How a weight pairs with its scales, how it decodes, and how the producers
// quantise (for the noise floor and for generated checkpoints).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "indim/checkpoint.hpp"
#include "indim/dtype.hpp"

namespace indim {

namespace detail {
class FileSource;
}  // namespace detail

/// @brief The scales of one quantised matrix [rows, cols] (stored orientation): scale (i, j)
/// multiplies the codes of rows [i br, (i + 1) br) and columns [j bc, (j + 1) bc) (ragged at
/// the edges). One scale for the tensor is a grid of 1 x 1, one per output channel rows x 1.
struct QuantScales {
  const uint8_t* data = nullptr;  ///< row-major [grid_rows, grid_cols]; nullptr: not quantised
  DType dtype = DType::F32;       ///< F32, BF16, F16 (values), F8_E8M0 or U8 (2^(e - 127))
  int64_t block_rows = 1, block_cols = 1;
  int64_t grid_rows = 1, grid_cols = 1;
  bool pow2 = false;  ///< scale_fmt "ue8m0": every F32/BF16/F16 scale must be a power of two
  std::string label;  ///< "<file>: tensor '<scale name>'", for errors
  bool present() const { return data != nullptr; }
  size_t bytes() const;
};

/// @brief How a quantised weight is stored.
enum class QuantFormat {
  Fp8Block,    ///< FP8 codes, one scale per block (default 128 x 128)
  Fp8Channel,  ///< FP8 codes, one scale per output row
  Fp8Tensor,   ///< FP8 codes, one scale for the matrix
  Mxfp4,       ///< E2M1 codes two per byte (low nibble first), one E8M0 scale per 32
  NoScale,     ///< 1-byte float codes with no scale convention: refused when selected
};
const char* quant_format_name(QuantFormat f);

/// @brief A quantised weight's scale tensor and its convention, attached to the weight's
/// TensorRef (TensorRef::quant). The weight's TensorInfo is its logical one: for MXFP4 dtype F4
/// and shape [..., rows, cols] over the `_blocks` tensor's bytes.
struct QuantRef {
  QuantFormat format = QuantFormat::NoScale;
  TensorRef scale;  ///< the scale tensor (file, entry); empty for NoScale
  int64_t block_rows = 1, block_cols = 1;
  bool pow2 = false;
  std::string stored_name;  ///< the codes' tensor as stored ("X_blocks" for MXFP4)
  std::string problem;      ///< NoScale: why the weight cannot be decoded
  bool malformed = false;   ///< NoScale: a scale is missing or does not fit (else: no convention)
  /// @brief The scales of matrix `slice` of a 3-D stack (-1: a 2-D weight) [rows, cols].
  QuantScales scales_for(int64_t slice, int64_t rows, int64_t cols) const;
  /// @brief "fp8-block 128x128, scale <name> F32 [56, 16]" for inspect and the report.
  std::string describe() const;
};

/// @brief The quantisation settings of a checkpoint's config.json (`quantization_config`).
struct QuantConfig {
  bool present = false;                        ///< config.json names a quantisation method
  std::string method;                          ///< "fp8", "compressed-tensors", "mxfp4", ...
  int64_t block_rows = 128, block_cols = 128;  ///< weight_block_size / block_structure
  bool ue8m0 = false;                          ///< scale_fmt "ue8m0"
};

/// @brief Reads `quantization_config` from the config.json in `dir`, when there is one, opened
/// through `files` (nullptr: by its path; a service passes the job's confined source). Throws
/// indim::BadInput for a config.json that is not JSON or a block size that is not two positive
/// integers.
QuantConfig read_quant_config(const std::string& dir, const detail::FileSource* files = nullptr);

/// @brief n minifloat codes (`dtype`; F4 packed two per byte, low nibble first) at src, from
/// code `first`, as float.
void decode_codes(const uint8_t* src, DType dtype, size_t first, size_t n, float* dst);

/// @brief Decodes a quantised matrix [rows, cols] of codes with its scales into dst (row-major,
/// [cols, rows] when `transpose`). Throws indim::BadInput naming `label` (the codes) and the
/// position of a non-finite code, or the scale tensor and position of a non-finite, negative
/// or (ue8m0) not power-of-two scale.
template <typename T>
void decode_quantised(const uint8_t* codes, DType dtype, int64_t rows, int64_t cols,
                      const QuantScales& scales, bool transpose, const std::string& label,
                      std::vector<T>& dst);

/// @brief A matrix quantised as a producer's quantiser does: codes and scales (F32 for FP8,
/// E8M0 bytes for MXFP4), in the layout the checkpoint stores.
struct Quantised {
  std::vector<uint8_t> codes;   ///< FP8: rows x cols bytes; MXFP4: rows x cols / 2
  std::vector<uint8_t> scales;  ///< F32 little-endian (FP8) or U8 E8M0 (MXFP4), row-major grid
  int64_t grid_rows = 1, grid_cols = 1;
};

/// @brief FP8 (`dtype`) with one scale per block_rows x block_cols block: scale = amax / max
/// code (DeepSeek's and Qwen3's weight quantiser; ue8m0 rounds it up to a power of two),
/// codes = round(w / scale). Block rows x cols = [rows, 1 x cols] gives a scale per channel,
/// [rows, cols] one per tensor.
Quantised quantise_fp8(const std::vector<double>& w, int64_t rows, int64_t cols, DType dtype,
                       int64_t block_rows, int64_t block_cols, bool ue8m0 = false);
/// @brief MXFP4 as OCP MX and gpt-oss quantise: per 32 values of a row the shared scale
/// 2^(floor(log2 amax) - 2), codes E2M1 = round(w / scale), saturating at 6. cols % 32 == 0.
Quantised quantise_mxfp4(const std::vector<double>& w, int64_t rows, int64_t cols);

}  // namespace indim
