#include <cuda_fp16.h>

#include <cfloat>

#include "cuda/check.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

namespace {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items, kThreads per block: enough to cover n, at most
// 65535 (the loops stride over the rest).
unsigned grid_stride_blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 ? b : 65535);
}

// One block per column, grid-stride over columns past 65535.
unsigned column_blocks(int64_t cols) { return static_cast<unsigned>(cols < 65535 ? cols : 65535); }

// Element-wise cast. One thread per element, grid-stride.
template <typename Src, typename Dst>
__global__ void cast_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = static_cast<Dst>(src[i]);
}

// Transpose of a row-major [rows, cols] matrix through 32 x 33 shared tiles (the +1 avoids bank
// conflicts). Block 32 x 8; each thread moves 4 elements in and 4 out.
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t rows,
                                 int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t c0 = int64_t(blockIdx.x) * 32, r0 = int64_t(blockIdx.y) * 32;
  for (int k = threadIdx.y; k < 32; k += 8) {
    const int64_t r = r0 + k, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += 8) {
    const int64_t r = c0 + k, c = r0 + threadIdx.x;  // dst is [cols, rows]
    if (r < cols && c < rows) dst[r * rows + c] = tile[threadIdx.x][k];
  }
}

// Per column j of the column-major src [rows, cols]: the norm of src[:, j] - theta[j] *
// sub[:, j] (just src[:, j] when sub is null), written as is, or when `inverse` as 1 / norm (0 at
// or below floor). One block per column (grid-stride over columns), each thread summing a
// strided part of the column in fp64, then a shared-memory tree reduction.
__global__ void column_norms_kernel(const double* __restrict__ src, const double* __restrict__ sub,
                                    const double* __restrict__ theta, int64_t rows, int64_t cols,
                                    bool inverse, double floor, double* __restrict__ out) {
  __shared__ double part[kThreads];
  for (int64_t j = blockIdx.x; j < cols; j += gridDim.x) {
    double sum = 0;
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
      const double v = src[i + j * rows] - (sub != nullptr ? theta[j] * sub[i + j * rows] : 0.0);
      sum += v * v;
    }
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
      if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      const double norm = sqrt(part[0]);
      out[j] = !inverse ? norm : norm > floor && norm > 0 ? 1.0 / norm : 0.0;
    }
    __syncthreads();  // part[] is reused by the next column
  }
}

// Row-major dst[i, j] = src[i + j * rows] * scale[j]. One thread per element of dst, so writes
// coalesce.
template <typename Dst>
__global__ void scale_columns_kernel(const double* __restrict__ src,
                                     const double* __restrict__ scale, Dst* __restrict__ dst,
                                     int64_t rows, int64_t cols) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * cols;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, j = e % cols;
    dst[e] = static_cast<Dst>(src[i + j * rows] * scale[j]);
  }
}

// Reads element i of a stored tensor as double. bf16 is the top half of an fp32; fp16 goes
// through the hardware conversion; fp32/fp64 are read as they are (the buffer is cudaMalloc'd,
// so aligned).
__device__ double load_stored(const void* src, int type, int64_t i) {
  switch (type) {
    case 0:
      return static_cast<const float*>(src)[i];
    case 1:
      return static_cast<const double*>(src)[i];
    case 2:
      return __half2float(__ushort_as_half(static_cast<const unsigned short*>(src)[i]));
    default: {
      const unsigned int bits =
          static_cast<unsigned int>(static_cast<const unsigned short*>(src)[i]) << 16;
      return __uint_as_float(bits);
    }
  }
}

// One thread per output element, grid-stride. Output (i, j) of [R, C] reads stored (i, j), or
// stored (j, i) when transposing (then R = cols, C = rows); consecutive threads write
// consecutive outputs. Non-finite values report their stored index through atomicMin.
template <typename Dst>
__global__ void convert_stored_kernel(const void* __restrict__ src, int type, int64_t rows,
                                      int64_t cols, bool transpose, bool fp32_range,
                                      Dst* __restrict__ dst,
                                      unsigned long long* __restrict__ first_bad) {
  const int64_t n = rows * cols;
  const int64_t out_cols = transpose ? rows : cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / out_cols, j = e % out_cols;
    const int64_t from = transpose ? j * cols + i : e;
    // Checked as converted: an fp64 value beyond the fp32 range is infinite as a float, and an
    // fp32 analysis refuses it as the CPU backend does, whatever Dst the route works in.
    const double d = load_stored(src, type, from);
    const Dst v = static_cast<Dst>(d);
    const bool bad = fp32_range ? !isfinite(static_cast<float>(d)) : !isfinite(v);
    if (bad) atomicMin(first_bad, static_cast<unsigned long long>(from));
    dst[e] = v;
  }
}

