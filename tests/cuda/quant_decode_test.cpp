// The device's decoding of quantised weights against the host's (label gpu): every code format
// with every scale format, ragged block grids and transposition, bit for bit in fp64; bad codes
// and scales found where the host finds them; and the CUDA backend's decomposition of FP8 and
// MXFP4 codes against the CPU backend's. Every test skips when no CUDA device is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "cuda/quant_kernels.cuh"
#include "gpu_util.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/quant.hpp"
#include "quant_util.hpp"

using namespace indim;

namespace {

template <typename T>
struct Dev {
  T* p = nullptr;
  explicit Dev(size_t n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), 0); }
  ~Dev() { cudaFree(p); }
};

cuda::CodeType code_of(DType t) {
  switch (t) {
    case DType::F8_E4M3:
      return cuda::CodeType::E4M3;
    case DType::F8_E5M2:
      return cuda::CodeType::E5M2;
    case DType::F8_E4M3FNUZ:
      return cuda::CodeType::E4M3Fnuz;
    case DType::F8_E5M2FNUZ:
      return cuda::CodeType::E5M2Fnuz;
    default:
      return cuda::CodeType::E2M1;
  }
}

cuda::ScaleType scale_of(DType t) {
  switch (t) {
    case DType::F32:
      return cuda::ScaleType::F32;
    case DType::BF16:
      return cuda::ScaleType::BF16;
    case DType::F16:
      return cuda::ScaleType::F16;
    default:
      return cuda::ScaleType::E8M0;
  }
}

struct Decoded {
  std::vector<double> values;
  unsigned long long bad_code = 0, bad_scale = 0;
};

// codes [rows, cols] and a scale grid of `scale_dtype` bytes, decoded on the device.
Decoded device_decode(const std::vector<uint8_t>& codes, DType dtype, int64_t rows, int64_t cols,
                      const QuantScales& s, size_t scale_bytes, bool transpose) {
  Dev<uint8_t> c(codes.size()), sc(scale_bytes);
  Dev<double> out(static_cast<size_t>(rows * cols));
  Dev<unsigned long long> bad(2);
  cudaMemcpy(c.p, codes.data(), codes.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(sc.p, s.data, scale_bytes, cudaMemcpyHostToDevice);
  cuda::DeviceScales ds;
  ds.data = sc.p;
  ds.type = scale_of(s.dtype);
  ds.block_rows = s.block_rows, ds.block_cols = s.block_cols;
  ds.grid_rows = s.grid_rows, ds.grid_cols = s.grid_cols;
  ds.pow2 = s.pow2;
  cuda::decode_quantised<double>(c.p, code_of(dtype), rows, cols, ds, transpose, out.p, bad.p,
                                 bad.p + 1, nullptr);
  Decoded d;
  d.values.resize(static_cast<size_t>(rows * cols));
  cudaMemcpy(d.values.data(), out.p, d.values.size() * 8, cudaMemcpyDeviceToHost);
  unsigned long long b[2];
  cudaMemcpy(b, bad.p, sizeof b, cudaMemcpyDeviceToHost);
  d.bad_code = b[0], d.bad_scale = b[1];
  return d;
}

std::vector<uint8_t> scale_bytes(const std::vector<double>& v, DType t) {
  std::vector<uint8_t> out;
  if (t == DType::F8_E8M0) {
    for (double x : v) out.push_back(float_to_minifloat(static_cast<float>(x), DType::F8_E8M0));
    return out;
  }
  std::vector<float> f(v.begin(), v.end());
  return encode_floats(f, t);
}

}  // namespace

