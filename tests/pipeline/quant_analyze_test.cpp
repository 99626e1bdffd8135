// Quantised checkpoints end to end: FP8 with block scales (DeepSeek's layout, ragged edge
// blocks, separate 2-D experts), MXFP4 expert stacks (gpt-oss's), and mixed formats, each
// analysed and checked against an fp64 analysis of the weights dequantised by the formula:
// identical counts and max |cos| within 1e-4. Then the noise floor, and scale problems.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/report.hpp"
#include "quant_util.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

constexpr int64_t kBlock = 32;

// A fine-tune of w0: small dense noise and a rank-2 change of a third of sigma_1 (intruders).
Dense<double> fine_tune(const Dense<double>& w0, std::mt19937_64& rng) {
  Dense<double> w = w0;
  const Dense<double> n = test::gaussian(w.rows, w.cols, 0.002, rng);
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += n.data[i];
  for (int r = 0; r < 2; ++r) {
    const Dense<double> a = test::gaussian(w.rows, 1, 1.0 / std::sqrt(w.rows), rng);
    const Dense<double> b = test::gaussian(1, w.cols, 1.0 / std::sqrt(w.cols), rng);
    for (int64_t i = 0; i < w.rows; ++i)
      for (int64_t j = 0; j < w.cols; ++j) w.at(i, j) += 0.35 * a.data[i] * b.data[j];
  }
  return w;
}

// Where a side of the pair is written and what its dequantised matrices are.
struct Ckpt {
  std::vector<TensorData> tensors;
  std::map<std::string, Dense<double>> matrices;  // record name -> the matrix as analysed
};

void add_fp8(Ckpt& s, const std::string& name, const Dense<double>& w) {
  const Quantised q = quantise_fp8(w.data, w.rows, w.cols, DType::F8_E4M3, kBlock, kBlock);
  for (auto& t : test::fp8_tensors(name, q, DType::F8_E4M3, w.rows, w.cols)) s.tensors.push_back(t);
  s.matrices[name] = test::dequantise_fp8(q, DType::F8_E4M3, w.rows, w.cols, kBlock, kBlock);
}

void add_bf16(Ckpt& s, const std::string& name, const Dense<double>& w) {
  std::vector<float> f(w.data.begin(), w.data.end());
  s.tensors.push_back({name,
                       DType::BF16,
                       {static_cast<uint64_t>(w.rows), static_cast<uint64_t>(w.cols)},
                       encode_floats(f, DType::BF16)});
  Dense<double> back = w;
  for (size_t i = 0; i < f.size(); ++i) back.data[i] = bf16_to_float(float_to_bf16(f[i]));
  s.matrices[name] = back;
}

void write_side(const std::string& dir, const Ckpt& s, bool config) {
  fs::create_directories(dir);
  write_safetensors(dir + "/model.safetensors", s.tensors);
  if (config)
    test::write_text(dir + "/config.json",
                     R"({"model_type":"deepseek_v3","quantization_config":{"quant_method":"fp8",)"
                     R"("fmt":"e4m3","weight_block_size":[32,32]}})");
}

// A DeepSeek-shaped miniature: MLA projections (ragged against the 32 x 32 blocks), 3 routed
// experts stored apart and a shared expert, in 2 layers.
std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> deepseek_shapes() {
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> v;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    v.push_back({p + "self_attn.q_a_proj.weight", {48, 100}});
    v.push_back({p + "self_attn.kv_b_proj.weight", {90, 40}});
    for (int e = 0; e < 3; ++e)
      v.push_back({p + "mlp.experts." + std::to_string(e) + ".down_proj.weight", {100, 70}});
    v.push_back({p + "mlp.shared_experts.down_proj.weight", {100, 70}});
  }
  return v;
}

// Every record against the fp64 reference of its dequantised matrices.
void expect_matches_reference(const AnalyzeResult& res, const Ckpt& base, const Ckpt& tuned) {
  int total = 0;
  for (const MatrixResult& r : res.records) {
    SCOPED_TRACE(r.name);
    const Dense<double>& w0 = base.matrices.at(r.name);
    const Dense<double>& w = tuned.matrices.at(r.tuned_name.empty() ? r.name : r.tuned_name);
    const auto ref =
        test::reference_similarity(test::reference_left(w), test::reference_left(w0), r.k);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], ref.maxcos[j], 1e-4) << j;
    for (double e : res.eps) {
      int n = 0;
      for (int j = 0; j < r.k; ++j) n += ref.maxcos[j] < e ? 1 : 0;
      EXPECT_EQ(r.count_at(e), n) << e;
    }
    total += r.count_at(0.5);
  }
  EXPECT_GT(total, 0);  // the rank-2 changes bring intruders in
}

