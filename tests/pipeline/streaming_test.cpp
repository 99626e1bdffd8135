// What analyze tells a backend about streaming, checked with a recording backend around the CPU
// one: the inputs announced per plan entry are the bytes later asked for, in that entry, with
// their sizes; every entry is released once, in order; a base the cache holds is not announced
// to a backend that stages; workers each get their own entries; and the loader is stopped
// before the inputs go, however the run ends.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "recording_backend.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

using test::Log;
using test::Recording;

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

TEST(Streaming, ABackendThatStagesDoesNotCopyTheBasesTheCacheServes) {
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  Log first, second;
  first.stage = second.stage = true;
  // Units slower than the loader, so that it reaches every base before its entry is done.
  second.read_delay = std::chrono::milliseconds(20);
  AnalyzeOptions o = options(p, dir, first, 1);
  o.cache_dir = dir / "cache";
  analyze(o);
  o = options(p, dir, second, 1);
  o.cache_dir = dir / "cache";
  o.out_dir = dir / "out2";
  analyze(o);
  // 14 entries: each base and its full tuned tensor announced; the 10 bases no LoRA merge reads
  // can be asked whether the cache serves them (the 4 merged ones are read either way).
  for (const Log* log : {&first, &second}) {
    const Log::Worker& w = log->workers[0];
    expect_asks_announced(w);
    expect_released_in_order(w);
    size_t announced = 0;
    for (const auto& in : w.announced) announced += in.size();
    EXPECT_EQ(announced, 28u);
    EXPECT_EQ(w.askable, 10u);
    EXPECT_TRUE(w.ended);
    EXPECT_FALSE(w.copied_after_end);
    for (const ByteRange& c : w.copied)  // the loader copies only what a unit reads
      EXPECT_TRUE(std::any_of(w.asked.begin(), w.asked.end(),
                              [&](const auto& a) { return a.second.data == c.data; }))
          << "copied " << c.bytes << " bytes no unit read";
  }
  EXPECT_EQ(first.workers[0].spared, 0u) << "the cache was empty";
  // Then the bases come from the cache: only the 14 full tuned tensors and 4 merges are asked
  // for, and the loader copies no base the cache serves (fewer copies where a unit claimed its
  // input before the loader reached it).
  const Log::Worker& w = second.workers[0];
  EXPECT_EQ(w.asked.size(), 18u);
  EXPECT_LT(w.asked.size(), first.workers[0].asked.size());
  EXPECT_EQ(w.spared, 10u);
  EXPECT_LE(w.copies, 18u) << "a base the cache serves was copied";
}

TEST(Streaming, AFailedRunStopsTheLoaderBeforeTheInputsAreUnmapped) {
  // A unit fails while the loader is still copying entries ahead (each copy waits 40 ms, then
  // reads the mapped checkpoint): the run must stop and join the loader before it unmaps the
  // inputs. Were it the other way round, the loader's next read would fault and kill the
  // process, as a cancelled service job once could.
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  for (int workers : {1, 2}) {
    Log log;
    log.stage = true;
    log.copy_delay = std::chrono::milliseconds(40);
    log.fail_at_ask = 3;
    AnalyzeOptions o = options(p, dir, log, workers);
    o.out_dir = dir / ("failed-" + std::to_string(workers));
    EXPECT_THROW(analyze(o), Error);
    for (const Log::Worker& w : log.workers) {
      EXPECT_TRUE(w.ended) << workers << " workers";
      EXPECT_FALSE(w.copied_after_end) << workers << " workers";
      size_t announced = 0;
      for (const auto& in : w.announced) announced += in.size();
      EXPECT_LT(w.copies, announced) << "the loader was still ahead when the unit failed";
    }
  }
}

TEST(Streaming, ACancelledRunStopsTheLoaderBeforeTheInputsAreUnmapped) {
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  Log log;
  log.stage = true;
  log.copy_delay = std::chrono::milliseconds(40);
  AnalyzeOptions o = options(p, dir, log, 1);
  CancelToken token;
  o.cancel = &token;
  o.progress = [&](int done, int, const std::string&) {
    if (done >= 2) token.stop_now();
  };
  EXPECT_THROW(analyze(o), Cancelled);
  const Log::Worker& w = log.workers[0];
  EXPECT_TRUE(w.ended);
  EXPECT_FALSE(w.copied_after_end);
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
