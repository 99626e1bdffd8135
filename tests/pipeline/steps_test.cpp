// Fine-tunes as a trajectory: steps from the numbers in their names, else their order; the step
// in matrices.csv and report.json of a run over checkpoint folders.
#include "pipeline/steps.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

TEST(Steps, FromTheNumbersInTheNames) {
  EXPECT_EQ(detail::step_in_name("runs/a/checkpoint-500"), 500);
  EXPECT_EQ(detail::step_in_name("runs/a/checkpoint-500/"), 500);
  EXPECT_EQ(detail::step_in_name("run/checkpoint-1000/model.safetensors"), 1000);
  EXPECT_EQ(detail::step_in_name("run/checkpoint-7/model.safetensors.index.json"), 7);
  EXPECT_EQ(detail::step_in_name("run/step2000.safetensors"), 2000);
  EXPECT_EQ(detail::step_in_name("adapters/final"), -1);
  EXPECT_EQ(detail::step_in_name("x/1234567890123456789012"), -1);  // too long to be a step
  std::string from;
  EXPECT_EQ(detail::fine_tune_steps({"r/checkpoint-1000", "r/checkpoint-500"}, &from),
            (std::vector<int64_t>{1000, 500}));
  EXPECT_EQ(from, "names");
  EXPECT_EQ(detail::fine_tune_steps({"r/checkpoint-5", "r/final"}, &from),
            (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(from, "order");
  EXPECT_EQ(detail::fine_tune_steps({"a/run-1", "b/run-1"}, &from), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(from, "order") << "equal numbers are no steps";
}

TEST(Steps, ARunOverCheckpointFoldersCarriesThem) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 2, d.vocab = 64, d.lora_rank = 4;
  const DemoPaths p = generate_demo(dir.str(), d);
  fs::create_directories(dir / "run");
  fs::copy(p.full, dir / "run/checkpoint-1500", fs::copy_options::recursive);
  fs::copy(p.lora, dir / "run/checkpoint-300", fs::copy_options::recursive);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {dir / "run/checkpoint-300", dir / "run/checkpoint-1500"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  const AnalyzeResult res = analyze(o);
  EXPECT_EQ(res.steps_from, "names");
  EXPECT_EQ(res.tuned[0].step, 300);
  EXPECT_EQ(res.tuned[1].step, 1500);
  const auto report = nlohmann::json::parse(test::read_text(dir / "out/report.json"));
  EXPECT_EQ(report["tuned"][1]["step"], 1500);
  const std::string csv = test::read_text(dir / "out/matrices.csv");
  const std::string header = csv.substr(0, csv.find('\n'));
  int column = 0;
  for (size_t at = 0; at < header.find(",step,"); at = header.find(',', at + 1)) ++column;
  const std::string first =
      csv.substr(header.size() + 1, csv.find('\n', header.size() + 1) - header.size() - 1);
  size_t at = 0;
  for (int c = 0; c < column; ++c) at = first.find(',', at) + 1;
  EXPECT_EQ(first.substr(at, first.find(',', at) - at), "300") << header << "\n" << first;
}
