// A device's memory budget shared by the workers (streams) that decompose on it: each worker
// leases what one decomposition needs and waits while others hold too much, so a large matrix
// runs when the device has room instead of failing against a fixed share.
//
// Deadlock-free as used: a worker never waits (acquire) while it holds a lease, and releases
// leases without waiting on anything, so every wait ends when the leases before it end. What a
// worker keeps between calls (the CUDA backend's copy of a base's vectors) it keeps under a
// lease it got by try_acquire, and gives back before it waits for another. Header-only and
// host-only: the CUDA backend uses it, the tests run it on any machine.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace indim::detail {

class MemoryPool {
 public:
  explicit MemoryPool(uint64_t total) : total_(total) {}
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  /// @brief Bytes of the whole budget; a lease larger than this is never granted.
  uint64_t total() const { return total_; }

  /// @brief Held bytes, returned when the lease ends.
  class Lease {
   public:
    Lease() = default;
    Lease(MemoryPool* pool, uint64_t bytes) : pool_(pool), bytes_(bytes) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), bytes_(o.bytes_) { o.pool_ = nullptr; }
    Lease& operator=(Lease&& o) noexcept {
      if (this != &o) end(), pool_ = o.pool_, bytes_ = o.bytes_, o.pool_ = nullptr;
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { end(); }
    uint64_t bytes() const { return pool_ != nullptr ? bytes_ : 0; }
    explicit operator bool() const { return pool_ != nullptr; }
    /// @brief Moves `bytes` (at most what this lease holds) into a lease of their own, which
    /// then ends on its own.
    Lease split(uint64_t bytes) {
      if (pool_ == nullptr) return Lease();
      if (bytes > bytes_) bytes = bytes_;
      bytes_ -= bytes;
      return Lease(pool_, bytes);
    }
    void end() {
      if (pool_ != nullptr) pool_->give_back(bytes_);
      pool_ = nullptr;
    }

   private:
    MemoryPool* pool_ = nullptr;
    uint64_t bytes_ = 0;
  };

  /// @brief Waits until `bytes` are free, then holds them. The caller checks bytes <= total()
  /// first; a larger request is granted once nothing else is held (it then runs alone, and
  /// the device may still refuse it).
  Lease acquire(uint64_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return used_ + bytes <= total_ || used_ == 0; });
    used_ += bytes;
    if (used_ > peak_) peak_ = used_;
    return Lease(this, bytes);
  }

  /// @brief Holds `bytes` when they are free now, else returns an empty lease; never waits.
  Lease try_acquire(uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (used_ + bytes > total_) return Lease();
    used_ += bytes;
    if (used_ > peak_) peak_ = used_;
    return Lease(this, bytes);
  }

  /// @brief The most bytes held at one time so far.
  uint64_t peak() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }

 private:
  void give_back(uint64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_ -= bytes;
    }
    cv_.notify_all();
  }

  const uint64_t total_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t used_ = 0, peak_ = 0;
};

}  // namespace indim::detail
