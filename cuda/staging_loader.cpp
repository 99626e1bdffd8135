// Inputs staged ahead: a loader thread copies announced inputs through two pinned chunks on a
// copy stream into device buffers, at most staging_limit_ bytes at once (1 GiB, or an eighth
// of the budget when smaller, taken from the decompositions' budget while streaming); and
// stored bytes to a device matrix, from what was staged or copied now.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

namespace {

StoredType stored_type(DType dtype, const std::string& label) {
  switch (dtype) {
    case DType::F32:
      return StoredType::F32;
    case DType::F64:
      return StoredType::F64;
    case DType::F16:
      return StoredType::F16;
    case DType::BF16:
      return StoredType::BF16;
    default:
      throw Error(label + ": dtype " + dtype_name(dtype) + " cannot be analysed");
  }
}

}  // namespace

// The copy stream, its two pinned chunks and their events, made once.
void CudaBackend::make_copy_stream() {
  if (copy_stream_.get() != nullptr) return;
  cudaStream_t s = nullptr;
  INDIM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  copy_stream_ = Stream(s);
  for (int i = 0; i < 2; ++i) {
    pinned_.emplace_back(kChunk);
    cudaEvent_t e = nullptr;
    INDIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    chunk_done_.emplace_back(e);
  }
}

void CudaBackend::stream_inputs(const std::vector<std::vector<StagedInput>>& entries) {
  const DeviceScope scope(ctx_.device());
  end_inputs();
  stager_.reset();
  make_copy_stream();
  stager_ = std::make_unique<detail::Stager<Staged>>(
      entries, staging_limit_, [this](const ByteRange& r) { return copy_in(r); });
}

void CudaBackend::release_inputs(size_t entry) {
  drop_base_copies();
  if (!stager_) return;
  const DeviceScope scope(ctx_.device());
  stager_->release(entry);
}

// The loader stopped and joined first (no read of a mapping after this), then every staged
// buffer freed; the stager stays for staging_summary().
void CudaBackend::end_inputs() noexcept {
  drop_base_copies();
  if (!stager_) return;
  stager_->stop();
  try {
    const DeviceScope scope(ctx_.device());
    stager_->release(std::numeric_limits<size_t>::max());
  } catch (const std::exception& e) {  // the buffers then go with the stager
    std::fprintf(stderr, "indim: cuda:%d: freeing staged inputs: %s\n", ctx_.device(), e.what());
  }
}

std::string CudaBackend::staging_summary() const {
  if (!stager_) return {};
  std::string s = "cuda:" + std::to_string(ctx_.device()) + ": " + std::to_string(stager_->hits()) +
                  " inputs found staged ahead on the copy stream, peak " +
                  std::to_string(stager_->peak_bytes() >> 20) + " MiB staged, " +
                  std::to_string(stager_->spared()) + " bases served by the cache not copied";
  const std::string e = stager_->error();
  return e.empty() ? s : s + "; the loader stopped early: " + e;
}

// On the loader thread: the range through the pinned chunks (alternating, each reused once
// its previous copy has finished) into a new device buffer, allocated on the copy stream.
CudaBackend::Staged CudaBackend::copy_in(const ByteRange& r) {
  const DeviceScope scope(ctx_.device());
  Staged st;
  st.bytes = r.bytes;
  st.raw =
      DeviceBuffer<unsigned char>(std::max<size_t>(r.bytes, 1), ctx_.place_on(copy_stream_.get()));
  const auto* src = static_cast<const unsigned char*>(r.data);
  for (size_t off = 0, c = 0; off < r.bytes; off += kChunk, ++c) {
    const size_t slot = c % 2, len = std::min(kChunk, r.bytes - off);
    INDIM_CUDA_CHECK(cudaEventSynchronize(chunk_done_[slot].get()));
    std::memcpy(pinned_[slot].get(), src + off, len);
    INDIM_CUDA_CHECK(cudaMemcpyAsync(st.raw.get() + off, pinned_[slot].get(), len,
                                     cudaMemcpyHostToDevice, copy_stream_.get()));
    INDIM_CUDA_CHECK(cudaEventRecord(chunk_done_[slot].get(), copy_stream_.get()));
  }
  cudaEvent_t e = nullptr;
  INDIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  st.ready = Event(e);
  INDIM_CUDA_CHECK(cudaEventRecord(e, copy_stream_.get()));
  return st;
}

// Stored bytes -> device -> T [out, in], checked for non-finite values (fused into the
// conversion).
template <typename T>
DeviceBuffer<T> CudaBackend::upload_stored(const void* bytes, DType dtype, int64_t rows,
                                           int64_t cols, bool transposed, const std::string& label,
                                           bool fp32_range, const QuantScales* scales) {
  if (scales != nullptr)  // codes and scales cross in their stored width (quant_upload.cpp)
    return upload_quantised<T>(bytes, dtype, rows, cols, transposed, *scales, label);
  const StoredType type = stored_type(dtype, label);
  const size_t count = static_cast<size_t>(rows * cols);
  const size_t nbytes = count * static_cast<size_t>(dtype_bits(dtype) / 8);
  DeviceBuffer<unsigned char> raw(ctx_.place());
  DeviceBuffer<unsigned long long> bad = ctx_.buffer<unsigned long long>(1);
  DeviceBuffer<T> w = ctx_.buffer<T>(count);
  const unsigned char* src = nullptr;
  Staged* staged = stager_ ? stager_->find(bytes, nbytes) : nullptr;
  if (staged != nullptr) {  // copied ahead: wait for that copy
    INDIM_CUDA_CHECK(cudaStreamWaitEvent(ctx_.stream(), staged->ready.get(), 0));
    src = staged->raw.get();
  } else {
    raw.grow(nbytes);
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(raw.get(), bytes, nbytes, cudaMemcpyHostToDevice, ctx_.stream()));
    src = raw.get();
  }
  convert_stored<T>(src, type, rows, cols, transposed, w.get(), bad.get(), ctx_.stream(),
                    fp32_range);
  unsigned long long first = 0;
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(&first, bad.get(), sizeof first, cudaMemcpyDeviceToHost, ctx_.stream()));
  ctx_.sync();
  if (first != ~0ull)
    throw BadInput(InputProblem::NonFinite, label + " holds a non-finite value at [" +
                                                std::to_string(first / cols) + ", " +
                                                std::to_string(first % cols) + "]");
  return w;
}
template DeviceBuffer<float> CudaBackend::upload_stored<float>(const void*, DType, int64_t, int64_t,
                                                               bool, const std::string&, bool,
                                                               const QuantScales*);
template DeviceBuffer<double> CudaBackend::upload_stored<double>(const void*, DType, int64_t,
                                                                 int64_t, bool, const std::string&,
                                                                 bool, const QuantScales*);

}  // namespace indim::cuda