// One block per output o (a row of w, or a column when by_columns): the threads sum the squares
// of its entries in fp64, reduce in shared memory, then scale the entries by magnitude[o] / norm
// (0 for an all-zero output).
template <typename T>
__global__ void dora_rescale_kernel(T* __restrict__ w, int64_t rows, int64_t cols, bool by_columns,
                                    const double* __restrict__ magnitude) {
  __shared__ double part[256];
  const int64_t o = blockIdx.x;
  const int64_t len = by_columns ? rows : cols;
  auto at = [&](int64_t i) -> T& { return by_columns ? w[i * cols + o] : w[o * cols + i]; };
  double sum = 0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    const double v = static_cast<double>(at(i));
    sum += v * v;
  }
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  const double norm = sqrt(part[0]);
  const double f = norm > 0 ? magnitude[o] / norm : 0.0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) at(i) = static_cast<T>(at(i) * f);
}

constexpr int kSimThreads = 128;  // base columns per block
constexpr int kSimRows = 32;      // rows of d staged per step
constexpr int kSimK = 16;         // tuned vectors per pass (registers per thread)

struct Best {
  double value;
  int64_t index;
};

// Similarity. Grid: x over chunks of 128 base columns, y over chunks of kSimK tuned columns
// (block (b, c) takes tuned columns [j0, j0 + kk), j0 = c * kSimK, kk <= kSimK), so every
// chunk of tuned vectors runs in the one launch.
// Y: row-major [d, ky]; X: row-major [d, nb]. Block b owns base columns
// [b * 128, b * 128 + 128); thread t owns column i = b * 128 + t and accumulates
// s_j = sum_d Y[d, j0 + j] X[d, i] for j < kk in registers (accumulating in T, fp32 or fp64).
// Y's rows are staged 32 at a time in shared memory; X is read coalesced (consecutive threads,
// consecutive columns). The loops over the 32 staged rows and over the block's tuned columns
// are unrolled with guarded exits, so the accumulators stay in registers (an index known only
// at run time put fp64's 16 in local memory) and the 32 loads of X can be in flight together. Then
// each j's (|s_j|, i) pairs are reduced across the block to one partial per (block, j): partial[b *
// k + j0 + j]. Columns i < head_cols also write |s_j| to head[(j0 + j) * head_cols + i].
template <typename T>
__global__ void similarity_partial_kernel(const T* __restrict__ y, int64_t ky,
                                          const T* __restrict__ x, int64_t nb, int64_t d, int64_t k,
                                          float* __restrict__ head, int64_t head_cols,
                                          Best* __restrict__ partial) {
  __shared__ T ys[kSimRows][kSimK];
  __shared__ double best_v[kSimThreads];
  __shared__ int64_t best_i[kSimThreads];
  const int t = threadIdx.x;
  const int64_t i = int64_t(blockIdx.x) * kSimThreads + t;
  const int64_t j0 = int64_t(blockIdx.y) * kSimK;
  const int kk = static_cast<int>(k - j0 < kSimK ? k - j0 : kSimK);
  T acc[kSimK];
#pragma unroll
  for (int j = 0; j < kSimK; ++j) acc[j] = T(0);
  for (int64_t r0 = 0; r0 < d; r0 += kSimRows) {
    for (int e = t; e < kSimRows * kSimK; e += kSimThreads) {
      const int r = e / kSimK, j = e % kSimK;
      ys[r][j] = (r0 + r < d && j < kk) ? y[(r0 + r) * ky + j0 + j] : T(0);
    }
    __syncthreads();
    if (i < nb) {
      const int rmax = static_cast<int>(d - r0 < kSimRows ? d - r0 : kSimRows);
#pragma unroll
      for (int r = 0; r < kSimRows; ++r) {
        if (r >= rmax) break;
        const T xv = x[(r0 + r) * nb + i];
#pragma unroll
        for (int j = 0; j < kSimK; ++j) acc[j] += ys[r][j] * xv;
      }
    }
    __syncthreads();
  }
  // Unrolled with a guarded exit (kk is the same for the whole block, so every thread leaves
  // together): acc[j] with j known at compile time stays in a register.
#pragma unroll
  for (int j = 0; j < kSimK; ++j) {
    if (j >= kk) break;
    const double v = i < nb ? fabs(static_cast<double>(acc[j])) : -1.0;
    if (i < head_cols && i < nb) head[(j0 + j) * head_cols + i] = static_cast<float>(v);
    best_v[t] = v;
    best_i[t] = i;
    __syncthreads();
    for (int stride = kSimThreads / 2; stride > 0; stride /= 2) {
      if (t < stride) {
        const double a = best_v[t], b = best_v[t + stride];
        if (b > a || (b == a && best_i[t + stride] < best_i[t]))
          best_v[t] = b, best_i[t] = best_i[t + stride];
      }
      __syncthreads();
    }
    if (t == 0) partial[blockIdx.x * k + j0 + j] = {best_v[0], best_i[0]};
    __syncthreads();
  }
}

