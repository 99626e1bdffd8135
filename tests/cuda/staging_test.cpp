// The loader that stages plan entries' inputs ahead of their use (src/pipeline/staging.hpp),
// with host buffers standing in for device ones: order, the byte bound, consumers that get
// ahead of the loader, inputs never asked for, failures, and shutdown while the loader waits.
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
  std::vector<std::vector<ByteRange>> entries(4);
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
    for (const ByteRange& r : entries[e]) {
      // Wait (bounded) for the loader to reach the input, so that this test sees staging.
      for (int tries = 0; tries < 400; ++tries) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (order.size() > static_cast<size_t>(&r - entries[e].data()) + 3 * e) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      Buffer* b = st.find(r.data);
      ASSERT_NE(b, nullptr) << "entry " << e;
      ++found;
      ASSERT_EQ(b->size(), r.bytes);
      EXPECT_EQ(std::memcmp(b->data(), r.data, r.bytes), 0);
      EXPECT_EQ(st.find(r.data), b) << "a second use finds the same copy";
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
  Buffer* big = st.find(src.data[1].data());
  EXPECT_EQ(big, nullptr);
  st.release(0);
  Buffer* small = st.find(src.data[2].data());
  if (small != nullptr) EXPECT_EQ(*small, src.data[2]);
  EXPECT_EQ(st.find(&src.data[0][1]), nullptr) << "only the start of an input is known";
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
  Buffer* a = st.find(src.data[0].data());
  if (a != nullptr) EXPECT_EQ(*a, src.data[0]);
  EXPECT_EQ(st.find(src.data[1].data()), nullptr);
  st.release(1);
  Buffer* c = st.find(src.data[2].data());
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
  Buffer* a = st.find(src.data[0].data());
  ASSERT_NE(a, nullptr) << "staged before the failure";
  EXPECT_EQ(*a, src.data[0]);
  EXPECT_EQ(st.find(src.data[1].data()), nullptr);
  EXPECT_EQ(st.find(src.data[2].data()), nullptr) << "the loader stopped at the failure";
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
