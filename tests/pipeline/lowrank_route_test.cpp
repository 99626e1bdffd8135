// The low-rank route as a user meets it: real adapter folders (rsLoRA, rank and alpha
// patterns, DoRA) against a bf16 base, square, tall and wide, analysed with the route and with
// --no-lowrank; every record's `route` says which and why; several adapters in one run; a
// cached base; a certificate bound too tight to meet sends the matrices to the full route.
// (Conv1D and embedding adapters take the route too: lora_test.cpp checks them against an
// independent fp64 merge.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/safetensors.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

// A matrix, or with `vector` a 1-D tensor of its rows.
TensorData tensor(const std::string& name, const Dense<double>& m, DType dtype,
                  bool vector = false) {
  std::vector<float> v(m.data.begin(), m.data.end());
  std::vector<uint64_t> shape{static_cast<uint64_t>(m.rows)};
  if (!vector) shape.push_back(static_cast<uint64_t>(m.cols));
  return {name, dtype, shape, encode_floats(v, dtype)};
}

struct Module {
  std::string name;
  int64_t out, in;  // as stored
};

// Base (bf16) with q/v 320 x 320, up 480 x 300 (tall), down 300 x 480 (wide); adapters of
// rank r on all of them.
const std::vector<Module>& modules() {
  static const std::vector<Module> m = {{"model.layers.0.self_attn.q_proj", 320, 320},
                                        {"model.layers.0.self_attn.v_proj", 320, 320},
                                        {"model.layers.0.mlp.up_proj", 480, 300},
                                        {"model.layers.0.mlp.down_proj", 300, 480}};
  return m;
}

void write_base(const fs::path& dir) {
  std::mt19937_64 rng(21);
  std::vector<TensorData> t;
  for (const Module& m : modules())
    t.push_back(tensor(m.name + ".weight", random_weight(m.out, m.in, 1.0, rng), DType::BF16));
  fs::create_directories(dir);
  write_safetensors((dir / "model.safetensors").string(), t);
}

// An adapter of rank r (down_proj: r / 2 by rank_pattern; up_proj: alpha 3r by alpha_pattern),
// with DoRA magnitudes when asked.
void write_adapter(const fs::path& dir, int r, bool rslora, bool dora, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TensorData> t;
  for (const Module& m : modules()) {
    const int rank = m.name.find("down_proj") != std::string::npos ? r / 2 : r;
    Dense<double> a = test::gaussian(rank, m.in, 1.0 / std::sqrt(static_cast<double>(m.in)), rng);
    Dense<double> b = test::gaussian(m.out, rank, 0.3 / std::sqrt(static_cast<double>(m.out)), rng);
    const std::string p = "base_model.model." + m.name;
    t.push_back(tensor(p + ".lora_A.weight", a, DType::F32));
    t.push_back(tensor(p + ".lora_B.weight", b, DType::F32));
    if (dora && m.name.find("v_proj") != std::string::npos) {
      Dense<double> mag = test::gaussian(m.out, 1, 0.1, rng);
      for (double& x : mag.data) x = 1.0 + std::fabs(x);
      t.push_back(tensor(p + ".lora_magnitude_vector", mag, DType::F32, true));
    }
  }
  fs::create_directories(dir);
  write_safetensors((dir / "adapter_model.safetensors").string(), t);
  test::write_text((dir / "adapter_config.json").string(),
                   R"({"peft_type":"LORA","r":)" + std::to_string(r) + R"(,"lora_alpha":)" +
                       std::to_string(2 * r) + R"(,"use_rslora":)" + (rslora ? "true" : "false") +
                       R"(,"use_dora":)" + (dora ? "true" : "false") +
                       R"(,"rank_pattern":{"down_proj":)" + std::to_string(r / 2) +
                       R"(},"alpha_pattern":{"up_proj":)" + std::to_string(3 * r) + "}}");
}

AnalyzeOptions options(const fs::path& dir, std::vector<std::string> tuned, const std::string& out,
                       Precision p, bool lowrank) {
  AnalyzeOptions o;
  o.base = (dir / "base").string();
  o.tuned = std::move(tuned);
  o.out_dir = (dir / out).string();
  o.backend = "cpu";
  o.precision = p;
  o.lowrank = lowrank;
  if (!lowrank) o.algo = "gram64";  // the reference is the Gram route, not the warm iteration
  return o;
}

