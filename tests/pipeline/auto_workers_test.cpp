// `--workers auto`: the count follows the cores, the plan's entries and, for large matrices,
// the memory the machine has free; the CLI takes "auto" or a number and refuses anything else.
#include "pipeline/auto_workers.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

using namespace indim;

namespace {

detail::Plan plan_of(int entries, int64_t rows, int64_t cols) {
  detail::Plan p;
  for (int e = 0; e < entries; ++e) {
    detail::PlanEntry entry;
    entry.name = "m" + std::to_string(e);
    detail::WorkUnit u;
    u.rows = rows, u.cols = cols;
    entry.units.push_back(u);
    p.entries.push_back(entry);
  }
  return p;
}

}  // namespace

TEST(AutoWorkers, BoundedByCoresEntriesAndMemory) {
  const uint64_t gib = 1ull << 30;
  // A DeepSeek expert: 2048 x 7168 needs about 315 MB a worker.
  const uint64_t peak = detail::worker_peak_bytes(2048, 7168);
  EXPECT_GE(peak, 300ull << 20);
  EXPECT_LT(peak, 330ull << 20);
  EXPECT_EQ(detail::auto_workers(plan_of(1000, 2048, 7168), 8, 100 * gib), 8);  // the cores
  EXPECT_EQ(detail::auto_workers(plan_of(3, 2048, 7168), 8, 100 * gib), 3);     // the entries
  // 1 GiB free: three quarters of it holds two such workers.
  EXPECT_EQ(detail::auto_workers(plan_of(1000, 2048, 7168), 8, gib), 2);
  EXPECT_EQ(detail::auto_workers(plan_of(1000, 2048, 7168), 8, 1 << 20), 1);  // never 0
  EXPECT_EQ(detail::auto_workers(plan_of(1000, 2048, 7168), 8, 0), 8);        // memory unknown
  EXPECT_GT(detail::available_memory(), 0u);
  EXPECT_GE(detail::auto_worker_cap(), 1);
}

TEST(AutoWorkers, CliTakesAutoOrANumber) {
  const std::string cli = INDIM_CLI_PATH;
  for (const char* bad : {"0", "abc", "257", "-1"}) {
    const auto r = test::run_command(cli + " analyze a b --out /tmp/x --workers " + bad + " 2>&1");
    EXPECT_EQ(r.rc, 1) << bad << ": " << r.out;
  }
  const auto h = test::run_command(cli + " analyze --help");
  EXPECT_NE(h.out.find("--workers TEXT"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("=auto"), std::string::npos) << h.out;
}
