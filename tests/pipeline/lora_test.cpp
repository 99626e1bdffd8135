// Adapters end to end: the analysis of base + adapter against an independent merge in fp64
// (square, tall, wide, Conv1D, DoRA, embedding, rank/alpha patterns, rsLoRA), the demo's adapter
// against its merged checkpoint, and GPT-2 Conv1D weights analysed as [out, in].
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "indim/analyze.hpp"
#include "indim/checkpoint.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

TensorData f32(const std::string& name, const Dense<double>& m) {
  std::vector<float> v(m.data.begin(), m.data.end());
  std::vector<uint64_t> shape{static_cast<uint64_t>(m.rows)};
  if (m.cols != 1 || m.rows == 1) shape.push_back(static_cast<uint64_t>(m.cols));
  return {name, DType::F32, shape, encode_floats(v, DType::F32)};
}

// What the test expects each module's update to be, computed here from the stored factors.
struct Expect {
  std::string module;
  Dense<double> w0, a, b, mag;  // as stored
  double scale;
  bool transposed, conv1d, dora;
};

Dense<double> to_double(const Dense<double>& m) {
  Dense<double> r = m;
  for (auto& x : r.data) x = static_cast<float>(x);  // what F32 storage keeps
  return r;
}

// W0 + s B A (or its transpose), then DoRA, in [out, in] orientation for the analysis.
Dense<double> reference_merge(const Expect& e) {
  Dense<double> w = to_double(e.w0), a = to_double(e.a), b = to_double(e.b);
  for (int64_t i = 0; i < w.rows; ++i)
    for (int64_t j = 0; j < w.cols; ++j) {
      double s = 0;
      for (int64_t l = 0; l < a.rows; ++l)
        s += e.transposed ? b.at(j, l) * a.at(l, i) : b.at(i, l) * a.at(l, j);
      w.at(i, j) += e.scale * s;
    }
  if (e.conv1d) w = test::transpose(w);
  if (e.dora) {
    Dense<double> mag = to_double(e.mag);
    for (int64_t o = 0; o < w.rows; ++o) {
      double n = 0;
      for (int64_t i = 0; i < w.cols; ++i) n += w.at(o, i) * w.at(o, i);
      for (int64_t i = 0; i < w.cols; ++i) w.at(o, i) *= mag.data[o] / std::sqrt(n);
    }
  }
  return w;
}

void check_against_reference(const AnalyzeResult& res, const std::vector<Expect>& expects,
                             const std::vector<std::string>& base_names) {
  ASSERT_EQ(res.records.size(), expects.size());
  for (size_t i = 0; i < expects.size(); ++i) {
    const Expect& e = expects[i];
    const MatrixResult* r = nullptr;
    for (const auto& x : res.records)
      if (x.name == base_names[i]) r = &x;
    ASSERT_NE(r, nullptr) << base_names[i];
    SCOPED_TRACE(r->name);
    Dense<double> w0 = to_double(e.w0);
    if (e.conv1d) w0 = test::transpose(w0);
    const Dense<double> w = reference_merge(e);
    ASSERT_EQ(r->shape, (std::vector<int64_t>{w.rows, w.cols}));
    EXPECT_EQ(r->conv1d, e.conv1d);
    auto ref = test::reference_similarity(test::reference_left(w), test::reference_left(w0), r->k);
    for (int j = 0; j < r->k; ++j) EXPECT_NEAR(r->maxcos[j], ref.maxcos[j], 1e-8) << j;
  }
}

class LoraMerge : public ::testing::TestWithParam<bool> {};  // rsLoRA or not

}  // namespace

