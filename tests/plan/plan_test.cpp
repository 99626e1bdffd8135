// The plan as data: the stored bytes each unit says the backend reads are exactly what a
// recording backend is asked for; costs add up; entries follow the base's storage order.
#include "plan/plan.hpp"

#include <gtest/gtest.h>

#include <set>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/schedule.hpp"
#include "indim/tuned.hpp"
#include "pipeline/fanout.hpp"
#include "recording_backend.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

DemoPaths small_demo(const test::TempDir& dir) {
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 2, d.vocab = 40;
  return generate_demo(dir.str(), d);
}

struct Opened {
  Checkpoint base;
  std::vector<TunedInput> tuned;
  std::vector<MatchTable> tables;
};

std::unique_ptr<Opened> open_all(const DemoPaths& p) {
  auto o = std::unique_ptr<Opened>(new Opened{Checkpoint::open(p.base), {}, {}});
  for (const std::string& t : {p.full, p.lora_adapter}) {
    o->tuned.push_back(TunedInput::open(t));
    o->tables.push_back(o->tuned.back().match(o->base, {}, detect_layout(o->base)));
  }
  return o;
}

using Range = std::pair<const void*, size_t>;

}  // namespace

TEST(Plan, ByteRangesAreWhatTheBackendReads) {
  test::TempDir dir;
  const DemoPaths p = small_demo(dir);
  const auto in = open_all(p);
  const detail::Plan plan = detail::make_plan(in->base, in->tables, true);
  std::set<Range> planned;
  size_t host_sides = 0;
  for (const auto& e : plan.entries)
    for (const auto& u : e.units)
      for (const detail::SideRead* r : {&u.base, &u.tuned})
        if (r->on_backend())
          planned.insert({r->data, r->bytes});
        else
          ++host_sides;

  // The pipeline's stages on this very plan, so addresses compare exactly.
  test::Log log;
  log.workers.resize(1);
  AnalyzeOptions o;
  o.tuned = {p.full, p.lora_adapter};
  detail::Journal journal(dir / "journal.jsonl", {{"indim_journal", 1}}, false);
  detail::Plan run_plan = plan;
  detail::RunState state(o, journal, run_plan);
  std::atomic<bool> no_cache_writes{false};
  detail::BaseKeys keys(run_plan.entries.size());
  detail::UnitWork work{o, eps_grid(o.eps), nullptr, no_cache_writes, state, keys};
  std::vector<std::unique_ptr<Backend>> fleet;
  fleet.push_back(std::make_unique<test::Recording>(log, 0));
  detail::run_fleet(fleet, run_plan, work);
  std::set<Range> read;
  for (const auto& [entry, r] : log.workers[0].asked) read.insert({r.data, r.bytes});
  EXPECT_EQ(read, planned);
  // Announced for staging: the same ranges, entry by entry.
  std::set<Range> announced;
  for (const auto& entry : log.workers[0].announced)
    for (const ByteRange& r : entry) announced.insert({r.data, r.bytes});
  EXPECT_EQ(announced, planned);
  EXPECT_EQ(log.workers[0].host.size(), host_sides) << "no side the plan put on the host";
}

TEST(Plan, LoraUnitsArePricedByTheRouteTheyTake) {
  // The default demo's LoRA (r = 8) on q_proj 256 x 256 is within the low-rank route's
  // break-even (256 / 20 = 12) and on v_proj 128 x 256 past it (6): the first is priced at the
  // route's cost, the second, and both under --no-lowrank, at a decomposition's.
  test::TempDir dir;
  DemoOptions d;
  d.layers = 1;
  const auto in = open_all(generate_demo(dir.str(), d));
  for (bool lowrank : {true, false}) {
    const detail::Plan plan = detail::make_plan(in->base, in->tables, lowrank);
    int q = 0, v = 0;
    for (const auto& e : plan.entries)
      for (const auto& u : e.units) {
        if (u.pair.lora == nullptr) continue;
        const bool is_q = e.name.find("q_proj") != std::string::npos;
        const bool is_v = e.name.find("v_proj") != std::string::npos;
        q += is_q, v += is_v;
        // The entry's first unit also carries the base's decomposition.
        const double tuned =
            u.cost.flops - (&u == &e.units.front() ? matrix_cost(u.rows, u.cols, 0) : 0.0);
        if (is_q) {
          ASSERT_EQ(std::make_pair(u.rows, u.cols), std::make_pair(int64_t{256}, int64_t{256}));
          EXPECT_DOUBLE_EQ(tuned, lowrank ? lowrank_cost(256, 256, 8) : matrix_cost(256, 256, 0))
              << e.name;
        }
        if (is_v) {
          ASSERT_EQ(std::make_pair(u.rows, u.cols), std::make_pair(int64_t{128}, int64_t{256}));
          EXPECT_DOUBLE_EQ(tuned, matrix_cost(128, 256, 0)) << e.name;
        }
      }
    EXPECT_EQ(q, 1);
    EXPECT_EQ(v, 1);
  }
}

TEST(Plan, CostsSumPerEntryAndOverThePlan) {
  test::TempDir dir;
  const auto in = open_all(small_demo(dir));
  const detail::Plan plan = detail::make_plan(in->base, in->tables, true);
  ASSERT_EQ(plan.entries.size(), 14u);
  EXPECT_EQ(plan.units(), 14u + 4u);  // the full fine-tune everywhere, the LoRA on 4 matrices
  UnitCost sum;
  for (const auto& e : plan.entries) {
    const auto& u = e.units.front();
    // The base's decomposition once, each fine-tune's once: the schedule's cost of the entry.
    EXPECT_DOUBLE_EQ(e.cost().flops, matrix_cost(u.rows, u.cols, static_cast<int>(e.units.size())));
    EXPECT_GT(e.cost().bytes, 0u);
    sum += e.cost();
  }
  EXPECT_DOUBLE_EQ(sum.flops, plan.cost().flops);
  EXPECT_EQ(sum.bytes, plan.cost().bytes);
  // Storage order: by file of the base, then offset within it.
  auto place = [&](const detail::PlanEntry& e) {
    const TensorRef& r = e.units.front().pair.base;
    size_t file = 0;
    while (in->base.files()[file].get() != r.file) ++file;
    return std::make_pair(file, r.info->begin);
  };
  for (size_t i = 1; i < plan.entries.size(); ++i)
    EXPECT_LT(place(plan.entries[i - 1]), place(plan.entries[i])) << plan.entries[i].name;
}
