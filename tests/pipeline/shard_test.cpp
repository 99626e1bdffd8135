// Shards and merge: every base matrix runs in exactly one shard, balanced by cost; the merged
// shards are the unsharded run (records, order, totals, journal); merge refuses incomplete,
// mixed, repeated and damaged sets.
#include "plan/shard.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/shards.hpp"
#include "indim/tuned.hpp"
#include "plan/plan.hpp"
#include "test_util.hpp"

using namespace indim;
using Json = nlohmann::json;

namespace {

class Shards : public ::testing::Test {
 protected:
  void SetUp() override {
    DemoOptions d;
    d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 3, d.vocab = 40;
    d.dtype = DType::BF16;
    paths_ = generate_demo(dir_.str(), d);
  }
  AnalyzeOptions options(const std::string& out) const {
    AnalyzeOptions o;
    o.base = paths_.base;
    o.tuned = {paths_.full, paths_.lora, paths_.lora_adapter};
    o.backend = "cpu";
    o.eps = {0.5, 0.3};
    o.out_dir = dir_ / out;
    return o;
  }
  // Runs every shard of `count` into shard<i>/, returns the folders (in reverse order).
  std::vector<std::string> run_shards(
      int count, const std::function<void(AnalyzeOptions&)>& edit = [](AnalyzeOptions&) {}) const {
    std::vector<std::string> dirs;
    for (int i = count - 1; i >= 0; --i) {
      AnalyzeOptions o = options("shard" + std::to_string(i));
      o.shard = {i, count};
      edit(o);
      analyze(o);
      dirs.push_back(o.out_dir);
    }
    return dirs;
  }
  MergeOptions merge_into(const std::vector<std::string>& dirs, const std::string& out) const {
    MergeOptions m;
    m.dirs = dirs;
    m.out_dir = dir_ / out;
    m.html = true;
    return m;
  }
  static Json without_timings(Json r) {
    r.erase("created");
    r.erase("timing");
    for (auto& m : r["matrices"]) m.erase("seconds");
    return r;
  }
  Json report(const std::string& out) const {
    return Json::parse(test::read_text(dir_ / (out + "/report.json")));
  }
  std::string message_of(const MergeOptions& m) const {
    try {
      merge_shards(m);
    } catch (const BadInput& e) {
      return e.what();
    }
    return "(merged)";
  }

  test::TempDir dir_;
  DemoPaths paths_;
};

}  // namespace

TEST(ShardSpec, ParsesIndexOverCountAndRefusesTheRest) {
  const ShardSpec s = parse_shard("2/5");
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 5);
  EXPECT_EQ(parse_shard("0/1").count, 1);
  for (const char* bad : {"", "3", "5/5", "-1/4", "1/0", "1/4097", "1/4x", " 1/4", "1/", "a/b"})
    EXPECT_THROW(parse_shard(bad), UsageError) << bad;
}

TEST_F(Shards, EveryEntryRunsInOneShardBalancedByCost) {
  const Checkpoint base = Checkpoint::open(paths_.base);
  const TunedInput t = TunedInput::open(paths_.full);
  const detail::Plan plan = detail::make_plan(base, {t.match(base, {}, detect_layout(base))}, true);
  const Json header = {
      {"inputs", {{"base", {{"path", "/a"}, {"files", Json::array()}}}, {"tuned", Json::array()}}}};
  const RunHeader::Shard s = detail::make_shard_plan(plan, {1, 4}, header);
  ASSERT_EQ(s.plan.size(), plan.entries.size());
  std::vector<double> load(4, 0.0);
  double biggest = 0;
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const double c = plan.entries[i].cost().flops;
    load[static_cast<size_t>(s.plan[i].shard)] += c;
    biggest = std::max(biggest, c);
  }
  // Longest first onto the least loaded: no shard ends more than one entry above another.
  EXPECT_LE(
      *std::max_element(load.begin(), load.end()) - *std::min_element(load.begin(), load.end()),
      biggest * 1.01);
  // The same plan on every machine, and the hash ignores the paths of the inputs.
  Json moved = header;
  moved["inputs"]["base"]["path"] = "/elsewhere/base";
  const RunHeader::Shard again = detail::make_shard_plan(plan, {3, 4}, moved);
  EXPECT_EQ(again.plan_hash, s.plan_hash);
  for (size_t i = 0; i < s.plan.size(); ++i) EXPECT_EQ(again.plan[i].shard, s.plan[i].shard);
  Json other = header;
  other["settings"] = {{"k", 5}};
  EXPECT_NE(detail::make_shard_plan(plan, {1, 4}, other).plan_hash, s.plan_hash);
}

