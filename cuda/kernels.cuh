// Host launchers of indim's CUDA kernels. Every launcher takes the stream it runs on, checks the
// launch, and returns without synchronising.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace indim::cuda {

/// Element types a checkpoint stores that the device converts.
enum class StoredType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

/// Stored little-endian elements, row-major [rows, cols], to Dst row-major [rows, cols] or, with
/// `transpose`, [cols, rows]. *first_bad receives the smallest stored index of a value that is
/// not finite as a Dst, or with `fp32_range` as a float (ULLONG_MAX when none): NaN, infinity,
/// or an fp64 value beyond the fp32 range where the analysis is in fp32 (the Gram route
/// converts to fp64 even then). The launcher resets it first.
template <typename Dst>
void convert_stored(const void* src, StoredType type, int64_t rows, int64_t cols, bool transpose,
                    Dst* dst, unsigned long long* first_bad, cudaStream_t s,
                    bool fp32_range = false);

/// DoRA: scales each output of the row-major w [rows, cols] (its rows, or its columns when
/// `by_columns`) by magnitude[o] / ||output o||; magnitude is a device array of doubles.
template <typename T>
void dora_rescale(T* w, int64_t rows, int64_t cols, bool by_columns, const double* magnitude,
                  cudaStream_t s);

/// dst[i] = (Dst) src[i], n elements.
void cast_to_double(const float* src, double* dst, int64_t n, cudaStream_t s);
void cast_to_float(const double* src, float* dst, int64_t n, cudaStream_t s);
inline void cast(const float* src, double* dst, int64_t n, cudaStream_t s) {
  cast_to_double(src, dst, n, s);
}
inline void cast(const double* src, float* dst, int64_t n, cudaStream_t s) {
  cast_to_float(src, dst, n, s);
}

/// Row-major [rows, cols] -> row-major [cols, rows].
template <typename T>
void transpose(const T* src, T* dst, int64_t rows, int64_t cols, cudaStream_t s);

/// scale[j] = 1 / ||src[:, j]|| for the column-major src [rows, cols] (ld = rows), or 0 where the
/// norm is at most `floor` (a null direction stays zero instead of amplified rounding noise).
void inverse_column_norms(const double* src, int64_t rows, int64_t cols, double floor,
                          double* scale, cudaStream_t s);

/// out[j] = ||gv[:, j] - theta[j] v[:, j]|| for column-major gv, v [rows, cols] (ld = rows) and
/// device theta [cols]: the residuals of Ritz pairs.
void ritz_residuals(const double* gv, const double* v, const double* theta, int64_t rows,
                    int64_t cols, double* out, cudaStream_t s);

/// Column-major src [rows, cols] (ld = rows) times diag(scale) -> row-major dst [rows, cols].
template <typename Dst>
void scale_columns_to_row_major(const double* src, const double* scale, Dst* dst, int64_t rows,
                                int64_t cols, cudaStream_t s);

/// The fused similarity of tuned vectors Y (row-major [d, ky], first k columns) against base
/// vectors X (row-major [d, nb]): per j < k, max_i |<Y[:, j], X[:, i]>| and its argmax (smallest
/// index on ties), without forming the k x nb matrix; |<Y[:, j], X[:, i]>| for i < head_cols is
/// written to head (row-major [k, head_cols]) when head_cols > 0. maxcos/argmax/head are device
/// pointers; partial is device scratch of similarity_scratch(k, nb) bytes.
template <typename T>
void similarity(const T* y, int64_t ky, const T* x, int64_t nb, int64_t d, int64_t k,
                double* maxcos, int64_t* argmax, float* head, int64_t head_cols, void* partial,
                cudaStream_t s);
size_t similarity_scratch(int64_t k, int64_t nb);

}  // namespace indim::cuda