// One block per tuned vector j: reduces the per-block partials to maxcos[j], argmax[j].
__global__ void similarity_reduce_kernel(const Best* __restrict__ partial, int64_t blocks,
                                         int64_t k, double* __restrict__ maxcos,
                                         int64_t* __restrict__ argmax) {
  __shared__ double bv[kSimThreads];
  __shared__ int64_t bi[kSimThreads];
  const int t = threadIdx.x;
  const int64_t j = blockIdx.x;
  double v = -1.0;
  int64_t idx = INT64_MAX;
  for (int64_t b = t; b < blocks; b += kSimThreads) {
    const Best p = partial[b * k + j];
    if (p.value > v || (p.value == v && p.index < idx)) v = p.value, idx = p.index;
  }
  bv[t] = v;
  bi[t] = idx;
  __syncthreads();
  for (int stride = kSimThreads / 2; stride > 0; stride /= 2) {
    if (t < stride &&
        (bv[t + stride] > bv[t] || (bv[t + stride] == bv[t] && bi[t + stride] < bi[t])))
      bv[t] = bv[t + stride], bi[t] = bi[t + stride];
    __syncthreads();
  }
  if (t == 0) maxcos[j] = bv[0] < 0 ? 0.0 : bv[0], argmax[j] = bi[0] == INT64_MAX ? 0 : bi[0];
}

}  // namespace

template <typename Dst>
void convert_stored(const void* src, StoredType type, int64_t rows, int64_t cols, bool transpose,
                    Dst* dst, unsigned long long* first_bad, cudaStream_t s, bool fp32_range) {
  INDIM_CUDA_CHECK(cudaMemsetAsync(first_bad, 0xFF, sizeof(unsigned long long), s));
  const int64_t n = rows * cols;
  if (n == 0) return;
  convert_stored_kernel<Dst><<<grid_stride_blocks(n), kThreads, 0, s>>>(
      src, static_cast<int>(type), rows, cols, transpose, fp32_range, dst, first_bad);
  INDIM_KERNEL_CHECK();
}
template void convert_stored<float>(const void*, StoredType, int64_t, int64_t, bool, float*,
                                    unsigned long long*, cudaStream_t, bool);
template void convert_stored<double>(const void*, StoredType, int64_t, int64_t, bool, double*,
                                     unsigned long long*, cudaStream_t, bool);

template <typename T>
void dora_rescale(T* w, int64_t rows, int64_t cols, bool by_columns, const double* magnitude,
                  cudaStream_t s) {
  const int64_t outs = by_columns ? cols : rows;
  if (outs == 0) return;
  dora_rescale_kernel<T>
      <<<static_cast<unsigned>(outs), 256, 0, s>>>(w, rows, cols, by_columns, magnitude);
  INDIM_KERNEL_CHECK();
}
template void dora_rescale<float>(float*, int64_t, int64_t, bool, const double*, cudaStream_t);
template void dora_rescale<double>(double*, int64_t, int64_t, bool, const double*, cudaStream_t);