TEST(QuantDecodeGpu, EveryFormatMatchesTheHostBitForBit) {
  REQUIRE_GPU();
  std::mt19937_64 rng(7);
  const int64_t rows = 75, cols = 96;  // blocks of 32 x 32: a ragged last row of blocks
  for (DType codes_t :
       {DType::F8_E4M3, DType::F8_E5M2, DType::F8_E4M3FNUZ, DType::F8_E5M2FNUZ, DType::F4})
    for (DType scale_t : {DType::F32, DType::BF16, DType::F16, DType::F8_E8M0})
      for (bool transpose : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(codes_t)) + " " + dtype_name(scale_t) +
                     (transpose ? " transposed" : ""));
        const bool nibbles = codes_t == DType::F4;
        std::vector<uint8_t> codes(static_cast<size_t>(rows * cols / (nibbles ? 2 : 1)));
        for (auto& c : codes) {  // every finite code
          do c = static_cast<uint8_t>(rng());
          while (!std::isfinite(minifloat_to_float(c, codes_t)) ||
                 (nibbles && !std::isfinite(minifloat_to_float(c >> 4, codes_t))));
        }
        QuantScales s;
        s.dtype = scale_t;
        s.block_rows = nibbles ? 1 : 32, s.block_cols = 32;
        s.grid_rows = (rows + s.block_rows - 1) / s.block_rows, s.grid_cols = cols / 32;
        std::vector<double> sv(static_cast<size_t>(s.grid_rows * s.grid_cols));
        for (auto& x : sv) x = std::ldexp(1.0, static_cast<int>(rng() % 20) - 14) * 1.25;
        if (scale_t == DType::F8_E8M0)
          for (auto& x : sv) x = std::ldexp(1.0, static_cast<int>(rng() % 20) - 14);
        const std::vector<uint8_t> sb = scale_bytes(sv, scale_t);
        s.data = sb.data();
        s.label = "scales";
        std::vector<double> host;
        decode_quantised(codes.data(), codes_t, rows, cols, s, transpose, "w", host);
        const Decoded dev = device_decode(codes, codes_t, rows, cols, s, sb.size(), transpose);
        EXPECT_EQ(dev.bad_code, ~0ull);
        EXPECT_EQ(dev.bad_scale, ~0ull);
        ASSERT_EQ(dev.values.size(), host.size());
        for (size_t i = 0; i < host.size(); ++i) ASSERT_EQ(dev.values[i], host[i]) << i;
      }
}

TEST(QuantDecodeGpu, BadCodesAndScalesAreFoundWhereTheHostFindsThem) {
  REQUIRE_GPU();
  const int64_t rows = 64, cols = 64;
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols), 0x38);
  codes[1 * cols + 40] = 0x7F;  // E4M3 NaN
  codes[3 * cols + 2] = 0xFF;
  std::vector<double> sv = {1.0, 2.0, -1.0, 0.3};  // grid 2 x 2: [1, 0] negative
  const std::vector<uint8_t> sb = scale_bytes(sv, DType::F32);
  QuantScales s;
  s.data = sb.data();
  s.block_rows = 32, s.block_cols = 32, s.grid_rows = 2, s.grid_cols = 2;
  const Decoded d = device_decode(codes, DType::F8_E4M3, rows, cols, s, sb.size(), false);
  EXPECT_EQ(d.bad_code, static_cast<unsigned long long>(1 * cols + 40));
  EXPECT_EQ(d.bad_scale, 2ull);
  s.pow2 = true;  // 0.3 is no power of two; the negative one comes first
  sv[2] = 4.0;
  const std::vector<uint8_t> sb2 = scale_bytes(sv, DType::F32);
  s.data = sb2.data();
  EXPECT_EQ(device_decode(codes, DType::F8_E4M3, rows, cols, s, sb2.size(), false).bad_scale, 3ull);
}

TEST(QuantDecodeGpu, BackendDecomposesCodesAsTheCpuDoes) {
  REQUIRE_GPU();
  std::mt19937_64 rng(8);
  const int64_t rows = 300, cols = 256;
  const Dense<double> w = random_weight(rows, cols, 0.05, rng);
  auto cpu = make_cpu_backend(Precision::F64, "gram64");
  auto gpu = make_cuda_backend(Precision::F64, "gram64", 0);
  // FP8 with 128 x 128 blocks (ragged rows), and MXFP4.
  const Quantised f = quantise_fp8(w.data, rows, cols, DType::F8_E4M3, 128, 128);
  const Quantised m = quantise_mxfp4(w.data, rows, cols);
  QuantScales fs, ms;
  fs.data = f.scales.data(), fs.dtype = DType::F32;
  fs.block_rows = 128, fs.block_cols = 128, fs.grid_rows = f.grid_rows, fs.grid_cols = f.grid_cols;
  ms.data = m.scales.data(), ms.dtype = DType::U8;
  ms.block_rows = 1, ms.block_cols = 32, ms.grid_rows = m.grid_rows, ms.grid_cols = m.grid_cols;
  for (auto [codes, dtype, s] :
       {std::make_tuple(&f.codes, DType::F8_E4M3, fs), std::make_tuple(&m.codes, DType::F4, ms)}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Decomposition a =
        cpu->decompose_quantised(codes->data(), dtype, rows, cols, false, s, Side::Left, 10, "w");
    const Decomposition b =
        gpu->decompose_quantised(codes->data(), dtype, rows, cols, false, s, Side::Left, 10, "w");
    for (int j = 0; j < 10; ++j) {
      EXPECT_NEAR(a.sigma[j], b.sigma[j], 1e-10 * a.sigma[0]) << j;
      double dot = 0;
      for (int64_t i = 0; i < rows; ++i) dot += a.left.at(i, j) * b.left.at(i, j);
      EXPECT_NEAR(std::fabs(dot), 1.0, 1e-8) << j;
    }
  }
}