TEST_P(LoraMerge, MatchesIndependentMerge) {
  const bool rslora = GetParam();
  test::TempDir dir;
  std::mt19937_64 rng(rslora ? 11 : 12);
  const std::string p = "base_model.model.";
  std::vector<Expect> ex = {
      {"model.layers.0.self_attn.q_proj",
       random_weight(24, 24, 1.0, rng),
       test::gaussian(4, 24, 1, rng),
       test::gaussian(24, 4, 0.2, rng),
       {},
       0,
       false,
       false,
       false},
      {"model.layers.0.mlp.up_proj",
       random_weight(40, 24, 1.0, rng),
       test::gaussian(4, 24, 1, rng),
       test::gaussian(40, 4, 0.2, rng),
       {},
       0,
       false,
       false,
       false},
      {"model.layers.0.mlp.down_proj", random_weight(24, 40, 1.0, rng),
       test::gaussian(2, 40, 1, rng), test::gaussian(24, 2, 0.2, rng),
       test::gaussian(24, 1, 1, rng), 0, false, false, true},
      {"model.embed_tokens",
       random_weight(50, 24, 1.0, rng),
       test::gaussian(4, 50, 1, rng),
       test::gaussian(24, 4, 0.2, rng),
       {},
       0,
       true,
       false,
       false},
  };
  for (auto& m : ex.back().mag.data) m = std::fabs(m) + 0.5;
  for (auto& m : ex[2].mag.data) m = std::fabs(m) + 0.5;
  // r = 4, alpha = 8; down_proj: r = 2 by rank_pattern; up_proj: alpha 3 by alpha_pattern.
  const double q_scale = rslora ? 8 / 2.0 : 2.0;
  ex[0].scale = q_scale, ex[3].scale = q_scale;
  ex[1].scale = rslora ? 3 / 2.0 : 0.75;
  ex[2].scale = rslora ? 8 / std::sqrt(2.0) : 4.0;

  std::vector<TensorData> base, adapter;
  std::vector<std::string> names;
  for (const Expect& e : ex) {
    base.push_back(f32(e.module + ".weight", e.w0));
    names.push_back(e.module + ".weight");
    const bool emb = e.module == "model.embed_tokens";
    const bool named = e.module == "model.layers.0.mlp.up_proj";  // raw state-dict form
    adapter.push_back(f32(p + e.module +
                              (emb     ? ".lora_embedding_A"
                               : named ? ".lora_A.default.weight"
                                       : ".lora_A.weight"),
                          e.a));
    adapter.push_back(f32(p + e.module +
                              (emb     ? ".lora_embedding_B"
                               : named ? ".lora_B.default.weight"
                                       : ".lora_B.weight"),
                          e.b));
    if (e.dora) adapter.push_back(f32(p + e.module + ".lora_magnitude_vector", e.mag));
  }
  write_safetensors(dir / "base.safetensors", base);
  fs::create_directories(dir / "adapter");
  write_safetensors(dir / "adapter/adapter_model.safetensors", adapter);
  test::write_text(dir / "adapter/adapter_config.json",
                   std::string(R"({"peft_type":"LORA","r":4,"lora_alpha":8,"use_dora":true,)") +
                       R"("rank_pattern":{"down_proj":2},"alpha_pattern":{"up_proj":3},)" +
                       R"("use_rslora":)" + (rslora ? "true" : "false") + "}");
  AnalyzeOptions o;
  o.base = dir / "base.safetensors";
  o.tuned = {dir / "adapter"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.precision = Precision::F64;
  o.select.include = {"layers|embed"};
  AnalyzeResult res = analyze(o);
  check_against_reference(res, ex, names);
}

INSTANTIATE_TEST_SUITE_P(Scaling, LoraMerge, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "rslora" : "plain"; });

TEST(LoraMerge, Gpt2Conv1DAdapterAndFullFineTune) {
  test::TempDir dir;
  std::mt19937_64 rng(3);
  // GPT-2 names without a prefix; Conv1D weights stored [in, out].
  Expect attn{"h.0.attn.c_attn",
              random_weight(24, 72, 1.0, rng),
              test::gaussian(4, 24, 1, rng),
              test::gaussian(72, 4, 0.3, rng),
              {},
              2.0,
              true,
              true,
              false};
  Expect proj{"h.0.attn.c_proj",
              random_weight(24, 24, 1.0, rng),
              test::gaussian(4, 24, 1, rng),
              test::gaussian(24, 4, 0.3, rng),
              {},
              2.0,
              true,
              true,
              false};
  fs::create_directories(dir / "gpt2");
  write_safetensors(dir / "gpt2/model.safetensors",
                    {f32("h.0.attn.c_attn.weight", attn.w0), f32("h.0.attn.c_proj.weight", proj.w0),
                     f32("wte.weight", test::gaussian(30, 24, 1, rng))});
  test::write_text(dir / "gpt2/config.json", R"({"model_type":"gpt2","n_embd":24})");
  fs::create_directories(dir / "adapter");
  write_safetensors(dir / "adapter/adapter_model.safetensors",
                    {f32("base_model.model.h.0.attn.c_attn.lora_A.weight", attn.a),
                     f32("base_model.model.h.0.attn.c_attn.lora_B.weight", attn.b),
                     f32("base_model.model.h.0.attn.c_proj.lora_A.weight", proj.a),
                     f32("base_model.model.h.0.attn.c_proj.lora_B.weight", proj.b)});
  test::write_text(dir / "adapter/adapter_config.json",
                   R"({"peft_type":"LORA","r":4,"lora_alpha":8,"fan_in_fan_out":true})");
  AnalyzeOptions o;
  o.base = dir / "gpt2";
  o.tuned = {dir / "adapter"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.precision = Precision::F64;
  AnalyzeResult res = analyze(o);
  // c_proj is square: only the layout (config.json says gpt2) tells it is Conv1D.
  check_against_reference(res, {attn, proj}, {"h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight"});

  // A full fine-tune of the same model, and the same without config.json (names decide).
  for (const bool with_config : {true, false}) {
    if (!with_config) fs::remove(dir / "gpt2/config.json");
    Dense<double> tuned = attn.w0;
    for (size_t i = 0; i < tuned.data.size(); ++i) tuned.data[i] += 0.3 * std::sin(double(i));
    fs::create_directories(dir / "full");
    write_safetensors(dir / "full/model.safetensors", {f32("h.0.attn.c_attn.weight", tuned)});
    o.tuned = {dir / "full"};
    AnalyzeResult full = analyze(o);
    ASSERT_EQ(full.records.size(), 1u);
    const MatrixResult& r = full.records[0];
    EXPECT_EQ(r.shape, (std::vector<int64_t>{72, 24})) << "analysed as [out, in]";
    EXPECT_TRUE(r.conv1d);
    auto ref =
        test::reference_similarity(test::reference_left(test::transpose(to_double(tuned))),
                                   test::reference_left(test::transpose(to_double(attn.w0))), r.k);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], ref.maxcos[j], 1e-8);
  }
}

