// A backend that records what the pipeline hands it (announced inputs, releases, the stored
// bytes it is asked to read, host matrices) around the CPU backend that does the work. With
// Log::stage it also stages the announced inputs as the CUDA backend does, through the real
// loader (cuda/staging.hpp) into host buffers, each copy taking Log::copy_delay first.
#pragma once

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda/staging.hpp"
#include "indim/backend.hpp"
#include "indim/error.hpp"

namespace indim::test {

struct Log {
  std::mutex mu;
  bool stage = false;                       // stage announced inputs through a loader
  std::chrono::milliseconds copy_delay{0};  // before each staged copy reads its input
  std::chrono::milliseconds read_delay{0};  // before each stored read (a unit's work)
  size_t fail_at_ask = 0;                   // > 0: the n-th stored read fails (an Error)
  struct Worker {
    std::vector<std::vector<ByteRange>> announced;
    std::vector<size_t> released;
    std::vector<std::pair<size_t, ByteRange>> asked;  // (entry being processed, what was asked)
    std::vector<std::string> host;                    // labels of host matrices decomposed
    size_t copies = 0;                                // inputs the loader copied
    std::vector<ByteRange> copied;                    // which
    size_t askable = 0;  // announced inputs that can be asked whether a cache serves them
    size_t spared = 0;   // inputs the loader did not copy: a cache serves them
    bool ended = false;  // end_inputs() was called
    bool copied_after_end = false;  // the loader read an input after end_inputs() returned
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
    if (stager_) stager_->find(bytes, static_cast<size_t>(rows * cols * dtype_bits(dtype) / 8));
    return cpu_->decompose_stored(bytes, dtype, rows, cols, transposed, side, keep, label);
  }
  Decomposition decompose_merged(const void* base_bytes, DType dtype, int64_t rows, int64_t cols,
                                 const LowRankUpdate& update, bool conv1d, Side side, int64_t keep,
                                 const std::string& base_label, const std::string& label) override {
    ask(base_bytes, static_cast<size_t>(rows * cols * dtype_bits(dtype) / 8));
    if (stager_)
      stager_->find(base_bytes, static_cast<size_t>(rows * cols * dtype_bits(dtype) / 8));
    return cpu_->decompose_merged(base_bytes, dtype, rows, cols, update, conv1d, side, keep,
                                  base_label, label);
  }
  void stream_inputs(const std::vector<std::vector<StagedInput>>& entries) override {
    {
      std::lock_guard<std::mutex> lock(log_.mu);
      auto& w = log_.workers[i_];
      w.announced.clear();
      for (const auto& entry : entries) {
        w.announced.emplace_back();
        for (const StagedInput& in : entry) {
          w.announced.back().push_back(in.range);
          if (in.cached) ++w.askable;
        }
      }
    }
    if (log_.stage)
      stager_ = std::make_unique<detail::Stager<Buffer>>(
          entries, 1ull << 30, [this](const ByteRange& r) { return copy(r); });
  }
  void release_inputs(size_t entry) override {
    if (stager_) stager_->release(entry);
    std::lock_guard<std::mutex> lock(log_.mu);
    log_.workers[i_].released.push_back(entry);
  }
  void end_inputs() noexcept override {
    if (stager_) stager_->stop();
    std::lock_guard<std::mutex> lock(log_.mu);
    log_.workers[i_].ended = true;
    if (stager_) log_.workers[i_].spared = stager_->spared();
  }
  bool stages_inputs() const override { return log_.stage; }
  Similarity compare(const Vectors& tuned, const Vectors& base, int64_t k,
                     int64_t head_cols) override {
    return cpu_->compare(tuned, base, k, head_cols);
  }

 private:
  using Buffer = std::vector<unsigned char>;

  // On the loader thread: waits, then reads the input (a fault here when it was unmapped).
  Buffer copy(const ByteRange& r) {
    std::this_thread::sleep_for(log_.copy_delay);
    const auto* p = static_cast<const unsigned char*>(r.data);
    Buffer b(p, p + r.bytes);
    std::lock_guard<std::mutex> lock(log_.mu);
    auto& w = log_.workers[i_];
    ++w.copies;
    w.copied.push_back(r);
    if (w.ended) w.copied_after_end = true;
    return b;
  }
  void ask(const void* bytes, size_t n) {
    std::this_thread::sleep_for(log_.read_delay);
    std::lock_guard<std::mutex> lock(log_.mu);
    auto& w = log_.workers[i_];
    w.asked.push_back({w.released.size(), ByteRange{bytes, n}});
    size_t asks = 0;
    for (const Log::Worker& x : log_.workers) asks += x.asked.size();
    if (log_.fail_at_ask > 0 && asks == log_.fail_at_ask)
      throw Error("recording: stored read " + std::to_string(asks) + " fails");
  }
  void host(const std::string& label) {
    std::lock_guard<std::mutex> lock(log_.mu);
    log_.workers[i_].host.push_back(label);
  }
  std::unique_ptr<Backend> cpu_;
  Log& log_;
  size_t i_;
  std::unique_ptr<detail::Stager<Buffer>> stager_;  // last: its loader uses the members above
};

}  // namespace indim::test
