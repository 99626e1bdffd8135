// Architectures' layouts end to end: expert stacks analysed per expert, and fused projections
// split into Q/K/V (or gate/up) by each architecture's row order. The tuned model changes only
// the rows that the architecture's own code reads as K (or as one expert); the analysis must
// find the change there and nowhere else.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

std::vector<float> to_f32(const std::vector<double>& v) { return {v.begin(), v.end()}; }

TensorData tensor(const std::string& name, std::vector<uint64_t> shape,
                  const std::vector<double>& v) {
  return {name, DType::F32, shape, encode_floats(to_f32(v), DType::F32)};
}

AnalyzeResult run(const test::TempDir& dir, bool split) {
  AnalyzeOptions o;
  o.base = dir / "base";
  o.tuned = {dir / "tuned"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  o.select.split_fused = split;
  return analyze(o);
}

double min_maxcos(const MatrixResult& r) {
  return *std::min_element(r.maxcos.begin(), r.maxcos.end());
}

struct FusedCase {
  const char* label;
  const char* config;           // config.json
  const char* name;             // fused tensor
  int64_t rows, cols;           // as stored
  bool conv1d;                  // stored [in, out]
  std::vector<int64_t> k_rows;  // rows of the [out, in] matrix the architecture reads as K
  std::vector<std::string> parts;
};

std::vector<int64_t> rows_of(std::initializer_list<std::pair<int64_t, int64_t>> spans) {
  std::vector<int64_t> r;
  for (auto [from, n] : spans)
    for (int64_t i = 0; i < n; ++i) r.push_back(from + i);
  return r;
}

// Heads of 3 rows each; the K rows of each layout, read as views [.., heads, head_dim].
std::vector<FusedCase> fused_cases() {
  return {
      // Phi-3: [Q (4 heads) | K (2) | V (2)]
      {"phi3_qkv",
       R"({"model_type":"phi3","num_attention_heads":4,"num_key_value_heads":2})",
       "model.layers.0.self_attn.qkv_proj.weight",
       24,
       12,
       false,
       rows_of({{12, 6}}),
       {"q", "k", "v"}},
      // GPT-NeoX: per head [q, k, v]: view [4 heads, 3, 3], k is index 1 of each head
      {"neox",
       R"({"model_type":"gpt_neox","num_attention_heads":4})",
       "gpt_neox.layers.0.attention.query_key_value.weight",
       36,
       12,
       false,
       rows_of({{3, 3}, {12, 3}, {21, 3}, {30, 3}}),
       {"q", "k", "v"}},
      // Falcon new architecture: view [2 kv groups, 2 q + k + v, 3], k is index 2 of each group
      {"falcon_new",
       R"({"model_type":"falcon","num_attention_heads":4,"num_kv_heads":2,"new_decoder_architecture":true})",
       "transformer.h.0.self_attention.query_key_value.weight",
       24,
       12,
       false,
       rows_of({{6, 3}, {18, 3}}),
       {"q", "k", "v"}},
      // Falcon multi-query: [Q (4 heads) | K (1) | V (1)]
      {"falcon_mq",
       R"({"model_type":"falcon","num_attention_heads":4,"multi_query":true})",
       "transformer.h.0.self_attention.query_key_value.weight",
       18,
       12,
       false,
       rows_of({{12, 3}}),
       {"q", "k", "v"}},
      // GPT-2 Conv1D c_attn [in 12, out 36]: output columns [Q | K | V]
      {"gpt2",
       R"({"model_type":"gpt2","n_head":4})",
       "h.0.attn.c_attn.weight",
       12,
       36,
       true,
       rows_of({{12, 12}}),
       {"q", "k", "v"}},
      // Phi-3 gate_up_proj: [gate | up]; "K" here is the up half
      {"phi3_gate_up",
       R"({"model_type":"phi3","num_attention_heads":4})",
       "model.layers.0.mlp.gate_up_proj.weight",
       20,
       12,
       false,
       rows_of({{10, 10}}),
       {"gate", "up"}},
  };
}

class FusedSplit : public ::testing::TestWithParam<FusedCase> {};

}  // namespace

