// The loader that stages plan entries' inputs ahead of their use (cuda/staging.hpp),
// with host buffers standing in for device ones: order, the byte bound, consumers that get
// ahead of the loader, inputs never asked for, failures, shutdown while the loader waits, and a
// stop that waits for the copy under way.
#include "cuda/staging.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <numeric>

using indim::ByteRange;
using Buffer = std::vector<unsigned char>;
using HostStager = indim::detail::Stager<Buffer>;

namespace {

// Distinct source tensors of the given sizes, each filled with its own byte pattern.
struct Sources {
  std::vector<Buffer> data;
  explicit Sources(const std::vector<size_t>& sizes) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      data.emplace_back(sizes[i]);
      for (size_t j = 0; j < sizes[i]; ++j) data.back()[j] = static_cast<unsigned char>(i * 31 + j);
    }
  }
  ByteRange range(size_t i) const { return {data[i].data(), data[i].size()}; }
};

Buffer copy_of(const ByteRange& r) {
  const auto* p = static_cast<const unsigned char*>(r.data);
  return Buffer(p, p + r.bytes);
}

}  // namespace

TEST(Staging, StagesEveryEntryInOrderWithinTheBound) {
  // Four entries (a base and two fine-tunes each) of 100-byte tensors; room for 350 bytes, so
  // one entry at a time is staged while the consumer works through the one before.
  Sources src(std::vector<size_t>(12, 100));
  std::vector<std::vector<indim::StagedInput>> entries(4);
  for (size_t i = 0; i < 12; ++i) entries[i / 3].push_back(src.range(i));
  std::mutex mu;
  std::vector<size_t> order;
  HostStager st(entries, 350, [&](const ByteRange& r) {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t j = 0; j < 12; ++j)
      if (src.data[j].data() == r.data) order.push_back(j);
    return copy_of(r);
  });
  size_t found = 0;
  for (size_t e = 0; e < 4; ++e) {
    for (const indim::StagedInput& in : entries[e]) {
      const ByteRange& r = in.range;
      // Wait (bounded) for the loader to reach the input, so that this test sees staging.
      for (int tries = 0; tries < 400; ++tries) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (order.size() > static_cast<size_t>(&in - entries[e].data()) + 3 * e) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      Buffer* b = st.find(r.data, r.bytes);
      ASSERT_NE(b, nullptr) << "entry " << e;
      ++found;
      ASSERT_EQ(b->size(), r.bytes);
      EXPECT_EQ(std::memcmp(b->data(), r.data, r.bytes), 0);
      EXPECT_EQ(st.find(r.data, r.bytes), b) << "a second use finds the same copy";
    }
    st.release(e);
  }
  EXPECT_EQ(found, 12u);
  EXPECT_EQ(st.hits(), 24u);
  EXPECT_EQ(st.peak_bytes(), 300u) << "one entry at a time: a fourth input never fits";
  std::lock_guard<std::mutex> lock(mu);
  std::vector<size_t> expect(12);
  std::iota(expect.begin(), expect.end(), 0);
  EXPECT_EQ(order, expect) << "plan order";
  EXPECT_EQ(st.error(), "");
}

TEST(Staging, InputLargerThanTheBoundIsLeftToItsUser) {
  Sources src({64, 500, 64});
  HostStager st({{src.range(0), src.range(1)}, {src.range(2)}}, 200, copy_of);
  Buffer* big = st.find(src.data[1].data(), src.data[1].size());
  EXPECT_EQ(big, nullptr);
  st.release(0);
  Buffer* small = st.find(src.data[2].data(), src.data[2].size());
  if (small != nullptr) EXPECT_EQ(*small, src.data[2]);
  EXPECT_EQ(st.find(&src.data[0][1], 63), nullptr) << "only the start of an input is known";
}

TEST(Staging, ConsumerAheadOfTheLoaderClaimsInsteadOfWaiting) {
  // Room for one input: the loader stages a, then waits for room for b. A consumer that asks
  // for b before releasing a takes b over; nothing waits on anything.
  Sources src({100, 100, 100});
  std::atomic<int> copies{0};
  HostStager st({{src.range(0)}, {src.range(1)}, {src.range(2)}}, 100, [&](const ByteRange& r) {
    ++copies;
    return copy_of(r);
  });
  Buffer* a = st.find(src.data[0].data(), src.data[0].size());
  if (a != nullptr) EXPECT_EQ(*a, src.data[0]);
  EXPECT_EQ(st.find(src.data[1].data(), src.data[1].size()), nullptr);
  st.release(1);
  Buffer* c = st.find(src.data[2].data(), src.data[2].size());
  if (c != nullptr) EXPECT_EQ(*c, src.data[2]);
  st.release(2);
  EXPECT_LE(copies.load(), 2) << "b was claimed, never copied";
}

TEST(Staging, InputsNeverAskedForAreFreedByRelease) {
  // A base found in the cache is never asked for; releasing its entry must free its room, or
  // the loader would wait forever.
  Sources src({100, 100, 100, 100});
  std::atomic<int> copies{0};
  HostStager st({{src.range(0)}, {src.range(1)}, {src.range(2)}, {src.range(3)}}, 100,
                [&](const ByteRange& r) {
                  ++copies;
                  return copy_of(r);
                });
  for (size_t e = 0; e < 4; ++e) {
    while (copies.load() < static_cast<int>(e) + 1)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    st.release(e);
  }
  EXPECT_EQ(copies.load(), 4);
  EXPECT_EQ(st.peak_bytes(), 100u);
}

