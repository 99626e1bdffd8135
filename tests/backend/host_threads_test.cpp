// A run's workers share the host's CPUs: while several run, each one's OpenBLAS calls and thin
// kernels use its share, and the counts are back as they were once the run ends.
#include "backend/host_threads.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <string>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "test_util.hpp"

extern "C" int openblas_get_num_threads(void);

using namespace indim;
using indim::detail::allowed_cpus;
using indim::detail::host_threads;
using indim::detail::HostThreadShare;

TEST(HostThreads, AShareSplitsTheCpusAmongWorkersAndEnds) {
  const int cpus = allowed_cpus(), blas = openblas_get_num_threads();
  ASSERT_GE(cpus, 1);
  EXPECT_EQ(host_threads(), cpus);
  {
    const HostThreadShare one(1);  // one worker keeps everything
    EXPECT_EQ(host_threads(), cpus);
    EXPECT_EQ(openblas_get_num_threads(), blas);
  }
  {
    const HostThreadShare two(2);
    const int each = std::max(1, cpus / 2);
    EXPECT_EQ(host_threads(), each);
    EXPECT_EQ(openblas_get_num_threads(), std::min(each, blas));
    const HostThreadShare many(4 * cpus);  // more workers than CPUs: one thread each
    EXPECT_EQ(host_threads(), 1);
    EXPECT_EQ(openblas_get_num_threads(), 1);
  }
  EXPECT_EQ(host_threads(), cpus);
  EXPECT_EQ(openblas_get_num_threads(), blas);
}

namespace {

// The thread counts each unit starts under.
struct Threads : RunObserver {
  std::mutex mu;  // calls are serialised; the lock keeps that from being this test's premise
  std::set<std::pair<int, int>> seen;  // {host_threads, OpenBLAS threads}
  int units = 0;
  void unit_started(const UnitEvent&) override {
    std::lock_guard<std::mutex> lock(mu);
    seen.insert({host_threads(), openblas_get_num_threads()});
    ++units;
  }
};

}  // namespace

TEST(HostThreads, TheWorkersOfARunEachGetTheirShare) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 2, d.vocab = 40;
  const DemoPaths p = generate_demo(dir.str(), d);
  const int cpus = allowed_cpus(), blas = openblas_get_num_threads();
  for (int workers : {1, 2, 3}) {
    Threads seen;
    AnalyzeOptions o;
    o.base = p.base;
    o.tuned = {p.full, p.lora_adapter};
    o.out_dir = dir / ("out" + std::to_string(workers));
    o.backend = "cpu";
    o.workers = workers;
    o.observer = &seen;
    analyze(o);
    ASSERT_GT(seen.units, 0) << workers;
    const int each = workers == 1 ? cpus : std::max(1, cpus / workers);
    const std::set<std::pair<int, int>> want{{each, workers == 1 ? blas : std::min(each, blas)}};
    EXPECT_EQ(seen.seen, want) << workers << " workers";
    EXPECT_EQ(host_threads(), cpus);
    EXPECT_EQ(openblas_get_num_threads(), blas);
  }
}
