// The in-memory layer of the base decomposition cache (DecompositionMemory).
#include "indim/cache.hpp"

namespace indim {

uint64_t DecompositionMemory::bytes_of(const Decomposition& d) {
  auto vector_bytes = [](const Vectors& v) {
    return static_cast<uint64_t>(v.size()) * (v.precision() == Precision::F32 ? 4 : 8);
  };
  return d.sigma.size() * sizeof(double) + vector_bytes(d.left) + vector_bytes(d.right);
}

std::shared_ptr<const Decomposition> DecompositionMemory::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  order_.splice(order_.begin(), order_, it->second.age);
  ++stats_.memory_hits;
  return it->second.d;
}

bool DecompositionMemory::has(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.count(key) != 0;
}

void DecompositionMemory::put(const std::string& key, std::shared_ptr<const Decomposition> d) {
  const uint64_t bytes = bytes_of(*d);
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes > max_bytes_ || entries_.count(key) != 0) return;
  while (!order_.empty() && stats_.bytes + bytes > max_bytes_) {
    auto old = entries_.find(order_.back());
    stats_.bytes -= old->second.bytes;
    entries_.erase(old);
    order_.pop_back();
  }
  order_.push_front(key);
  entries_[key] = Entry{std::move(d), bytes, order_.begin()};
  stats_.bytes += bytes;
  stats_.entries = entries_.size();
}

DecompositionMemory::Stats DecompositionMemory::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.entries = entries_.size();
  return s;
}

void DecompositionMemory::count_disk_hit() {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.disk_hits;
}

void DecompositionMemory::count_miss() {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.misses;
}

}  // namespace indim
