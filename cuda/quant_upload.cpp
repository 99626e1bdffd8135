// Quantised weights on the device: the codes (1 byte, or half a byte for MXFP4) and their scale
// grid cross to the device in their stored width, from what was staged ahead or copied now,
// and are decoded there, the scale multiplied in and every code and scale checked
// (quant_kernels.cu). The host never widens them.
#include <algorithm>

#include "cuda/cuda_backend.hpp"
#include "cuda/quant_kernels.cuh"

namespace indim::cuda {

namespace {

CodeType code_type(DType dtype, const std::string& label) {
  switch (dtype) {
    case DType::F8_E4M3:
      return CodeType::E4M3;
    case DType::F8_E5M2:
      return CodeType::E5M2;
    case DType::F8_E4M3FNUZ:
      return CodeType::E4M3Fnuz;
    case DType::F8_E5M2FNUZ:
      return CodeType::E5M2Fnuz;
    case DType::F4:
      return CodeType::E2M1;
    default:
      throw Error(label + ": dtype " + dtype_name(dtype) + " is not a quantised code format");
  }
}

ScaleType scale_type(DType dtype, const std::string& label) {
  switch (dtype) {
    case DType::F32:
      return ScaleType::F32;
    case DType::BF16:
      return ScaleType::BF16;
    case DType::F16:
      return ScaleType::F16;
    case DType::F8_E8M0:
    case DType::U8:
      return ScaleType::E8M0;
    default:
      throw Error(label + ": scales of dtype " + dtype_name(dtype) + " are not supported");
  }
}

}  // namespace

template <typename T>
DeviceBuffer<T> CudaBackend::upload_quantised(const void* codes, DType dtype, int64_t rows,
                                              int64_t cols, bool transposed,
                                              const QuantScales& scales, const std::string& label) {
  const CodeType type = code_type(dtype, label);
  DeviceScales ds;
  ds.type = scale_type(scales.dtype, scales.label);
  ds.block_rows = scales.block_rows, ds.block_cols = scales.block_cols;
  ds.grid_rows = scales.grid_rows, ds.grid_cols = scales.grid_cols;
  ds.pow2 = scales.pow2;
  const size_t count = static_cast<size_t>(rows * cols);
  const size_t nbytes = count * static_cast<size_t>(dtype_bits(dtype)) / 8;
  DeviceBuffer<unsigned char> raw_codes(ctx_.place()), raw_scales(ctx_.place());
  // The staged copy of a range when the loader made one, else a copy on the compute stream.
  auto on_device = [&](const void* host, size_t bytes, DeviceBuffer<unsigned char>& own) {
    Staged* staged = stager_ ? stager_->find(host, bytes) : nullptr;
    if (staged != nullptr) {
      INDIM_CUDA_CHECK(cudaStreamWaitEvent(ctx_.stream(), staged->ready.get(), 0));
      return static_cast<const unsigned char*>(staged->raw.get());
    }
    own.grow(std::max<size_t>(bytes, 1));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(own.get(), host, bytes, cudaMemcpyHostToDevice, ctx_.stream()));
    return static_cast<const unsigned char*>(own.get());
  };
  const unsigned char* src = on_device(codes, nbytes, raw_codes);
  ds.data = on_device(scales.data, scales.bytes(), raw_scales);
  DeviceBuffer<unsigned long long> bad = ctx_.buffer<unsigned long long>(2);
  DeviceBuffer<T> w = ctx_.buffer<T>(count);
  decode_quantised<T>(src, type, rows, cols, ds, transposed, w.get(), bad.get(), bad.get() + 1,
                      ctx_.stream());
  unsigned long long first[2] = {0, 0};
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(first, bad.get(), sizeof first, cudaMemcpyDeviceToHost, ctx_.stream()));
  ctx_.sync();
  if (first[1] != ~0ull)
    throw BadInput(InputProblem::NonFinite,
                   scales.label + " holds a scale at [" + std::to_string(first[1] / ds.grid_cols) +
                       ", " + std::to_string(first[1] % ds.grid_cols) + "] that is not a finite " +
                       "non-negative number" + (ds.pow2 ? " and a power of two (ue8m0)" : ""));
  if (first[0] != ~0ull)
    throw BadInput(InputProblem::NonFinite, label + " holds a non-finite value at [" +
                                                std::to_string(first[0] / cols) + ", " +
                                                std::to_string(first[0] % cols) + "]");
  return w;
}

template DeviceBuffer<float> CudaBackend::upload_quantised<float>(const void*, DType, int64_t,
                                                                  int64_t, bool, const QuantScales&,
                                                                  const std::string&);
template DeviceBuffer<double> CudaBackend::upload_quantised<double>(const void*, DType, int64_t,
                                                                    int64_t, bool,
                                                                    const QuantScales&,
                                                                    const std::string&);

}  // namespace indim::cuda
