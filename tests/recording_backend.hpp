// A backend that records what the pipeline hands it (announced inputs, releases, the stored
// bytes it is asked to read, host matrices) around the CPU backend that does the work.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "indim/backend.hpp"

namespace indim::test {

struct Log {
  std::mutex mu;
  struct Worker {
    std::vector<std::vector<ByteRange>> announced;
    std::vector<size_t> released;
    std::vector<std::pair<size_t, ByteRange>> asked;  // (entry being processed, what was asked)
    std::vector<std::string> host;                    // labels of host matrices decomposed
  };
  std::vector<Worker> workers;
};

class Recording final : public Backend {
 public:
  Recording(Log& log, size_t index)
      : cpu_(make_cpu_backend(Precision::F32)), log_(log), i_(index) {}
  std::string name() const override { return "recording"; }
  std::string algo() const override { return cpu_->algo(); }
  Precision precision() const override { return cpu_->precision(); }
  Decomposition decompose(Dense<float>&& w, Side side, int64_t keep,
                          const std::string& label) override {
    host(label);
    return cpu_->decompose(std::move(w), side, keep, label);
  }
  Decomposition decompose(Dense<double>&& w, Side side, int64_t keep,
                          const std::string& label) override {
    host(label);
    return cpu_->decompose(std::move(w), side, keep, label);
  }
  Decomposition decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                 bool transposed, Side side, int64_t keep,
                                 const std::string& label) override {
    ask(bytes, static_cast<size_t>(rows * cols * dtype_bits(dtype) / 8));
    return cpu_->decompose_stored(bytes, dtype, rows, cols, transposed, side, keep, label);
  }
  Decomposition decompose_merged(const void* base_bytes, DType dtype, int64_t rows, int64_t cols,
                                 const LowRankUpdate& update, bool conv1d, Side side, int64_t keep,
                                 const std::string& base_label, const std::string& label) override {
    ask(base_bytes, static_cast<size_t>(rows * cols * dtype_bits(dtype) / 8));
    return cpu_->decompose_merged(base_bytes, dtype, rows, cols, update, conv1d, side, keep,
                                  base_label, label);
  }
  void stream_inputs(const std::vector<std::vector<ByteRange>>& entries) override {
    std::lock_guard<std::mutex> lock(log_.mu);
    log_.workers[i_].announced = entries;
  }
  void release_inputs(size_t entry) override {
    std::lock_guard<std::mutex> lock(log_.mu);
    log_.workers[i_].released.push_back(entry);
  }
  Similarity compare(const Vectors& tuned, const Vectors& base, int64_t k,
                     int64_t head_cols) override {
    return cpu_->compare(tuned, base, k, head_cols);
  }

 private:
  void ask(const void* bytes, size_t n) {
    std::lock_guard<std::mutex> lock(log_.mu);
    auto& w = log_.workers[i_];
    w.asked.push_back({w.released.size(), ByteRange{bytes, n}});
  }
  void host(const std::string& label) {
    std::lock_guard<std::mutex> lock(log_.mu);
    log_.workers[i_].host.push_back(label);
  }
  std::unique_ptr<Backend> cpu_;
  Log& log_;
  size_t i_;
};

}  // namespace indim::test
