// Staging ahead of use: a loader thread copies the inputs of plan entries (tensor bytes in the
// mapped checkpoint files) into backend buffers, in plan order, while earlier entries are
// being decomposed; the backend finds an input there instead of copying it itself.
//
// Bounds: at most `limit` bytes are staged at once (the loader waits for the orchestrator to
// release finished entries); an input larger than `limit` is never staged, nor one whose
// `cached()` answers that the cache serves it (asked just before its copy, on the loader's
// thread), and one whose entry is released while it is being copied is freed once copied.
// Deadlock-free by
// construction: a consumer waits only for a copy already under way, which needs nothing from
// the consumer; an input the loader has not started is claimed by the consumer, which then
// copies it directly, and the loader skips it.
//
// Header-only and host-only: the CUDA backend instantiates it with device buffers, the tests
// with host ones.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "indim/backend.hpp"

namespace indim::detail {

template <typename Buffer>
class Stager {
 public:
  /// Makes a Buffer holding a copy of the range; runs on the loader thread. May throw: the
  /// loader then stops and every input not yet staged is left to its consumer.
  using CopyFn = std::function<Buffer(const ByteRange&)>;

  /// @brief Starts the loader over `entries` (each entry's inputs, in the order of use).
  Stager(std::vector<std::vector<StagedInput>> entries, size_t limit, CopyFn copy)
      : limit_(limit), copy_(std::move(copy)) {
    for (size_t e = 0; e < entries.size(); ++e)
      for (StagedInput& in : entries[e]) {
        const ByteRange& r = in.range;
        if (r.data == nullptr || inputs_.count(r.data)) continue;
        inputs_.emplace(r.data,
                        Input{e, r.bytes, r.bytes > limit_ ? State::Skipped : State::Pending});
        order_.push_back(std::move(in));
      }
    loader_ = std::thread([this] { run(); });
  }

  ~Stager() { stop(); }

  /// @brief Stops the loader and waits for it: a copy under way finishes first, and no input is
  /// read after this returns, so the caller may then unmap every announced range. Entries not
  /// staged by then are left to their consumers; the counters stay readable. Idempotent.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      for (auto& [data, in] : inputs_)
        if (in.state == State::Pending) in.state = State::Skipped;
    }
    cv_.notify_all();
    if (loader_.joinable()) loader_.join();
  }

  Stager(const Stager&) = delete;
  Stager& operator=(const Stager&) = delete;

  /// @brief The staged copy of the `bytes` bytes starting at `data`, waiting for a copy under
  /// way; nullptr when it is not staged (unknown, announced with another size, too large, not
  /// reached yet, or the loader failed): the caller copies it itself. The buffer stays valid
  /// until its entry is released.
  Buffer* find(const void* data, size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = inputs_.find(data);
    if (it == inputs_.end() || it->second.bytes != bytes) return nullptr;
    Input& in = it->second;
    if (in.state == State::Pending) in.state = State::Skipped;  // claimed by the consumer
    cv_.wait(lock, [&] { return in.state != State::Copying; });
    if (in.state == State::Staged) {
      ++hits_;
      return &in.buffer;
    }
    return nullptr;
  }

  /// @brief Frees the staged inputs of entries 0..entry; the loader skips any of them it has
  /// not reached.
  void release(size_t entry) {
    std::vector<Buffer> freed;  // destroyed outside the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [data, in] : inputs_) {
        if (in.entry > entry) continue;
        if (in.state == State::Staged) {
          freed.push_back(std::move(in.buffer));
          in.buffer = Buffer();
          staged_bytes_ -= in.bytes;
          in.state = State::Released;
        } else if (in.state == State::Pending) {
          in.state = State::Skipped;
        } else if (in.state == State::Copying) {
          in.released = true;  // the loader frees it when its copy is done
        }
      }
    }
    cv_.notify_all();
  }

  /// @brief The most bytes staged at one time so far.
  size_t peak_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_bytes_;
  }
  /// @brief Inputs found staged by consumers.
  size_t hits() const {
    std::lock_guard<std::mutex> lock(mu_);
    return hits_;
  }
  /// @brief Inputs not copied because the cache serves them.
  size_t spared() const {
    std::lock_guard<std::mutex> lock(mu_);
    return spared_;
  }
  /// @brief The loader's error, empty when none.
  std::string error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

 private:
  enum class State { Pending, Copying, Staged, Skipped, Released };
  struct Input {
    size_t entry;
    size_t bytes;
    State state;
    Buffer buffer{};
    bool released = false;  // its entry was released while it was being copied
  };

  // Whether the cache serves the input (its question asked with the lock not held); an answer
  // that fails is "no": the input is copied as any other.
  static bool served_by_cache(const StagedInput& r) {
    if (!r.cached) return false;
    try {
      return r.cached();
    } catch (...) {
      return false;
    }
  }

  void run() {
    for (const StagedInput& r : order_) {
      std::unique_lock<std::mutex> lock(mu_);
      Input& in = inputs_.at(r.range.data);
      cv_.wait(lock, [&] {
        return stop_ || in.state != State::Pending || staged_bytes_ + in.bytes <= limit_;
      });
      if (stop_) return;
      if (in.state != State::Pending) continue;
      in.state = State::Copying;  // a consumer asking for it now waits for the answer
      lock.unlock();
      const bool spared = served_by_cache(r);
      lock.lock();
      if (spared) {
        ++spared_;
        in.state = State::Skipped;
        lock.unlock();
        cv_.notify_all();
        continue;
      }
      staged_bytes_ += in.bytes;  // room was there, and releases only make more
      if (staged_bytes_ > peak_bytes_) peak_bytes_ = staged_bytes_;
      lock.unlock();
      Buffer b{};
      std::string failure;
      try {
        b = copy_(r.range);
      } catch (const std::exception& e) {
        failure = e.what();
      } catch (...) {
        failure = "unknown error";
      }
      lock.lock();
      if (!failure.empty()) {
        error_ = failure;
        staged_bytes_ -= in.bytes;
        in.state = State::Skipped;
        for (auto& [data, other] : inputs_)
          if (other.state == State::Pending) other.state = State::Skipped;
        lock.unlock();
        cv_.notify_all();
        return;
      }
      if (in.released) {  // nobody will ask for it: its room goes back at once
        staged_bytes_ -= in.bytes;
        in.state = State::Released;
        lock.unlock();
        b = Buffer();
        cv_.notify_all();
        continue;
      }
      in.buffer = std::move(b);
      in.state = State::Staged;
      lock.unlock();
      cv_.notify_all();
    }
  }

  const size_t limit_;
  CopyFn copy_;
  std::map<const void*, Input> inputs_;
  std::vector<StagedInput> order_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t staged_bytes_ = 0, peak_bytes_ = 0, hits_ = 0, spared_ = 0;
  bool stop_ = false;
  std::string error_;
  std::thread loader_;  // last: starts after every other member exists
};

}  // namespace indim::detail
