// A device's memory budget shared by its streams (cuda/memory_pool.hpp): leases that fit
// run together, one that does not waits for room, an oversized one runs alone, many workers
// with random needs all finish within the bound, and what a worker keeps between calls it gets
// without waiting and can split off.
#include "cuda/memory_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

using indim::detail::MemoryPool;

TEST(MemoryPool, LeasesThatFitRunTogetherAndOthersWait) {
  MemoryPool pool(100);
  MemoryPool::Lease a = pool.acquire(60);
  MemoryPool::Lease b = pool.acquire(40);  // fits beside a
  std::atomic<bool> granted{false};
  std::thread t([&] {
    MemoryPool::Lease c = pool.acquire(50);
    granted = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(granted.load()) << "50 more do not fit while 100 are held";
  a.end();
  t.join();
  EXPECT_TRUE(granted.load());
  EXPECT_EQ(pool.peak(), 100u);
}

TEST(MemoryPool, OversizedLeaseRunsAlone) {
  MemoryPool pool(100);
  std::atomic<bool> granted{false};
  MemoryPool::Lease small = pool.acquire(10);
  std::thread t([&] {
    MemoryPool::Lease big = pool.acquire(500);
    granted = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(granted.load()) << "waits until nothing else is held";
  small.end();
  t.join();
  EXPECT_TRUE(granted.load());
}

TEST(MemoryPool, LeasesMoveAndEndOnce) {
  MemoryPool pool(100);
  MemoryPool::Lease a = pool.acquire(70);
  MemoryPool::Lease b = std::move(a);
  EXPECT_EQ(a.bytes(), 0u);
  EXPECT_EQ(b.bytes(), 70u);
  b.end();
  b.end();  // a second end gives nothing back twice
  MemoryPool::Lease c = pool.acquire(100);
  EXPECT_EQ(c.bytes(), 100u);
}

TEST(MemoryPool, ManyWorkersStayWithinTheBoundAndAllFinish) {
  MemoryPool pool(1000);
  std::atomic<uint64_t> held{0}, worst{0};
  std::atomic<int> done{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 6; ++w)
    workers.emplace_back([&, w] {
      std::mt19937 rng(w);
      std::uniform_int_distribution<uint64_t> need(1, 900);
      for (int i = 0; i < 200; ++i) {
        const uint64_t n = need(rng);
        MemoryPool::Lease l = pool.acquire(n);
        const uint64_t now = held += n;
        uint64_t prev = worst.load();
        while (now > prev && !worst.compare_exchange_weak(prev, now)) {
        }
        held -= n;
      }
      ++done;
    });
  for (auto& t : workers) t.join();
  EXPECT_EQ(done.load(), 6);
  EXPECT_LE(worst.load(), 1000u);
  EXPECT_LE(pool.peak(), 1000u);
}

TEST(MemoryPool, TryAcquireNeverWaitsAndSplitLeasesEndApart) {
  MemoryPool pool(100);
  MemoryPool::Lease a = pool.try_acquire(70);
  ASSERT_TRUE(a);
  EXPECT_FALSE(pool.try_acquire(40)) << "40 more do not fit beside 70";
  MemoryPool::Lease kept = a.split(50);  // a call's buffers end, its kept copy stays
  EXPECT_EQ(a.bytes(), 20u);
  EXPECT_EQ(kept.bytes(), 50u);
  a.end();
  MemoryPool::Lease b = pool.try_acquire(50);
  ASSERT_TRUE(b) << "the 20 returned with the call";
  EXPECT_FALSE(pool.try_acquire(1));
  kept.end();
  EXPECT_TRUE(pool.try_acquire(50));
  EXPECT_EQ(pool.peak(), 100u);
  EXPECT_EQ(MemoryPool::Lease().split(10).bytes(), 0u);
}
