// Results as data: analyze_only() journals but writes no report; write_outputs() then writes
// the reports an analyze() run writes, from the returned data.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "test_util.hpp"

using namespace indim;

TEST(Outputs, AnalyzeOnlyThenWriteOutputsIsAnalyze) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 2, d.vocab = 40;
  const DemoPaths p = generate_demo(dir.str(), d);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full, p.lora_adapter};
  o.backend = "cpu";
  o.out_dir = dir / "whole";
  analyze(o);

  o.out_dir = dir / "staged";
  AnalyzeResult r = analyze_only(o);
  EXPECT_TRUE(std::filesystem::exists(dir / "staged/journal.jsonl"));
  EXPECT_FALSE(std::filesystem::exists(dir / "staged/report.json"));
  EXPECT_EQ(r.records.size(), 14u + 4u);
  EXPECT_EQ(r.header.tuned.size(), 2u);
  EXPECT_EQ(r.header.tuned[1].kind, "peft-lora");
  write_outputs(r, o);
  // matrices.csv holds timings: the same rows and columns, not the same bytes.
  auto lines = [](const std::string& text) { return std::count(text.begin(), text.end(), '\n'); };
  const std::string staged = test::read_text(dir / "staged/matrices.csv");
  const std::string whole = test::read_text(dir / "whole/matrices.csv");
  EXPECT_EQ(lines(staged), lines(whole));
  EXPECT_EQ(staged.substr(0, staged.find('\n')), whole.substr(0, whole.find('\n')));
  const std::string a = test::read_text(dir / "staged/vectors.csv");
  EXPECT_EQ(a, test::read_text(dir / "whole/vectors.csv"));
  EXPECT_TRUE(std::filesystem::exists(dir / "staged/report.json"));
}