std::map<std::string, const MatrixResult*> by_name(const AnalyzeResult& r) {
  std::map<std::string, const MatrixResult*> m;
  for (const auto& x : r.records) m[std::to_string(x.tuned_index) + x.name] = &x;
  return m;
}

void expect_agree(const AnalyzeResult& low, const AnalyzeResult& full, double tol) {
  ASSERT_EQ(low.records.size(), full.records.size());
  auto f = by_name(full);
  for (const MatrixResult& r : low.records) {
    SCOPED_TRACE(r.name + " " + r.route);
    const MatrixResult& g = *f.at(std::to_string(r.tuned_index) + r.name);
    ASSERT_EQ(r.k, g.k);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], g.maxcos[j], tol) << j;
    EXPECT_EQ(r.counts, g.counts);
  }
}

}  // namespace

TEST(LowRankPipeline, AdapterRouteAgreesWithMergedFullRoute) {
  test::TempDir tmp;
  const fs::path dir(tmp.str());
  write_base(dir / "base");
  for (bool rslora : {false, true}) {
    SCOPED_TRACE(rslora ? "rslora" : "plain");
    const std::string ad = (dir / (rslora ? "rs" : "plain")).string();
    write_adapter(ad, 8, rslora, false, rslora ? 5 : 6);
    for (Precision p : {Precision::F64, Precision::F32}) {
      const AnalyzeResult low = analyze_only(options(dir, {ad}, "low", p, true));
      const AnalyzeResult full = analyze_only(options(dir, {ad}, "full", Precision::F64, false));
      for (const MatrixResult& r : low.records)
        EXPECT_EQ(r.route.rfind("lowrank/krylov, ", 0), 0u) << r.name << ": " << r.route;
      for (const MatrixResult& r : full.records)
        EXPECT_NE(r.route.find("(full route: --no-lowrank)"), std::string::npos) << r.route;
      expect_agree(low, full, p == Precision::F64 ? 1e-6 : 1e-5);
      int intruders = 0;
      for (const MatrixResult& r : full.records) intruders += r.count_at(0.5);
      EXPECT_GT(intruders, 0);  // the comparison covers intruders, not only kept directions
    }
  }
}

TEST(LowRankPipeline, SeveralAdaptersOneRunAndACachedBase) {
  test::TempDir tmp;
  const fs::path dir(tmp.str());
  write_base(dir / "base");
  std::vector<std::string> ads;
  for (int r : {2, 4, 8, 16}) {
    ads.push_back((dir / ("r" + std::to_string(r))).string());
    write_adapter(ads.back(), r, false, false, 40 + static_cast<uint64_t>(r));
  }
  AnalyzeOptions o = options(dir, ads, "sweep", Precision::F64, true);
  o.cache_dir = (dir / "cache").string();
  const AnalyzeResult sweep = analyze_only(o);
  ASSERT_EQ(sweep.records.size(), 4 * modules().size());
  // r = 16 is past min(out, in) / 20 = 15 on up_proj (480 x 300); down_proj has r / 2.
  for (const MatrixResult& r : sweep.records) {
    const bool past = r.tuned_index == 3 && r.name.find("up_proj") != std::string::npos;
    EXPECT_EQ(
        r.route.find("(full route: r = 16 is past the break-even 15 for ") != std::string::npos,
        past)
        << r.name << ": " << r.route;
  }
  AnalyzeOptions again = options(dir, {ads[2]}, "again", Precision::F64, true);
  again.cache_dir = o.cache_dir;
  const AnalyzeResult one = analyze_only(again);
  auto s = by_name(sweep);
  for (const MatrixResult& r : one.records) {
    EXPECT_TRUE(r.base_cached) << r.name;
    EXPECT_EQ(r.route.rfind("lowrank/", 0), 0u) << r.route;
    const MatrixResult& g = *s.at("2" + r.name);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], g.maxcos[j], 1e-12);
  }
  const AnalyzeResult full = analyze_only(options(dir, {ads[2]}, "full", Precision::F64, false));
  expect_agree(one, full, 1e-6);
}

