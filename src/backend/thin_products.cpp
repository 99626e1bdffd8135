#include "backend/thin_products.hpp"

#include <algorithm>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "backend/host_threads.hpp"

namespace indim::detail {

namespace {

// Eight fp64 lanes: one AVX-512 register, two AVX2 ones, four SSE2 ones; the compiler splits
// it for the clone it builds. Lanes never cross a call (the helpers are inlined into each
// clone), so the ABI of a 64-byte vector, which GCC warns of in the baseline build, never
// applies (CMakeLists.txt builds this file with -Wno-psabi).
typedef double Lane __attribute__((vector_size(64)));

// Each kernel is built for AVX-512, AVX2 + FMA and the baseline, the loader picking the best
// the machine runs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define INDIM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define INDIM_CLONES
#endif

// Element i of a stored array of E (uint16_t standing for bf16), read through memcpy: stored
// bytes carry no alignment promise.
template <typename E>
inline double widen(const unsigned char* p, int64_t i) {
  E v;
  std::memcpy(&v, p + i * static_cast<int64_t>(sizeof(E)), sizeof(E));
  if constexpr (sizeof(E) == 2) {  // bf16: the top half of an fp32
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  } else {
    return static_cast<double>(v);
  }
}

[[gnu::always_inline]] inline Lane load(const double* p) {
  Lane v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(double* p, const Lane& v) { std::memcpy(p, &v, sizeof v); }

// Rows [r0, r1) of y = S x, S [*, cols], x packed [cols, C], y packed [*, C]: four rows at a
// time share each load of x.
template <int C, typename E>
[[gnu::always_inline]] inline void rows_body(const unsigned char* s, int64_t cols, int64_t r0,
                                             int64_t r1, const double* x, double* y) {
  constexpr int V = C / 8, R = 4;
  int64_t i = r0;
  for (; i + R <= r1; i += R) {
    Lane acc[R][V] = {};
    const int64_t si = i * cols;
    for (int64_t j = 0; j < cols; ++j) {
      Lane xv[V];
      for (int v = 0; v < V; ++v) xv[v] = load(x + j * C + 8 * v);
      for (int t = 0; t < R; ++t) {
        const double w = widen<E>(s, si + t * cols + j);
        for (int v = 0; v < V; ++v) acc[t][v] += xv[v] * w;
      }
    }
    for (int t = 0; t < R; ++t)
      for (int v = 0; v < V; ++v) store(y + (i + t) * C + 8 * v, acc[t][v]);
  }
  for (; i < r1; ++i) {
    Lane acc[V] = {};
    for (int64_t j = 0; j < cols; ++j) {
      const double w = widen<E>(s, i * cols + j);
      for (int v = 0; v < V; ++v) acc[v] += load(x + j * C + 8 * v) * w;
    }
    for (int v = 0; v < V; ++v) store(y + i * C + 8 * v, acc[v]);
  }
}

// y [cols, C] += S[r0:r1]^T x[r0:r1], x packed [*, C]: eight rows of S at a time, their x rows
// held in registers while each y row is read and written once.
template <int C, typename E>
[[gnu::always_inline]] inline void cols_body(const unsigned char* s, int64_t cols, int64_t r0,
                                             int64_t r1, const double* x, double* y) {
  constexpr int V = C / 8, R = 8;
  int64_t i = r0;
  for (; i + R <= r1; i += R) {
    Lane xv[R][V];
    for (int t = 0; t < R; ++t)
      for (int v = 0; v < V; ++v) xv[t][v] = load(x + (i + t) * C + 8 * v);
    const int64_t si = i * cols;
    for (int64_t j = 0; j < cols; ++j) {
      Lane acc[V];
      for (int v = 0; v < V; ++v) acc[v] = load(y + j * C + 8 * v);
      for (int t = 0; t < R; ++t) {
        const double w = widen<E>(s, si + t * cols + j);
        for (int v = 0; v < V; ++v) acc[v] += xv[t][v] * w;
      }
      for (int v = 0; v < V; ++v) store(y + j * C + 8 * v, acc[v]);
    }
  }
  for (; i < r1; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double w = widen<E>(s, i * cols + j);
      for (int v = 0; v < V; ++v)
        store(y + j * C + 8 * v, load(y + j * C + 8 * v) + load(x + i * C + 8 * v) * w);
    }
}

using Kernel = void (*)(const unsigned char*, int64_t, int64_t, int64_t, int, const double*,
                        double*);

// One clone set per kind and element type, the chunk width (8 or 16) chosen inside.
#define INDIM_THIN_KERNEL(name, body, E)                                                      \
  INDIM_CLONES void name(const unsigned char* s, int64_t cols, int64_t r0, int64_t r1, int c, \
                         const double* x, double* y) {                                        \
    c == 8 ? body<8, E>(s, cols, r0, r1, x, y) : body<16, E>(s, cols, r0, r1, x, y);          \
  }
INDIM_THIN_KERNEL(rows_bf16, rows_body, uint16_t)
INDIM_THIN_KERNEL(rows_f32, rows_body, float)
INDIM_THIN_KERNEL(rows_f64, rows_body, double)
INDIM_THIN_KERNEL(cols_bf16, cols_body, uint16_t)
INDIM_THIN_KERNEL(cols_f32, cols_body, float)
INDIM_THIN_KERNEL(cols_f64, cols_body, double)
#undef INDIM_THIN_KERNEL

Kernel rows_kernel(DType t) {
  return t == DType::BF16 ? rows_bf16 : t == DType::F32 ? rows_f32 : rows_f64;
}
Kernel cols_kernel(DType t) {
  return t == DType::BF16 ? cols_bf16 : t == DType::F32 ? cols_f32 : cols_f64;
}

// Below this many elements of S one thread does the product (a thread costs tens of us).
constexpr int64_t kThreadGrain = int64_t{1} << 20;

// [0, rows) in `parts` ranges on as many threads (the caller's among them), each bound a
// multiple of 8; f(lo, hi, part).
template <typename F>
void in_parts(int64_t rows, int parts, const F& f) {
  std::vector<std::thread> helpers;
  helpers.reserve(static_cast<size_t>(parts));  // no reallocation once a thread runs
  auto bound = [&](int t) { return t == parts ? rows : (rows * t / parts) / 8 * 8; };
  for (int t = 1; t < parts; ++t) {
    try {
      helpers.emplace_back([&, t] { f(bound(t), bound(t + 1), t); });
    } catch (const std::system_error&) {  // no thread to be had: this one does the part
      f(bound(t), bound(t + 1), t);
    }
  }
  f(0, bound(1), 0);
  for (std::thread& h : helpers) h.join();
}

int parts_for(const StoredMatrix& s) {
  const int64_t by_size = s.rows * s.cols / kThreadGrain, by_rows = s.rows / 64;
  const int64_t cores = std::min(8, host_threads());
  return static_cast<int>(std::max<int64_t>(1, std::min({cores, by_size, by_rows})));
}

// x [n, c] row-major: its columns [c0, c0 + w) packed [n, width], zero past c.
void pack(const double* x, int64_t n, int64_t c, int64_t c0, int width, std::vector<double>& out) {
  out.assign(static_cast<size_t>(n * width), 0.0);
  const int64_t w = std::min<int64_t>(width, c - c0);
  for (int64_t i = 0; i < n; ++i) std::copy(x + i * c + c0, x + i * c + c0 + w, &out[i * width]);
}

void unpack(const std::vector<double>& in, int64_t n, int width, int64_t c, int64_t c0, double* y) {
  const int64_t w = std::min<int64_t>(width, c - c0);
  for (int64_t i = 0; i < n; ++i) std::copy(&in[i * width], &in[i * width] + w, y + i * c + c0);
}

int chunk_width(int64_t left) { return left <= 8 ? 8 : 16; }

}  // namespace

bool thin_supports(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F32 || dtype == DType::F64;
}

void thin_times(const StoredMatrix& m, const double* x, int64_t c, double* y) {
  const auto* s = static_cast<const unsigned char*>(m.data);
  const Kernel kernel = rows_kernel(m.dtype);
  const int parts = parts_for(m);
  std::vector<double> xp, yp(static_cast<size_t>(m.rows * 16));
  for (int64_t c0 = 0; c0 < c; c0 += 16) {
    const int w = chunk_width(c - c0);
    pack(x, m.cols, c, c0, w, xp);
    in_parts(m.rows, parts, [&](int64_t lo, int64_t hi, int) {
      kernel(s, m.cols, lo, hi, w, xp.data(), yp.data());
    });
    unpack(yp, m.rows, w, c, c0, y);
  }
}

void thin_times_transposed(const StoredMatrix& m, const double* x, int64_t c, double* y) {
  const auto* s = static_cast<const unsigned char*>(m.data);
  const Kernel kernel = cols_kernel(m.dtype);
  const int parts = parts_for(m);
  std::vector<double> xp;
  std::vector<std::vector<double>> part_y(static_cast<size_t>(parts));
  for (int64_t c0 = 0; c0 < c; c0 += 16) {
    const int w = chunk_width(c - c0);
    pack(x, m.rows, c, c0, w, xp);
    for (auto& py : part_y) py.assign(static_cast<size_t>(m.cols * w), 0.0);  // each part's sums
    in_parts(m.rows, parts, [&](int64_t lo, int64_t hi, int t) {
      kernel(s, m.cols, lo, hi, w, xp.data(), part_y[t].data());
    });
    for (int t = 1; t < parts; ++t)
      for (size_t i = 0; i < part_y[0].size(); ++i) part_y[0][i] += part_y[t][i];
    unpack(part_y[0], m.cols, w, c, c0, y);
  }
}

}  // namespace indim::detail