void cast_to_double(const float* src, double* dst, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  cast_kernel<<<grid_stride_blocks(n), kThreads, 0, s>>>(src, dst, n);
  INDIM_KERNEL_CHECK();
}

void cast_to_float(const double* src, float* dst, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  cast_kernel<<<grid_stride_blocks(n), kThreads, 0, s>>>(src, dst, n);
  INDIM_KERNEL_CHECK();
}

template <typename T>
void transpose(const T* src, T* dst, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  transpose_kernel<<<grid, dim3(32, 8), 0, s>>>(src, dst, rows, cols);
  INDIM_KERNEL_CHECK();
}
template void transpose<float>(const float*, float*, int64_t, int64_t, cudaStream_t);
template void transpose<double>(const double*, double*, int64_t, int64_t, cudaStream_t);

void inverse_column_norms(const double* src, int64_t rows, int64_t cols, double floor,
                          double* scale, cudaStream_t s) {
  if (cols == 0) return;
  column_norms_kernel<<<column_blocks(cols), kThreads, 0, s>>>(src, nullptr, nullptr, rows, cols,
                                                               true, floor, scale);
  INDIM_KERNEL_CHECK();
}

void ritz_residuals(const double* gv, const double* v, const double* theta, int64_t rows,
                    int64_t cols, double* out, cudaStream_t s) {
  if (cols == 0) return;
  column_norms_kernel<<<column_blocks(cols), kThreads, 0, s>>>(gv, v, theta, rows, cols, false, 0.0,
                                                               out);
  INDIM_KERNEL_CHECK();
}

template <typename Dst>
void scale_columns_to_row_major(const double* src, const double* scale, Dst* dst, int64_t rows,
                                int64_t cols, cudaStream_t s) {
  const int64_t total = rows * cols;
  if (total == 0) return;
  scale_columns_kernel<<<grid_stride_blocks(total), kThreads, 0, s>>>(src, scale, dst, rows, cols);
  INDIM_KERNEL_CHECK();
}
template void scale_columns_to_row_major<float>(const double*, const double*, float*, int64_t,
                                                int64_t, cudaStream_t);
template void scale_columns_to_row_major<double>(const double*, const double*, double*, int64_t,
                                                 int64_t, cudaStream_t);

size_t similarity_scratch(int64_t k, int64_t nb) {
  const int64_t blocks = (nb + kSimThreads - 1) / kSimThreads;
  return static_cast<size_t>(blocks * k) * sizeof(Best);
}

template <typename T>
void similarity(const T* y, int64_t ky, const T* x, int64_t nb, int64_t d, int64_t k,
                double* maxcos, int64_t* argmax, float* head, int64_t head_cols, void* partial,
                cudaStream_t s) {
  if (k == 0 || nb == 0) return;
  const int64_t blocks = (nb + kSimThreads - 1) / kSimThreads;
  const int64_t chunks = (k + kSimK - 1) / kSimK;
  // y is at most 65535: 1M tuned vectors in one launch, far past any --k a matrix allows.
  if (chunks > 65535) throw Error("similarity: k = " + std::to_string(k) + " is over 1048560");
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(chunks));
  similarity_partial_kernel<T><<<grid, kSimThreads, 0, s>>>(y, ky, x, nb, d, k, head, head_cols,
                                                            static_cast<Best*>(partial));
  INDIM_KERNEL_CHECK();
  similarity_reduce_kernel<<<static_cast<unsigned>(k), kSimThreads, 0, s>>>(
      static_cast<const Best*>(partial), blocks, k, maxcos, argmax);
  INDIM_KERNEL_CHECK();
}
template void similarity<float>(const float*, int64_t, const float*, int64_t, int64_t, int64_t,
                                double*, int64_t*, float*, int64_t, void*, cudaStream_t);
template void similarity<double>(const double*, int64_t, const double*, int64_t, int64_t, int64_t,
                                 double*, int64_t*, float*, int64_t, void*, cudaStream_t);

}  // namespace indim::cuda