TEST_P(FusedSplit, ChangeFoundInTheRightPartOnly) {
  const FusedCase& c = GetParam();
  test::TempDir dir;
  std::mt19937_64 rng(7);
  Dense<double> w0 = random_weight(c.rows, c.cols, 1.0, rng);
  Dense<double> w = w0;
  std::normal_distribution<double> g(0.0, 0.5);
  for (int64_t row : c.k_rows)  // row of the [out, in] matrix: a column when stored [in, out]
    for (int64_t i = 0; i < (c.conv1d ? c.rows : c.cols); ++i)
      (c.conv1d ? w.at(i, row) : w.at(row, i)) = g(rng);
  fs::create_directories(dir / "base");
  fs::create_directories(dir / "tuned");
  write_safetensors(dir / "base/model.safetensors",
                    {tensor(c.name, {uint64_t(c.rows), uint64_t(c.cols)}, w0.data)});
  write_safetensors(dir / "tuned/model.safetensors",
                    {tensor(c.name, {uint64_t(c.rows), uint64_t(c.cols)}, w.data)});
  test::write_text(dir / "base/config.json", c.config);
  AnalyzeResult whole = run(dir, false);
  ASSERT_EQ(whole.records.size(), 1u);
  AnalyzeResult split = run(dir, true);
  ASSERT_EQ(split.records.size(), c.parts.size());
  const std::string changed = c.parts.size() == 3 ? "k" : "up";
  for (size_t i = 0; i < c.parts.size(); ++i) {
    const MatrixResult& r = split.records[i];
    EXPECT_EQ(r.name, std::string(c.name) + "[" + c.parts[i] + "]");
    EXPECT_NE(r.type.find("[" + c.parts[i] + "]"), std::string::npos) << r.type;
    if (c.parts[i] == changed) {
      EXPECT_EQ(r.shape[0], static_cast<int64_t>(c.k_rows.size()));
      EXPECT_LT(min_maxcos(r), 0.99) << r.name << ": the changed rows are here";
    } else {
      EXPECT_GT(min_maxcos(r), 0.9999) << r.name << ": these rows did not change";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, FusedSplit, ::testing::ValuesIn(fused_cases()),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(Layouts, SplitNeedsHeadsFromConfig) {
  test::TempDir dir;
  std::mt19937_64 rng(8);
  Dense<double> w0 = random_weight(24, 12, 1.0, rng);
  fs::create_directories(dir / "base");
  fs::create_directories(dir / "tuned");
  auto t = tensor("model.layers.0.self_attn.qkv_proj.weight", {24, 12}, w0.data);
  write_safetensors(dir / "base/model.safetensors", {t});
  write_safetensors(dir / "tuned/model.safetensors", {t});
  try {
    run(dir, true);
    FAIL() << "split without config.json accepted";
  } catch (const BadInput& e) {
    EXPECT_NE(std::string(e.what()).find("--split-fused needs num_attention_heads"),
              std::string::npos)
        << e.what();
  }
  test::write_text(dir / "base/config.json", R"({"model_type":"phi3","num_attention_heads":5})");
  EXPECT_THROW(run(dir, true), BadInput) << "5 heads do not fit 24 rows";
}

TEST(Layouts, ExpertStacksAnalysedPerExpert) {
  // transformers v5 fused experts: gate_up_proj [E, 2 ffn, hidden], down_proj [E, hidden, ffn].
  test::TempDir dir;
  std::mt19937_64 rng(9);
  const int64_t E = 3, ffn = 8, hidden = 12;
  std::vector<double> gu0, gu, down;
  std::vector<Dense<double>> experts0, experts;
  for (int64_t e = 0; e < E; ++e) {
    Dense<double> w0 = random_weight(2 * ffn, hidden, 1.0, rng);
    Dense<double> w = w0;
    if (e == 1)  // expert 1 gains a large rank-2 update
      w = compose_svd(random_orthonormal(2 * ffn, 2, rng), {1.5, 1.2},
                      random_orthonormal(hidden, 2, rng)),
      std::transform(w.data.begin(), w.data.end(), w0.data.begin(), w.data.begin(), std::plus<>());
    gu0.insert(gu0.end(), w0.data.begin(), w0.data.end());
    gu.insert(gu.end(), w.data.begin(), w.data.end());
    experts0.push_back(w0), experts.push_back(w);
    Dense<double> d = random_weight(hidden, ffn, 1.0, rng);
    down.insert(down.end(), d.data.begin(), d.data.end());
  }
  const std::string gname = "model.layers.0.mlp.experts.gate_up_proj";
  const std::string dname = "model.layers.0.mlp.experts.down_proj";
  fs::create_directories(dir / "base");
  fs::create_directories(dir / "tuned");
  write_safetensors(dir / "base/model.safetensors",
                    {tensor(gname, {3, 16, 12}, gu0), tensor(dname, {3, 12, 8}, down)});
  write_safetensors(dir / "tuned/model.safetensors",
                    {tensor(gname, {3, 16, 12}, gu), tensor(dname, {3, 12, 8}, down)});
  AnalyzeResult res = run(dir, false);
  ASSERT_EQ(res.records.size(), 6u);  // 3 experts x 2 stacks
  std::map<std::string, const MatrixResult*> by;
  for (const auto& r : res.records) by[r.name] = &r;
  for (int64_t e = 0; e < E; ++e) {
    const MatrixResult* r = by.at(gname + "[" + std::to_string(e) + "]");
    EXPECT_EQ(r->type, "mlp.experts.gate_up_proj") << "experts fold into one type";
    EXPECT_EQ(r->shape, (std::vector<int64_t>{16, 12}));
    auto ref = test::reference_similarity(test::reference_left(experts[e]),
                                          test::reference_left(experts0[e]), r->k);
    for (int j = 0; j < r->k; ++j) EXPECT_NEAR(r->maxcos[j], ref.maxcos[j], 1e-4) << e << " " << j;
    if (e != 1) EXPECT_GT(min_maxcos(*r), 0.9999);
    EXPECT_GT(min_maxcos(*by.at(dname + "[" + std::to_string(e) + "]")), 0.9999);
  }
  EXPECT_LT(min_maxcos(*by.at(gname + "[1]")), 0.9);

  // With --split-fused the gate and up halves of each expert come apart.
  AnalyzeResult split = run(dir, true);
  EXPECT_EQ(split.records.size(), 9u);  // 3 x (gate, up) + 3 down
  EXPECT_EQ(split.records[0].name, gname + "[0.gate]");
  EXPECT_EQ(split.records[0].type, "mlp.experts.gate_up_proj[gate]");
  // Each half is its own run of stored rows, decomposed from the stored bytes.
  for (const auto& r : split.records)
    if (r.name == gname + "[1.up]") {
      auto rows = [&](const Dense<double>& w) {
        Dense<double> h{ffn, hidden, {w.data.begin() + ffn * hidden, w.data.end()}};
        return test::reference_left(h);
      };
      auto ref = test::reference_similarity(rows(experts[1]), rows(experts0[1]), r.k);
      for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], ref.maxcos[j], 1e-4) << j;
    }

  // A non-finite value inside expert 2 names the tensor, the expert and the place in it.
  gu[2 * 16 * 12 + 5 * 12 + 7] = std::nan("");
  write_safetensors(dir / "tuned/model.safetensors",
                    {tensor(gname, {3, 16, 12}, gu), tensor(dname, {3, 12, 8}, down)});
  try {
    run(dir, false);
    FAIL() << "expected BadInput";
  } catch (const BadInput& e) {
    EXPECT_NE(
        std::string(e.what()).find("tensor '" + gname + "' [2] holds a non-finite value at [5, 7]"),
        std::string::npos)
        << e.what();
  }
}