TEST(Staging, LoaderFailureLeavesTheRestToTheirUsers) {
  Sources src({10, 10, 10});
  HostStager st({{src.range(0), src.range(1), src.range(2)}}, 1000, [&](const ByteRange& r) {
    if (r.data == src.data[1].data()) throw std::runtime_error("out of device memory");
    return copy_of(r);
  });
  for (int i = 0; i < 400 && st.error().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(st.error(), "out of device memory");
  Buffer* a = st.find(src.data[0].data(), src.data[0].size());
  ASSERT_NE(a, nullptr) << "staged before the failure";
  EXPECT_EQ(*a, src.data[0]);
  EXPECT_EQ(st.find(src.data[1].data(), src.data[1].size()), nullptr);
  EXPECT_EQ(st.find(src.data[2].data(), src.data[2].size()), nullptr)
      << "the loader stopped at the failure";
}

TEST(Staging, ShutsDownWhileTheLoaderWaitsForRoom) {
  Sources src({100, 100, 100});
  std::atomic<int> copies{0};
  {
    HostStager st({{src.range(0)}, {src.range(1)}, {src.range(2)}}, 100, [&](const ByteRange& r) {
      ++copies;
      return copy_of(r);
    });
    while (copies.load() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }  // joins without a release: must not hang
  EXPECT_EQ(copies.load(), 1);
}

TEST(Staging, AnInputAskedForWithAnotherSizeIsNeitherFoundNorCounted) {
  Sources src({100, 100});
  HostStager st({{src.range(0), src.range(1)}}, 1000, copy_of);
  for (int i = 0; i < 400 && st.peak_bytes() < 200; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(st.find(src.data[0].data(), 50), nullptr) << "the first half of a staged input";
  EXPECT_EQ(st.hits(), 0u);
  ASSERT_NE(st.find(src.data[0].data(), 100), nullptr);
  EXPECT_EQ(st.hits(), 1u);
}

TEST(Staging, StopWaitsForTheCopyUnderWayAndReadsNothingAfter) {
  // The inputs are unmapped right after stop() returns (the run ends or is cancelled): the copy
  // under way must have finished, and no other may start.
  Sources src({100, 100, 100, 100});
  std::atomic<int> started{0}, finished{0};
  std::atomic<bool> stopped{false}, read_after_stop{false};
  HostStager st({{src.range(0)}, {src.range(1)}, {src.range(2)}, {src.range(3)}}, 1000,
                [&](const ByteRange& r) {
                  ++started;
                  std::this_thread::sleep_for(std::chrono::milliseconds(50));
                  if (stopped) read_after_stop = true;
                  Buffer b = copy_of(r);
                  ++finished;
                  return b;
                });
  while (started.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  st.stop();
  stopped = true;
  const int at_stop = finished.load();
  EXPECT_EQ(at_stop, started.load()) << "stop() returned with a copy under way";
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  EXPECT_EQ(finished.load(), at_stop) << "a copy started after stop()";
  EXPECT_FALSE(read_after_stop);
  EXPECT_LT(at_stop, 4);
  EXPECT_EQ(st.find(src.data[3].data(), 100), nullptr) << "left to its consumer";
  st.stop();  // idempotent
}

TEST(Staging, AnInputTheCacheServesIsAskedAboutAndNotCopied) {
  // The second input is a base the cache holds: asked once, on the loader's thread, just before
  // its turn, and neither copied nor counted against the bound; the others are staged.
  Sources src({100, 100, 100});
  std::atomic<int> asked{0};
  std::thread::id asker;
  std::vector<std::vector<indim::StagedInput>> entries(1);
  entries[0].push_back(src.range(0));
  entries[0].push_back(indim::StagedInput(src.range(1), [&] {
    ++asked;
    asker = std::this_thread::get_id();
    return true;
  }));
  entries[0].push_back(indim::StagedInput(src.range(2), [] { return false; }));
  std::atomic<int> copies{0};
  HostStager st(entries, 200, [&](const ByteRange& r) {
    ++copies;
    return copy_of(r);
  });
  for (int i = 0; i < 400 && copies.load() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  st.stop();
  EXPECT_EQ(asked.load(), 1);
  EXPECT_NE(asker, std::this_thread::get_id());
  EXPECT_EQ(st.spared(), 1u);
  EXPECT_EQ(copies.load(), 2) << "the served base took no copy, and no room from the third";
  EXPECT_EQ(st.find(src.data[1].data(), 100), nullptr);
  ASSERT_NE(st.find(src.data[2].data(), 100), nullptr);
  EXPECT_EQ(st.peak_bytes(), 200u);
}

TEST(Staging, AnInputReleasedWhileBeingCopiedGivesItsRoomBack) {
  // Room for one input. The first entry is released while its input is still being copied (its
  // unit never asked for it): once copied it is freed, so the second entry's input is staged.
  Sources src({100, 100});
  std::atomic<int> started{0};
  HostStager st({{src.range(0)}, {src.range(1)}}, 100, [&](const ByteRange& r) {
    ++started;
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    return copy_of(r);
  });
  while (started.load() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  st.release(0);
  for (int i = 0; i < 400 && started.load() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(started.load(), 2) << "the released copy kept its room: staging stalled";
  Buffer* b = st.find(src.data[1].data(), 100);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(*b, src.data[1]);
  EXPECT_EQ(st.peak_bytes(), 100u);
}