TEST_F(Shards, MergedShardsAreTheUnshardedRun) {
  AnalyzeOptions whole = options("whole");
  whole.html = true;
  analyze(whole);
  const std::vector<std::string> dirs = run_shards(3);
  int records = 0;
  for (const std::string& d : dirs) {
    const Json r = Json::parse(test::read_text(d + "/report.json"));
    EXPECT_EQ(r["shard"]["count"], 3);
    EXPECT_EQ(r["shard"]["plan_hash"], report("shard0")["shard"]["plan_hash"]);
    records += static_cast<int>(r["matrices"].size());
  }
  EXPECT_EQ(records, static_cast<int>(report("whole")["matrices"].size()));

  const AnalyzeResult m = merge_shards(merge_into(dirs, "merged"));
  EXPECT_EQ(without_timings(report("merged")), without_timings(report("whole")));
  EXPECT_EQ(test::read_text(dir_ / "merged/vectors.csv"),
            test::read_text(dir_ / "whole/vectors.csv"));
  const std::string journal = test::read_text(dir_ / "merged/journal.jsonl");
  const std::string unsharded = test::read_text(dir_ / "whole/journal.jsonl");
  EXPECT_EQ(journal.substr(0, journal.find('\n')), unsharded.substr(0, unsharded.find('\n')));
  EXPECT_TRUE(std::filesystem::file_size(dir_ / "merged/report.html") > 1000);
  // Timings: summed, each shard's listed, the slowest named.
  const Json timing = report("merged")["timing"];
  ASSERT_EQ(timing["shards"].size(), 3u);
  double sum = 0, slowest = 0;
  for (const auto& s : timing["shards"])
    sum += s["seconds"].get<double>(), slowest = std::max(slowest, s["seconds"].get<double>());
  EXPECT_NEAR(timing["seconds"].get<double>(), sum, 1e-9);
  EXPECT_EQ(timing["slowest_shard"]["seconds"].get<double>(), slowest);
  EXPECT_EQ(m.shard_times.size(), 3u);
}

TEST_F(Shards, MoreShardsThanMatricesAndBothSidesMergeToo) {
  AnalyzeOptions whole = options("whole");
  whole.side = Side::Both;
  whole.tuned = {paths_.lora_adapter};
  analyze(whole);
  const auto both = [&](AnalyzeOptions& o) {
    o.side = Side::Both, o.tuned = {paths_.lora_adapter};
  };
  const std::vector<std::string> dirs = run_shards(9, both);  // the adapter touches 6 matrices
  int empty = 0;
  for (const std::string& d : dirs)
    empty += Json::parse(test::read_text(d + "/report.json"))["matrices"].empty() ? 1 : 0;
  EXPECT_EQ(empty, 3);
  merge_shards(merge_into(dirs, "merged"));
  EXPECT_EQ(without_timings(report("merged")), without_timings(report("whole")));
}

TEST_F(Shards, MergeRefusesIncompleteMixedRepeatedOrDamagedSets) {
  std::vector<std::string> dirs = run_shards(3);
  auto with = [&](std::vector<std::string> d) { return merge_into(d, "merged"); };
  EXPECT_NE(message_of(with({dirs[0], dirs[1]})).find("missing"), std::string::npos);
  EXPECT_NE(message_of(with({dirs[0], dirs[1], dirs[1], dirs[2]})).find("given twice"),
            std::string::npos);

  AnalyzeOptions other = options("other");  // another run's shard: other settings
  other.k = 5;
  other.shard = {1, 3};
  analyze(other);
  EXPECT_NE(
      message_of(with({dirs[0], other.out_dir, dirs[2]})).find("different inputs or settings"),
      std::string::npos);

  analyze(options("whole"));
  EXPECT_NE(message_of(with({dirs[0], dirs[1], dirs[2], dir_ / "whole"})).find("without --shard"),
            std::string::npos);

  // Hand-edited numbers merge indexes by: out of range is damage, never a reach past an array.
  for (const auto& edit :
       std::vector<std::function<void(Json&)>>{[](Json& r) { r["shard"]["index"] = 7; },
                                               [](Json& r) { r["shard"]["count"] = 1000000000; },
                                               [](Json& r) { r["shard"]["plan"][0]["shard"] = -1; },
                                               [](Json& r) {
                                                 r["shard"]["plan"][0]["tuned"] = {0, 99};
                                               }}) {
    const std::string bad = dir_ / "edited";
    std::filesystem::remove_all(bad);
    std::filesystem::copy(dirs[2], bad, std::filesystem::copy_options::recursive);
    Json r = Json::parse(test::read_text(bad + "/report.json"));
    edit(r);
    test::write_text(bad + "/report.json", r.dump());
    EXPECT_NE(message_of(with({dirs[0], dirs[1], bad})).find("damaged shard output"),
              std::string::npos)
        << r["shard"].dump().substr(0, 200);
  }

  // Damaged: a record cut short; a lost record; an unfinished shard (no report.json).
  const std::string journal = dirs[1] + "/journal.jsonl";
  const std::string text = test::read_text(journal);
  test::write_text(journal, text.substr(0, text.size() - 40) + "\n");
  EXPECT_NE(message_of(with(dirs)).find("damaged shard output"), std::string::npos);
  const size_t last = text.rfind('\n', text.size() - 2);
  test::write_text(journal, text.substr(0, last + 1));
  EXPECT_NE(message_of(with(dirs)).find("no record of"), std::string::npos);
  std::filesystem::remove(dirs[1] + "/report.json");
  EXPECT_NE(message_of(with(dirs)).find("has not finished"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "merged/report.json"));

  MergeOptions into_shard = with(dirs);
  into_shard.out_dir = dirs[0];
  EXPECT_THROW(merge_shards(into_shard), UsageError);
}

TEST_F(Shards, AShardResumesOnItsOwnAndRefusesAnotherShardsJournal) {
  AnalyzeOptions o = options("s");
  o.shard = {0, 2};
  analyze(o);
  o.resume = true;
  const AnalyzeResult again = analyze(o);
  EXPECT_EQ(again.resumed, static_cast<int>(again.records.size()));
  o.shard = {1, 2};
  EXPECT_THROW(analyze(o), UsageError);
}
