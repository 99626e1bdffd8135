// Progress and cancellation in the library API: an observer hears of every unit once with
// costs that sum to the plan's; a token cancelled after N units leaves a journal of N units
// that --resume completes to the report an uninterrupted run gives.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

struct Counting : RunObserver {
  int planned_units = -1;
  UnitCost planned_cost, finished_cost;
  std::multiset<std::pair<int, std::string>> started, finished;
  int resumed = 0;
  CancelToken* cancel = nullptr;
  int cancel_after = -1;
  int stop_at_start = -1;  // stop_now() when this many units have started
  void planned(int units, const UnitCost& total) override {
    planned_units = units, planned_cost = total;
  }
  void unit_started(const UnitEvent& u) override {
    started.insert({u.tuned_index, u.name});
    if (cancel != nullptr && static_cast<int>(started.size()) == stop_at_start) cancel->stop_now();
  }
  void unit_finished(const UnitEvent& u) override {
    finished.insert({u.tuned_index, u.name});
    finished_cost += u.cost;
    resumed += u.resumed ? 1 : 0;
    if (cancel != nullptr && static_cast<int>(finished.size()) == cancel_after) cancel->cancel();
  }
};

DemoPaths demo(const test::TempDir& dir) {
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 3, d.vocab = 40;
  return generate_demo(dir.str(), d);
}

AnalyzeOptions options(const DemoPaths& p, const std::string& out) {
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full, p.lora_adapter};
  o.out_dir = out;
  o.backend = "cpu";
  o.side = Side::Both;
  return o;
}

int journal_records(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = -1;  // the header line
  while (std::getline(in, line)) ++n;
  return n;
}

// What a report says per record, without timings.
std::map<std::tuple<int, std::string, std::string>, std::vector<double>> findings(
    const AnalyzeResult& r) {
  std::map<std::tuple<int, std::string, std::string>, std::vector<double>> f;
  for (const auto& m : r.records) {
    std::vector<double> v = m.maxcos;
    for (int64_t a : m.argmax) v.push_back(static_cast<double>(a));
    for (int c : m.counts) v.push_back(c);
    f[{m.tuned_index, m.name, m.side}] = v;
  }
  return f;
}

}  // namespace

TEST(Observer, EveryUnitOnceWithCostsSummingToThePlan) {
  test::TempDir dir;
  const DemoPaths p = demo(dir);
  for (int workers : {1, 3}) {
    Counting obs;
    AnalyzeOptions o = options(p, dir / ("out" + std::to_string(workers)));
    o.workers = workers;
    o.observer = &obs;
    const AnalyzeResult res = analyze(o);
    EXPECT_EQ(obs.planned_units, 21 + 6);  // 21 matrices, the LoRA on 6 of them
    EXPECT_EQ(static_cast<int>(obs.finished.size()), obs.planned_units);
    const std::set<std::pair<int, std::string>> distinct(obs.finished.begin(), obs.finished.end());
    EXPECT_EQ(distinct.size(), obs.finished.size()) << "a unit reported twice";
    EXPECT_EQ(obs.started, obs.finished);
    EXPECT_GT(obs.planned_cost.flops, 0);
    EXPECT_DOUBLE_EQ(obs.finished_cost.flops, obs.planned_cost.flops);
    EXPECT_EQ(obs.finished_cost.bytes, obs.planned_cost.bytes);
    EXPECT_EQ(res.records.size(), 2u * obs.finished.size());  // both sides
  }
}

TEST(Cancel, AfterNUnitsTheJournalResumesToTheSameReport) {
  test::TempDir dir;
  const DemoPaths p = demo(dir);
  const AnalyzeResult whole = analyze(options(p, dir / "whole"));

  const std::string out = dir / "cut";
  CancelToken token;
  Counting obs;
  obs.cancel = &token, obs.cancel_after = 5;
  AnalyzeOptions o = options(p, out);
  o.observer = &obs;
  o.cancel = &token;
  EXPECT_THROW(analyze(o), Cancelled);
  EXPECT_EQ(obs.finished.size(), 5u) << "units in flight finish, no new one starts";
  EXPECT_EQ(journal_records(out + "/journal.jsonl"), 5 * 2);
  EXPECT_FALSE(std::filesystem::exists(out + "/report.json")) << "only a finished run reports";

  Counting again;
  AnalyzeOptions r = options(p, out);
  r.resume = true;
  r.observer = &again;
  const AnalyzeResult resumed = analyze(r);
  EXPECT_EQ(resumed.resumed, 5 * 2);
  EXPECT_EQ(again.resumed, 5);
  EXPECT_EQ(again.started.size(), whole.records.size() / 2 - 5);
  EXPECT_EQ(findings(resumed), findings(whole));
  EXPECT_TRUE(std::filesystem::exists(out + "/report.json"));
}

TEST(Cancel, CancelledBeforeTheFirstUnitLeavesAnEmptyResumableJournal) {
  test::TempDir dir;
  const DemoPaths p = demo(dir);
  CancelToken token;
  token.cancel();
  AnalyzeOptions o = options(p, dir / "out");
  o.cancel = &token;
  try {
    analyze(o);
    FAIL() << "not cancelled";
  } catch (const Cancelled& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
  EXPECT_EQ(journal_records(dir / "out/journal.jsonl"), 0);
  AnalyzeOptions r = options(p, dir / "out");
  r.resume = true;
  EXPECT_EQ(analyze(r).records.size(), 2u * 27u);
}

TEST(Cancel, StopNowAbandonsTheUnitInFlightBetweenSweeps) {
  // Matrices of order >= 264 with k = 10: the tuned side goes by subspace iteration, whose
  // sweeps check the token.
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 320, d.intermediate = 640, d.kv_dim = 320, d.layers = 1, d.vocab = 40;
  const DemoPaths p = generate_demo(dir.str(), d);
  CancelToken token;
  Counting obs;
  obs.cancel = &token, obs.stop_at_start = 2;
  AnalyzeOptions o = options(p, dir / "out");
  o.side = Side::Left;
  o.algo = "gram64";
  o.observer = &obs;
  o.cancel = &token;
  EXPECT_THROW(analyze(o), Cancelled);
  EXPECT_EQ(obs.started.size(), 2u);
  EXPECT_EQ(obs.finished.size(), 1u) << "the second unit stopped inside its decomposition";
  EXPECT_EQ(journal_records(dir / "out/journal.jsonl"), 1);
  AnalyzeOptions r = options(p, dir / "out");
  r.side = Side::Left;
  r.resume = true;
  const AnalyzeResult done = analyze(r);
  EXPECT_EQ(done.resumed, 1);
  EXPECT_EQ(done.records.size(), 7u + 2u);
}