AnalyzeResult run(const test::TempDir& dir,
                  AnalyzeOptions::NoiseFloorMode nf = AnalyzeOptions::NoiseFloorMode::Off) {
  AnalyzeOptions o;
  o.base = dir / "base";
  o.tuned = {dir / "tuned"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.noise_floor = nf;
  return analyze(o);
}

class Formats : public ::testing::TestWithParam<std::pair<bool, bool>> {};  // base, tuned FP8

}  // namespace

TEST_P(Formats, Fp8BlockScaledMatchesTheDequantisedReference) {
  const auto [base_fp8, tuned_fp8] = GetParam();
  test::TempDir dir;
  std::mt19937_64 rng(31);
  Ckpt base, tuned;
  for (const auto& [name, shape] : deepseek_shapes()) {
    const Dense<double> w0 = random_weight(shape.first, shape.second, 0.05, rng);
    const Dense<double> w = fine_tune(w0, rng);
    base_fp8 ? add_fp8(base, name, w0) : add_bf16(base, name, w0);
    tuned_fp8 ? add_fp8(tuned, name, w) : add_bf16(tuned, name, w);
  }
  write_side(dir / "base", base, base_fp8);
  write_side(dir / "tuned", tuned, tuned_fp8);
  const AnalyzeResult res = run(dir);
  ASSERT_EQ(res.records.size(), 12u);  // no scale tensor analysed
  for (const MatrixResult& r : res.records) {
    EXPECT_EQ(r.name.find("scale"), std::string::npos);
    EXPECT_EQ(r.expert, r.name.find(".experts.") == std::string::npos
                            ? -1
                            : r.name[r.name.find(".experts.") + 9] - '0');
  }
  expect_matches_reference(res, base, tuned);
  const std::string csv = test::read_text(dir / "out/matrices.csv");
  EXPECT_NE(csv.find(",expert"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(BaseTuned, Formats,
                         ::testing::Values(std::make_pair(true, true), std::make_pair(true, false),
                                           std::make_pair(false, true)));

TEST(QuantAnalyze, Mxfp4ExpertStackMatchesTheDequantisedReference) {
  test::TempDir dir;
  std::mt19937_64 rng(32);
  const int64_t experts = 3, rows = 48, cols = 64;
  const std::string name = "model.layers.0.mlp.experts.down_proj";
  std::vector<uint8_t> blocks[2], scales[2];
  Ckpt base, tuned;
  for (int64_t e = 0; e < experts; ++e) {
    const Dense<double> w0 = random_weight(rows, cols, 0.5, rng);
    Dense<double> w = fine_tune(w0, rng);
    if (e == 1) w = w0;  // an expert the fine-tune left alone
    const std::string key = name + "[" + std::to_string(e) + "]";
    for (int s = 0; s < 2; ++s) {  // both quantised as gpt-oss ships them
      const Quantised q = quantise_mxfp4(s == 0 ? w0.data : w.data, rows, cols);
      blocks[s].insert(blocks[s].end(), q.codes.begin(), q.codes.end());
      scales[s].insert(scales[s].end(), q.scales.begin(), q.scales.end());
      (s == 0 ? base : tuned).matrices[key] = test::dequantise_mxfp4(q, rows, cols);
    }
  }
  for (int s = 0; s < 2; ++s) {
    const std::string d = dir / (s == 0 ? "base" : "tuned");
    fs::create_directories(d);
    write_safetensors(d + "/model.safetensors",
                      {{name + "_blocks", DType::U8, {3, 48, 2, 16}, blocks[s]},
                       {name + "_scales", DType::U8, {3, 48, 2}, scales[s]}});
  }
  const AnalyzeResult res = run(dir, AnalyzeOptions::NoiseFloorMode::Auto);
  ASSERT_EQ(res.records.size(), 3u);
  for (const MatrixResult& r : res.records) {
    SCOPED_TRACE(r.name);
    EXPECT_EQ(r.name, name + "[" + std::to_string(r.expert) + "]");
    EXPECT_EQ(r.dtype, "F4");
    const auto ref = test::reference_similarity(test::reference_left(tuned.matrices[r.name]),
                                                test::reference_left(base.matrices[r.name]), r.k);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], ref.maxcos[j], 1e-4) << j;
    ASSERT_TRUE(r.has_noise_floor);  // both sides are quantised
    EXPECT_EQ(r.noise_floor.format, "MXFP4");
    EXPECT_EQ(r.noise_floor.maxcos.size(), static_cast<size_t>(r.k));
  }
  EXPECT_EQ(res.records[1].count_at(0.5), 0);
  // A dense stack against the MXFP4 one: gpt-oss writes it [E, in, out], so it is refused.
  std::vector<float> dense(static_cast<size_t>(experts * rows * cols), 0.01f);
  write_safetensors(dir / "tuned/model.safetensors",
                    {{name, DType::BF16, {3, 48, 64}, encode_floats(dense, DType::BF16)}});
  try {
    run(dir);
    FAIL() << "no error";
  } catch (const BadInput& e) {
    EXPECT_EQ(e.problem(), InputProblem::Unsupported);
    EXPECT_NE(std::string(e.what()).find("[E, in, out]"), std::string::npos) << e.what();
  }
}

TEST(QuantAnalyze, NoiseFloorOfAnFp8PairIsReportedEverywhere) {
  test::TempDir dir;
  std::mt19937_64 rng(33);
  Ckpt base, tuned;
  for (const auto& [name, shape] : deepseek_shapes()) {
    const Dense<double> w0 = random_weight(shape.first, shape.second, 0.05, rng);
    add_fp8(base, name, w0);
    add_fp8(tuned, name, fine_tune(w0, rng));
  }
  write_side(dir / "base", base, true);
  write_side(dir / "tuned", tuned, true);
  AnalyzeOptions o;
  o.base = dir / "base";
  o.tuned = {dir / "tuned"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.html = true;
  const AnalyzeResult res = analyze(o);  // default: on, both sides are quantised
  for (const MatrixResult& r : res.records) {
    ASSERT_TRUE(r.has_noise_floor) << r.name;
    EXPECT_EQ(r.noise_floor.format, "F8_E4M3 32x32 blocks");
    for (double c : r.noise_floor.maxcos) EXPECT_TRUE(c >= 0 && c <= 1 + 1e-9) << r.name;
  }
  const std::string json = test::read_text(dir / "out/report.json");
  EXPECT_NE(json.find("\"noise_floor\""), std::string::npos);
  EXPECT_NE(test::read_text(dir / "out/matrices.csv").find("noise_floor_eps_0.5"),
            std::string::npos);
  const std::string html = test::read_text(dir / "out/report.html");
  EXPECT_NE(html.find("id=\"noise-floor\""), std::string::npos);
  EXPECT_NE(html.find("id=\"experts\""), std::string::npos);
  const std::string summary = format_summary(res, 0.5, 10);
  EXPECT_NE(summary.find("of which the noise floor explains"), std::string::npos) << summary;
  // Resumed records keep it.
  o.resume = true;
  const AnalyzeResult again = analyze(o);
  EXPECT_EQ(again.resumed, static_cast<int>(res.records.size()));
  for (size_t i = 0; i < res.records.size(); ++i)
    EXPECT_EQ(again.records[i].noise_floor.maxcos, res.records[i].noise_floor.maxcos);
  // Off when asked, and off by default for an unquantised pair.
  o.resume = false;
  o.noise_floor = AnalyzeOptions::NoiseFloorMode::Off;
  for (const MatrixResult& r : analyze(o).records) EXPECT_FALSE(r.has_noise_floor);
}

TEST(QuantAnalyze, MissingScaleIsBadInputNamingBoth) {
  test::TempDir dir;
  std::mt19937_64 rng(34);
  Ckpt base, tuned;
  add_fp8(base, "model.layers.0.mlp.down_proj.weight", random_weight(64, 64, 0.05, rng));
  add_fp8(base, "model.layers.0.mlp.up_proj.weight", random_weight(64, 64, 0.05, rng));
  base.tensors.pop_back();  // up_proj's weight_scale_inv
  tuned = base;
  write_side(dir / "base", base, true);
  write_side(dir / "tuned", tuned, true);
  try {
    run(dir);
    FAIL() << "no error";
  } catch (const BadInput& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'model.layers.0.mlp.up_proj.weight'"), std::string::npos) << m;
    EXPECT_NE(m.find("'model.layers.0.mlp.up_proj.weight_scale_inv'"), std::string::npos) << m;
    EXPECT_EQ(e.problem(), InputProblem::Malformed);
  }
  EXPECT_FALSE(fs::exists(dir / "out/report.json"));
  // The CLI says so with exit 2, and `inspect` shows each weight's format and scale.
  const auto r = test::run_command(std::string(INDIM_CLI_PATH) + " analyze " + (dir / "base") +
                                   " " + (dir / "tuned") + " --out " + (dir / "out2") + " 2>&1");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("up_proj.weight_scale_inv"), std::string::npos) << r.out;
  const auto i = test::run_command(std::string(INDIM_CLI_PATH) + " inspect " + (dir / "base"));
  EXPECT_EQ(i.rc, 0) << i.out;
  EXPECT_NE(i.out.find("(fp8-block 32x32, scale model.layers.0.mlp.down_proj.weight_scale_inv F32 "
                       "[2, 2])"),
            std::string::npos)
      << i.out;
  EXPECT_NE(i.out.find("not analysable"), std::string::npos) << i.out;
}