TEST(LowRankPipeline, DoraAndAFailedCertificateTakeTheFullRoute) {
  test::TempDir tmp;
  const fs::path dir(tmp.str());
  write_base(dir / "base");
  const std::string dora = (dir / "dora").string();
  write_adapter(dora, 8, false, true, 7);
  const AnalyzeResult r = analyze_only(options(dir, {dora}, "dora", Precision::F64, true));
  for (const MatrixResult& x : r.records) {
    const bool is_dora = x.name.find("v_proj") != std::string::npos;
    SCOPED_TRACE(x.name + ": " + x.route);
    if (is_dora)
      EXPECT_NE(x.route.find("(full route: DoRA rescales the merged rows)"), std::string::npos);
    else
      EXPECT_EQ(x.route.rfind("lowrank/", 0), 0u);
  }
  const std::string plain = (dir / "plain").string();
  write_adapter(plain, 8, false, false, 8);
  AnalyzeOptions tight = options(dir, {plain}, "tight", Precision::F64, true);
  tight.lowrank_tol = 1e-300;
  const AnalyzeResult t = analyze_only(tight);
  const AnalyzeResult full = analyze_only(options(dir, {plain}, "full", Precision::F64, false));
  for (const MatrixResult& x : t.records)
    EXPECT_NE(x.route.find("(full route: its residual "), std::string::npos) << x.route;
  expect_agree(t, full, 1e-12);
}

TEST(LowRankPipeline, RouteInEveryOutput) {
  test::TempDir tmp;
  const fs::path dir(tmp.str());
  write_base(dir / "base");
  const std::string ad = (dir / "ad").string();
  write_adapter(ad, 4, false, false, 9);
  AnalyzeOptions o = options(dir, {ad}, "out", Precision::F32, true);
  analyze(o);
  const std::string csv = test::read_text((dir / "out/matrices.csv").string());
  const std::string json = test::read_text((dir / "out/report.json").string());
  EXPECT_NE(csv.find("lowrank/krylov, "), std::string::npos);
  EXPECT_NE(json.find("\"route\": \"lowrank/krylov, "), std::string::npos);
  EXPECT_NE(json.find("\"lowrank\": true"), std::string::npos);
}

// Where the CPU's full route is the warm-started iteration (min(out, in) >= 512, --algo auto),
// the break-even is min(out, in) / 30 (17 at 512 x 512), not min(out, in) / 20 (25): r = 20
// takes the full route there and says against what, and under --algo gram64 the low-rank one.
TEST(LowRankPipeline, BreakEvenFollowsTheFullRouteItIsWeighedAgainst) {
  test::TempDir tmp;
  const fs::path dir(tmp.str());
  std::mt19937_64 rng(31);
  const std::string name = "model.layers.0.self_attn.q_proj";
  fs::create_directories(dir / "base");
  write_safetensors((dir / "base" / "model.safetensors").string(),
                    {tensor(name + ".weight", random_weight(512, 512, 1.0, rng), DType::BF16)});
  const fs::path ad = dir / "r20";
  fs::create_directories(ad);
  const std::string p = "base_model.model." + name;
  write_safetensors(
      (ad / "adapter_model.safetensors").string(),
      {tensor(p + ".lora_A.weight", test::gaussian(20, 512, 1.0 / 23, rng), DType::F32),
       tensor(p + ".lora_B.weight", test::gaussian(512, 20, 0.3 / 23, rng), DType::F32)});
  test::write_text((ad / "adapter_config.json").string(),
                   R"({"peft_type":"LORA","r":20,"lora_alpha":40})");
  AnalyzeOptions o = options(dir, {ad.string()}, "auto", Precision::F64, true);
  const AnalyzeResult warm = analyze_only(o);
  ASSERT_EQ(warm.records.size(), 1u);
  EXPECT_EQ(warm.records[0].route.rfind("warm/krylov, ", 0), 0u) << warm.records[0].route;
  EXPECT_NE(warm.records[0].route.find("(full route: r = 20 is past the break-even 17 for 512 x "
                                       "512 against the warm start)"),
            std::string::npos)
      << warm.records[0].route;
  o.algo = "gram64";
  o.out_dir = (dir / "gram").string();
  const AnalyzeResult gram = analyze_only(o);
  EXPECT_EQ(gram.records[0].route.rfind("lowrank/", 0), 0u) << gram.records[0].route;
  expect_agree(gram, warm, 1e-6);
}
