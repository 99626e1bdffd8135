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
#include <optional>
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
  CudaBackend(Precision p, std::string algo, int device, std::shared_ptr<MemPool> device_pool,
              std::shared_ptr<detail::MemoryPool> budget, uint64_t staging_limit);
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
  void stream_inputs(const std::vector<std::vector<StagedInput>>& entries) override;
  void release_inputs(size_t entry) override;
  void end_inputs() noexcept override;
  bool stages_inputs() const override { return true; }
  std::string staging_summary() const override;
  /// How many times compare uploaded a base's vectors (not counting reuses of a kept copy).
  uint64_t base_uploads() const { return base_uploads_; }

 private:
  static constexpr size_t kChunk = 64ull << 20;

  // One input staged on the device: its stored bytes, and an event after their copy.
  struct Staged {
    size_t bytes = 0;
    DeviceBuffer<unsigned char> raw;
    Event ready;
  };

  // compare's device copy of base vectors it was given with an id (Vectors::id), kept for the
  // next tuned checkpoint of the same base under a lease of its own.
  struct BaseCopy {
    uint64_t id = 0;
    size_t bytes = 0;
    DeviceBuffer<unsigned char> data;
    detail::MemoryPool::Lease lease;
  };
  // The left and right vectors of one base (--side both): the most recent first.
  static constexpr size_t kBaseCopies = 2;

  // cuda_backend.cpp
  std::string choose_algo(int64_t out, int64_t in, int64_t keep, int stored_width,
                          const std::string& label) const;
  template <typename Make>
  Decomposition dispatch(int64_t out, int64_t in, int stored_width, Side side, int64_t keep,
                         const std::string& label, Make&& make);
  template <typename Make>
  Decomposition decompose_within(const std::string& algo, int64_t out, int64_t in, Side side,
                                 int64_t keep, const std::string& label, Make&& make);
  // `bytes` of the budget: at once when they are free, else after compare's kept copies are
  // given back, waiting like any worker (a worker never waits while it holds a lease).
  detail::MemoryPool::Lease lease(uint64_t bytes);
  // Gives back compare's kept copies: at the end of every plan entry (a base's ids belong to
  // its entry) and of staging, so an idle or finished worker holds none of the budget.
  void drop_base_copies() noexcept;
  template <typename T>
  Decomposition run(const Dense<T>& w, Side side, int64_t keep, const std::string& label);
  Vectors empty_vectors(int64_t dim, int64_t count) const;

  // staging_loader.cpp
  Staged copy_in(const ByteRange& r);
  void make_copy_stream();
  // `fp32_range`: refuse values beyond the fp32 range (the analysis is in fp32), as the CPU
  // backend, converting to the working precision first, does.
  template <typename T>
  DeviceBuffer<T> upload_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                bool transposed, const std::string& label, bool fp32_range,
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
  template <typename T>
  const T* base_on_device(const Vectors& base, uint64_t work_bytes,
                          detail::MemoryPool::Lease& lease, DeviceBuffer<unsigned char>& uncached);

  // First, so destroyed last: ~CudaBackend makes the device current here for the members'
  // releases, and this puts the thread's previous device back after all of them.
  std::optional<DeviceScope> teardown_;
  Precision precision_;
  std::string algo_;
  GpuContext ctx_;
  std::shared_ptr<detail::MemoryPool> pool_;  // the device's budget, shared by its streams
  Stream copy_stream_;
  std::vector<PinnedBuffer<unsigned char>> pinned_;
  std::vector<Event> chunk_done_;
  uint64_t staging_limit_;
  std::vector<BaseCopy> base_copies_;  // at most kBaseCopies, most recently used first
  uint64_t base_uploads_ = 0;
  std::unique_ptr<detail::Stager<Staged>> stager_;  // last: its loader uses the members above
};

/// The message of the device error being handled, with the matrix, its shape and algorithm in
/// front ("<label> [out x in], gram64: ..."), rethrown as the same type.
[[noreturn]] void rethrow_naming(const std::string& label, int64_t out, int64_t in,
                                 const std::string& algo);

/// Throws CusolverError "<label>: <routine> failed (info ...)" when the solver's info is not 0.
void check_info(GpuContext& ctx, const std::string& label, const char* routine);

}  // namespace indim::cuda
