// What analyze tells a backend about streaming, checked with a recording backend around the CPU
// one: the inputs announced per plan entry are the bytes later asked for, in that entry, with
// their sizes; every entry is released once, in order, also when its base came from the cache
// and was never asked for; workers each get their own entries.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

struct Log {
  std::mutex mu;
  struct Worker {
    std::vector<std::vector<ByteRange>> announced;
    std::vector<size_t> released;
    std::vector<std::pair<size_t, ByteRange>> asked;  // (entry being processed, what was asked)
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
    return cpu_->decompose(std::move(w), side, keep, label);
  }
  Decomposition decompose(Dense<double>&& w, Side side, int64_t keep,
                          const std::string& label) override {
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
  std::unique_ptr<Backend> cpu_;
  Log& log_;
  size_t i_;
};

AnalyzeOptions options(const DemoPaths& p, const test::TempDir& dir, Log& log, int workers) {
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full, p.lora_adapter};
  o.out_dir = dir / "out";
  o.workers = workers;
  log.workers.resize(static_cast<size_t>(workers));
  auto made = std::make_shared<size_t>(0);
  o.backend_factory = [&log, made] { return std::make_unique<Recording>(log, (*made)++); };
  return o;
}

DemoPaths small_demo(const test::TempDir& dir) {
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 2, d.vocab = 40;
  return generate_demo(dir.str(), d);
}

// Every ask was announced for the entry being processed, with the same size.
void expect_asks_announced(const Log::Worker& w) {
  for (const auto& [entry, range] : w.asked) {
    ASSERT_LT(entry, w.announced.size());
    const auto& in = w.announced[entry];
    auto it = std::find_if(in.begin(), in.end(),
                           [&](const ByteRange& r) { return r.data == range.data; });
    ASSERT_NE(it, in.end()) << "asked for bytes not announced for entry " << entry;
    EXPECT_EQ(it->bytes, range.bytes) << "entry " << entry;
  }
}

void expect_released_in_order(const Log::Worker& w) {
  ASSERT_EQ(w.released.size(), w.announced.size());
  for (size_t i = 0; i < w.released.size(); ++i) EXPECT_EQ(w.released[i], i);
}

}  // namespace

TEST(Streaming, AnnouncedInputsAreWhatIsAskedForEntryByEntry) {
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  Log log;
  const AnalyzeResult res = analyze(options(p, dir, log, 1));
  const Log::Worker& w = log.workers[0];
  ASSERT_FALSE(w.announced.empty());
  expect_asks_announced(w);
  expect_released_in_order(w);
  // Nothing announced goes unused without a cache: each range is asked for at least once.
  std::set<const void*> asked;
  for (const auto& [entry, range] : w.asked) asked.insert(range.data);
  size_t announced = 0;
  for (const auto& in : w.announced)
    for (const ByteRange& r : in) {
      ++announced;
      EXPECT_TRUE(asked.count(r.data)) << r.bytes;
    }
  // 14 base matrices: each base and full tuned tensor, plus the base under the 4 LoRA merges.
  EXPECT_EQ(w.announced.size(), 14u);
  EXPECT_EQ(announced, 28u);
  EXPECT_EQ(res.records.size(), 14u + 4u);
}

TEST(Streaming, CachedBasesAreAnnouncedButStillReleased) {
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  Log first, second;
  AnalyzeOptions o = options(p, dir, first, 1);
  o.cache_dir = dir / "cache";
  analyze(o);
  o = options(p, dir, second, 1);
  o.cache_dir = dir / "cache";
  o.out_dir = dir / "out2";
  analyze(o);
  const Log::Worker& w = second.workers[0];
  expect_asks_announced(w);
  expect_released_in_order(w);
  // The bases come from the cache: only the 14 full tuned tensors and 4 merges are asked for.
  EXPECT_EQ(w.asked.size(), 18u);
  EXPECT_LT(w.asked.size(), first.workers[0].asked.size());
}

TEST(Streaming, WorkersEachGetTheirOwnEntries) {
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  Log log;
  const AnalyzeResult res = analyze(options(p, dir, log, 3));
  size_t entries = 0;
  std::set<const void*> seen;
  for (const Log::Worker& w : log.workers) {
    expect_asks_announced(w);
    expect_released_in_order(w);
    entries += w.announced.size();
    for (const auto& in : w.announced)
      for (const ByteRange& r : in) EXPECT_TRUE(seen.insert(r.data).second) << "announced twice";
  }
  EXPECT_EQ(entries, 14u);
  EXPECT_EQ(res.records.size(), 18u);
}
