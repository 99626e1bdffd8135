// `indim bench`: rows for every run that can be built, an unavailable backend skipped without
// failing, accuracy against the fp64 reference, and the JSON rewritten after every shape.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "indim/backend.hpp"
#include "test_util.hpp"

using namespace indim;

TEST(Bench, RowsPerShapeAndRunWithAccuracy) {
  test::TempDir dir;
  const std::string json = dir / "bench.json";
  const test::CommandResult r = test::run_command(
      std::string(INDIM_CLI_PATH) +
      " bench --shapes 64x48,40x72 --runs cpu:gram64,cpu:gesdd,cuda:gram64 --json " + json +
      " 2>&1");
  std::string why;
  const bool gpu = cuda_device_count(&why) > 0;
  ASSERT_EQ(r.rc, 0) << r.out;
  if (!gpu) EXPECT_NE(r.out.find("cuda:gram64    skipped"), std::string::npos) << r.out;
  const nlohmann::json rows = nlohmann::json::parse(test::read_text(json));
  ASSERT_EQ(rows.size(), gpu ? 6u : 4u);
  for (const auto& row : rows) {
    EXPECT_FALSE(row.contains("failed")) << row;
    EXPECT_GT(row.at("seconds").get<double>(), 0.0);
    EXPECT_LT(row.at("err_topk").get<double>(), 1e-4) << row;  // fp32 against fp64 gesdd
    // Each row says which route decomposed its base and its tuned matrix.
    const std::string algo = row.at("algo");
    EXPECT_EQ(row.at("routes").at("base").get<std::string>().rfind(algo, 0), 0u) << row;
    EXPECT_EQ(row.at("routes").at("tuned").get<std::string>().rfind(algo, 0), 0u) << row;
  }
  EXPECT_EQ(rows[0].at("shape"), "64x48");
  EXPECT_EQ(rows.back().at("shape"), "40x72");
}
