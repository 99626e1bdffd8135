// Planning work over several workers (GPUs, CPU workers) and GPU memory estimates: pure
// functions, tested everywhere; and the threaded pipeline on CPU workers.
#include "indim/schedule.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "indim/analyze.hpp"
#include "indim/backend.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;

TEST(Schedule, LongestFirstOntoTheLeastLoaded) {
  const std::vector<double> costs = {3, 5, 1, 4, 3, 2};
  const std::vector<int> w = assign_workers(costs, 2);
  // 5 -> 0, 4 -> 1, 3 (first) -> 1, 3 (second) -> 0, 2 -> 1, 1 -> 0: loads 9 and 9.
  EXPECT_EQ(w, (std::vector<int>{1, 0, 0, 1, 0, 1}));
  double load[2] = {0, 0};
  for (size_t i = 0; i < costs.size(); ++i) load[w[i]] += costs[i];
  EXPECT_EQ(load[0], load[1]);
  EXPECT_EQ(assign_workers(costs, 2), w) << "deterministic";
  EXPECT_EQ(assign_workers(costs, 1), std::vector<int>(6, 0));
  EXPECT_TRUE(assign_workers({}, 4).empty());
  const std::vector<int> many = assign_workers({1, 1}, 8);
  EXPECT_EQ(many, (std::vector<int>{0, 1})) << "spread before stacking";
}

TEST(Schedule, CostsAndGpuMemoryEstimatesGrowWithTheMatrix) {
  EXPECT_LT(matrix_cost(1024, 1024, 1), matrix_cost(4096, 4096, 1));
  EXPECT_LT(matrix_cost(4096, 4096, 1), matrix_cost(4096, 4096, 3));
  EXPECT_EQ(matrix_cost(11008, 4096, 1), matrix_cost(4096, 11008, 1));
  // The low-rank route: linear in r, the same either way round, and on the bench layer's
  // 2048 x 2048 at r = 16 about what was measured against the Gram route there.
  EXPECT_DOUBLE_EQ(lowrank_cost(2048, 2048, 24) - lowrank_cost(2048, 2048, 16),
                   lowrank_cost(2048, 2048, 16) - lowrank_cost(2048, 2048, 8));
  EXPECT_EQ(lowrank_cost(5504, 2048, 16), lowrank_cost(2048, 5504, 16));
  const double share = lowrank_cost(2048, 2048, 16) / matrix_cost(2048, 2048, 0);
  EXPECT_GT(share, 0.05);
  EXPECT_LT(share, 0.3);
  for (const char* algo : {"gram64", "gesvd"}) {
    EXPECT_LT(cuda_bytes_needed(algo, Precision::F32, 4096, 4096, 10),
              cuda_bytes_needed(algo, Precision::F32, 8192, 8192, 10));
    EXPECT_LE(cuda_bytes_needed(algo, Precision::F32, 4096, 4096, 10),
              cuda_bytes_needed(algo, Precision::F64, 4096, 4096, 10));
  }
  // The fp64 Gram route needs more than gesvd, which is why it is the one that falls back.
  EXPECT_GT(cuda_bytes_needed("gram64", Precision::F32, 4096, 4096, 0),
            cuda_bytes_needed("gesvd", Precision::F32, 4096, 4096, 0));
  // The input crosses in its stored width: an fp64 checkpoint analysed in fp32 counts 4 more
  // bytes per element on the Gram route than the working precision would say, bf16 2 fewer.
  EXPECT_EQ(cuda_bytes_needed("gram64", Precision::F32, 4096, 1024, 10, 8) -
                cuda_bytes_needed("gram64", Precision::F32, 4096, 1024, 10),
            4ull * 4096 * 1024);
  EXPECT_EQ(cuda_bytes_needed("gram64", Precision::F32, 4096, 1024, 10) -
                cuda_bytes_needed("gram64", Precision::F32, 4096, 1024, 10, 2),
            2ull * 4096 * 1024);
  // Every Llama-70B shape fits one H200 (141 GB) with either algorithm.
  for (auto [m, n] : {std::pair{8192, 8192}, std::pair{28672, 8192}, std::pair{8192, 28672}})
    EXPECT_LT(cuda_bytes_needed("gram64", Precision::F64, m, n, 0), 100ull << 30) << m << "x" << n;
}

TEST(Schedule, ParallelCpuWorkersGiveTheSameReport) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 64, d.intermediate = 160, d.kv_dim = 32, d.layers = 3, d.vocab = 64, d.lora_rank = 4;
  DemoPaths p = generate_demo(dir.str(), d);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full, p.lora_adapter};
  o.backend = "cpu";
  o.out_dir = dir / "one";
  const AnalyzeResult one = analyze(o);
  o.workers = 3;
  o.out_dir = dir / "three";
  int last = 0, calls = 0;
  o.progress = [&](int done, int total, const std::string&) {
    EXPECT_GT(done, last);
    EXPECT_LE(done, total);
    last = done, ++calls;
  };
  const AnalyzeResult three = analyze(o);
  EXPECT_EQ(calls, static_cast<int>(one.records.size()));
  ASSERT_EQ(three.records.size(), one.records.size());
  for (size_t i = 0; i < one.records.size(); ++i) {
    EXPECT_EQ(three.records[i].name, one.records[i].name);
    EXPECT_EQ(three.records[i].counts, one.records[i].counts);
    for (int j = 0; j < one.records[i].k; ++j)
      EXPECT_NEAR(three.records[i].maxcos[j], one.records[i].maxcos[j], 1e-6);
  }
  // A failure in one worker stops the run and nothing is reported.
  std::vector<float> nan(64 * 64, std::nanf(""));
  std::filesystem::create_directories(dir / "bad");
  write_safetensors(dir / "bad/model.safetensors", {{"model.layers.2.self_attn.o_proj.weight",
                                                     DType::F32,
                                                     {64, 64},
                                                     encode_floats(nan, DType::F32)}});
  o.tuned = {dir / "bad"};
  o.out_dir = dir / "bad-out";
  o.progress = nullptr;
  EXPECT_THROW(analyze(o), BadInput);
  EXPECT_FALSE(std::filesystem::exists(dir / "bad-out/report.json"));
}