TEST(LoraMerge, DemoAdapterAgreesWithMergedCheckpoint) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 64, d.intermediate = 160, d.kv_dim = 32, d.layers = 2, d.vocab = 64, d.lora_rank = 4;
  d.dtype = DType::F32;
  DemoPaths p = generate_demo(dir.str(), d);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.lora, p.lora_adapter};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.select.include = {"q_proj|v_proj"};
  AnalyzeResult res = analyze(o);
  ASSERT_EQ(res.records.size(), 8u);
  for (size_t i = 0; i < 4; ++i) {
    const MatrixResult &merged = res.records[i], &adapter = res.records[i + 4];
    ASSERT_EQ(merged.name, adapter.name);
    for (int j = 0; j < merged.k; ++j) EXPECT_NEAR(merged.maxcos[j], adapter.maxcos[j], 1e-3);
  }
  EXPECT_EQ(res.tuned[0].totals, res.tuned[1].totals);
}

TEST(LoraMerge, DeltaDescribesTheUpdate) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 64, d.intermediate = 160, d.kv_dim = 32, d.layers = 2, d.vocab = 64, d.lora_rank = 4;
  d.dtype = DType::F32;  // no bf16 rounding noise in the differences
  DemoPaths p = generate_demo(dir.str(), d);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full, p.lora, p.lora_adapter};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.delta = true;
  AnalyzeResult res = analyze(o);
  int adapted = 0;
  for (const MatrixResult& r : res.records) {
    SCOPED_TRACE(r.name + " tuned " + std::to_string(r.tuned_index));
    if (r.identical) {
      EXPECT_FALSE(r.has_delta);
      continue;
    }
    ASSERT_TRUE(r.has_delta);
    const int64_t full_rank = std::min(r.shape[0], r.shape[1]);
    if (r.tuned_index == 0) {  // dense noise: full rank, small relative to the weight
      EXPECT_EQ(r.delta.rank, full_rank);
      EXPECT_GT(r.delta.effective_rank, full_rank / 2.0);
      EXPECT_LT(r.delta.rel_fro, 0.05);
    } else {  // the rank-4 update with singular values 0.9 ... 0.4
      ++adapted;
      EXPECT_EQ(r.delta.rank, 4);
      EXPECT_GT(r.delta.effective_rank, 3.0);
      EXPECT_LE(r.delta.effective_rank, 4.0 + 1e-9);
      EXPECT_NEAR(r.delta.spectral, 0.9, 1e-3);
      const double fro =
          std::sqrt(0.81 + std::pow(0.9 - 0.5 / 3, 2) + std::pow(0.9 - 1.0 / 3, 2) + 0.16);
      EXPECT_NEAR(r.delta.fro, fro, 1e-3);
    }
  }
  EXPECT_EQ(adapted, 8);  // q and v of 2 layers, merged and as an adapter
  const std::string csv = test::read_text(res.matrices_csv);
  EXPECT_NE(csv.find(",delta_fro,delta_rel_fro,delta_spectral,delta_rank,delta_effective_rank"),
            std::string::npos);
  EXPECT_NE(test::read_text(res.report_json).find("\"effective_rank\""), std::string::npos);
}

TEST(LoraMerge, NonFiniteMergeRefused) {
  test::TempDir dir;
  std::mt19937_64 rng(4);
  write_safetensors(dir / "base.safetensors",
                    {f32("model.layers.0.q.weight", random_weight(8, 8, 1.0, rng))});
  Dense<double> a = test::gaussian(2, 8, 1, rng), b = test::gaussian(8, 2, 1, rng);
  b.data[0] = 3e38;  // finite in F32, but times a scale of 1e6 it overflows
  fs::create_directories(dir / "ad");
  write_safetensors(dir / "ad/adapter_model.safetensors",
                    {f32("base_model.model.model.layers.0.q.lora_A.weight", a),
                     f32("base_model.model.model.layers.0.q.lora_B.weight", b)});
  test::write_text(dir / "ad/adapter_config.json",
                   R"({"peft_type":"LORA","r":2,"lora_alpha":2e6})");
  AnalyzeOptions o;
  o.base = dir / "base.safetensors";
  o.tuned = {dir / "ad"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  try {
    analyze(o);
    FAIL() << "accepted";
  } catch (const BadInput& e) {
    EXPECT_NE(std::string(e.what()).find("merging the adapter gives a non-finite value"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "out/report.json"));
}
