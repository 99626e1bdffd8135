// The CUDA backend's class. Its jobs live in one file each: cuda_backend.cpp (entry points,
// the algorithm within the memory budget, construction), staging_loader.cpp (inputs copied
// ahead on a copy stream, and stored bytes to the device), device_merge.cpp (LoRA/DoRA merged
// on the device), gram64.cpp (the fp64 Gram route), direct_svd.cpp (gesvd, gesvdp, gesvdj),
// compare.cpp (the fused similarity), lowrank_products.cpp (the low-rank route's products).
//
// Layout: a row-major nn.Linear weight W [out, in] is, to column-major cuBLAS/cuSOLVER, the
// matrix A = W^T [in, out] with lda = in (no copy).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cuda/memory_pool.hpp"
#include "cuda/resources.hpp"
#include "cuda/staging.hpp"
#include "indim/backend.hpp"
#include "indim/quant.hpp"

namespace indim::cuda {

class CudaBackend final : public Backend {
 public:
  CudaBackend(Precision p, std::string algo, int device, std::shared_ptr<detail::MemoryPool> pool,
              uint64_t staging_limit);
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }
  std::string algo() const override { return algo_; }
  Precision precision() const override { return precision_; }

  Decomposition decompose(Dense<float>&& w, Side side, int64_t keep,
                          const std::string& label) override;
  Decomposition decompose(Dense<double>&& w, Side side, int64_t keep,
                          const std::string& label) override;
  Decomposition decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                 bool transposed, Side side, int64_t keep,
                                 const std::string& label) override;
  Decomposition decompose_quantised(const void* codes, DType dtype, int64_t rows, int64_t cols,
                                    bool transposed, const QuantScales& scales, Side side,
                                    int64_t keep, const std::string& label) override;
  Decomposition decompose_merged(const void* base_bytes, DType dtype, int64_t rows, int64_t cols,
                                 const LowRankUpdate& update, bool conv1d, Side side, int64_t keep,
                                 const std::string& base_label, const std::string& label) override;
  Similarity compare(const Vectors& tuned, const Vectors& base, int64_t k,
                     int64_t head_cols) override;
  std::unique_ptr<detail::LowRankProducts> lowrank_products(const LowRankProblem& problem) override;
  void stream_inputs(const std::vector<std::vector<ByteRange>>& entries) override;
  void release_inputs(size_t entry) override;
  std::string staging_summary() const override;

 private:
  static constexpr size_t kChunk = 64ull << 20;

  // One input staged on the device: its stored bytes, and an event after their copy.
  struct Staged {
    size_t bytes = 0;
    DeviceBuffer<unsigned char> raw;
    Event ready;
  };

  // cuda_backend.cpp
  std::string choose_algo(int64_t out, int64_t in, int64_t keep, const std::string& label) const;
  template <typename Make>
  Decomposition dispatch(int64_t out, int64_t in, Side side, int64_t keep, const std::string& label,
                         Make&& make);
  template <typename T>
  Decomposition run(const Dense<T>& w, Side side, int64_t keep, const std::string& label);
  Vectors empty_vectors(int64_t dim, int64_t count) const;

  // staging_loader.cpp
  Staged copy_in(const ByteRange& r);
  template <typename T>
  DeviceBuffer<T> upload_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                bool transposed, const std::string& label,
                                const QuantScales* scales = nullptr);

  // quant_upload.cpp: quantised codes and their scales, in their stored width, decoded on the
  // device (quant_kernels.cu)
  template <typename T>
  DeviceBuffer<T> upload_quantised(const void* codes, DType dtype, int64_t rows, int64_t cols,
                                   bool transposed, const QuantScales& scales,
                                   const std::string& label);

  // device_merge.cpp
  template <typename T>
  DeviceBuffer<T> upload(const std::vector<double>& host);
  template <typename T>
  DeviceBuffer<T> transposed(DeviceBuffer<T>& w, int64_t rows, int64_t cols);
  template <typename T>
  DeviceBuffer<T> merged(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                         const LowRankUpdate& u, const std::string& base_label,
                         const std::string& label);

  // gram64.cpp
  Decomposition gram64_device(DeviceBuffer<double>& a, int64_t out, int64_t in, Side side,
                              int64_t keep, const std::string& label);
  int subspace_top(DeviceBuffer<double>& g, int64_t n, int64_t keep, std::vector<double>& theta,
                   DeviceBuffer<double>& e, const std::string& label);
  void top_eigenvectors(DeviceBuffer<double>& g, int64_t n, int64_t keep, std::vector<double>& lam,
                        DeviceBuffer<double>& e, const std::string& label);
  Vectors download(const double* colmajor, const double* scale, int64_t rows, int64_t cols);

  // direct_svd.cpp
  template <typename T>
  Decomposition direct_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side, int64_t keep,
                              const std::string& label, const std::string& algo);
  template <typename T>
  Decomposition gesvd_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side, int64_t keep,
                             const std::string& label);
  template <typename T>
  Decomposition uv_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side, int64_t keep,
                          const std::string& label, const std::string& algo);

  // compare.cpp
  template <typename T>
  Similarity compare_impl(const Vectors& tuned, const Vectors& base, int64_t k, int64_t head_cols);

  Precision precision_;
  std::string algo_;
  GpuContext ctx_;
  std::shared_ptr<detail::MemoryPool> pool_;  // the device's budget, shared by its streams
  Stream copy_stream_;
  std::vector<PinnedBuffer<unsigned char>> pinned_;
  std::vector<Event> chunk_done_;
  uint64_t staging_limit_;
  std::unique_ptr<detail::Stager<Staged>> stager_;  // last: its loader uses the members above
};

/// Throws CusolverError "<label>: <routine> failed (info ...)" when the solver's info is not 0.
void check_info(GpuContext& ctx, const std::string& label, const char* routine);

}  // namespace indim::cuda
