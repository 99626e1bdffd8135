// adapter_config.json parsing, adapter folder validation and pairing with a base: every
// refusal with its message.
#include "indim/peft.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "indim/error.hpp"
#include "indim/match.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

std::string config_error(const std::string& text) {
  try {
    parse_adapter_config(text, "adapter_config.json");
  } catch (const BadInput& e) {
    return e.what();
  }
  return "";
}

TensorData f32(const std::string& name, std::vector<uint64_t> shape, float v = 0.5f) {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> vals(n);
  for (uint64_t i = 0; i < n; ++i) vals[i] = v + 0.01f * static_cast<float>(i % 17);
  return {name, DType::F32, shape, encode_floats(vals, DType::F32)};
}

void write_adapter(const test::TempDir& d, const std::string& config,
                   const std::vector<TensorData>& tensors) {
  test::write_text(d / "adapter_config.json", config);
  write_safetensors(d / "adapter_model.safetensors", tensors);
}

std::string adapter_error(const test::TempDir& d) {
  try {
    Adapter::open(d.str());
  } catch (const BadInput& e) {
    return e.what();
  }
  return "";
}

const std::string kConfig = R"({"peft_type":"LORA","r":4,"lora_alpha":8})";
const std::string kQ = "base_model.model.model.layers.0.self_attn.q_proj";

}  // namespace

TEST(AdapterConfig, DefaultsScalesAndPatterns) {
  LoraConfig c = parse_adapter_config(R"({"peft_type":"LORA"})", "x");
  EXPECT_EQ(c.r, 8);
  EXPECT_DOUBLE_EQ(c.scale_for("a.q_proj"), 1.0);
  c = parse_adapter_config(
      R"({"peft_type":"LORA","r":16,"lora_alpha":32,"use_rslora":true,
          "rank_pattern":{"layers\\.0\\.self_attn\\.q_proj":4,"q_proj":8},
          "alpha_pattern":{"v_proj":2.5}})",
      "x");
  EXPECT_EQ(c.rank_for("model.layers.0.self_attn.q_proj"), 4);  // first key in file order
  EXPECT_EQ(c.rank_for("model.layers.1.self_attn.q_proj"), 8);
  EXPECT_EQ(c.rank_for("model.layers.1.self_attn.xq_proj"), 16);       // needs a dot boundary
  EXPECT_EQ(c.rank_for("model.layers.0.self_attn.q_proj_extra"), 16);  // anchored at the end
  EXPECT_DOUBLE_EQ(c.scale_for("model.layers.1.self_attn.q_proj"), 32 / std::sqrt(8.0));
  EXPECT_DOUBLE_EQ(c.scale_for("model.layers.1.self_attn.v_proj"), 2.5 / std::sqrt(16.0));
  c = parse_adapter_config(R"({"peft_type":"LORA","r":4,"lora_alpha":6})", "x");
  EXPECT_DOUBLE_EQ(c.scale_for("anything"), 1.5);
}

TEST(AdapterConfig, PatternsAsPeftUsersWriteThemStillWork) {
  // RE2 takes what PEFT users write: anchors, groups, classes, alternation, lazy repetition, and
  // the patterns that make a backtracking engine run away, matched in linear time.
  const LoraConfig c = parse_adapter_config(
      R"({"peft_type":"LORA","r":8,
          "rank_pattern":{"^model\\.layers\\.(\\d+)\\.self_attn\\.(q|k)_proj$":2,
                          "layers\\.[0-9]+\\.mlp\\..*?_proj":3,
                          "(a*)*b":4, "x(?:a|ab)+y":6, ".*a.*b.*c.*d.*e.*f":7,
                          "(?:.*\\.)?v_proj":5}})",
      "x");
  EXPECT_EQ(c.rank_for("model.layers.3.self_attn.k_proj"), 2);
  EXPECT_EQ(c.rank_for("model.layers.3.mlp.up_proj"), 3);
  EXPECT_EQ(c.rank_for("model.layers.3.self_attn.v_proj"), 5);
  EXPECT_EQ(c.rank_for("model.layers.3.self_attn.o_proj"), 8);
  EXPECT_EQ(c.rank_for("m.xababay"), 6);
  // RE2 reads a repetition count it cannot hold as literal text, as Python's re does.
  EXPECT_EQ(
      parse_adapter_config(R"({"peft_type":"LORA","r":8,"rank_pattern":{"q{99999999999}":2}})", "x")
          .rank_for("m.q{99999999999}"),
      2);
  // A module name of 200k characters against every pattern: linear time, no deep recursion.
  const std::string long_name = "model." + std::string(200000, 'a') + "c";
  EXPECT_EQ(c.rank_for(long_name), 8);
}

struct RefusedCase {
  const char* label;
  std::string config;
  const char* message;
};

class RefusedConfig : public ::testing::TestWithParam<RefusedCase> {};

TEST_P(RefusedConfig, Refused) {
  const std::string msg = config_error(GetParam().config);
  ASSERT_FALSE(msg.empty()) << GetParam().label;
  EXPECT_NE(msg.find("adapter_config.json: "), std::string::npos) << msg;
  EXPECT_NE(msg.find(GetParam().message), std::string::npos) << msg;
}

INSTANTIATE_TEST_SUITE_P(
    Peft, RefusedConfig,
    ::testing::Values(
        RefusedCase{"not_json", "{peft", "invalid JSON"},
        RefusedCase{"duplicate_key", R"({"peft_type":"LORA","r":4,"r":8})", "duplicate key \"r\""},
        RefusedCase{"other_type", R"({"peft_type":"IA3"})", "peft_type is IA3"},
        RefusedCase{"no_type", R"({"r":4})", "peft_type is (missing)"},
        RefusedCase{"zero_rank", R"({"peft_type":"LORA","r":0})", "r must be a positive integer"},
        RefusedCase{"float_rank", R"({"peft_type":"LORA","r":2.5})",
                    "r must be a positive integer"},
        RefusedCase{"alpha_string", R"({"peft_type":"LORA","lora_alpha":"8"})",
                    "lora_alpha is not a number"},
        RefusedCase{"alora", R"({"peft_type":"LORA","alora_invocation_tokens":[1,2]})",
                    "uses alora_invocation_tokens"},
        RefusedCase{"target_parameters", R"({"peft_type":"LORA","target_parameters":["experts"]})",
                    "uses target_parameters"},
        RefusedCase{"layer_replication", R"({"peft_type":"LORA","layer_replication":[[0,2]]})",
                    "uses layer_replication"},
        RefusedCase{"qalora", R"({"peft_type":"LORA","use_qalora":true})", "uses use_qalora"},
        RefusedCase{"pissa", R"({"peft_type":"LORA","init_lora_weights":"pissa_niter_4"})",
                    "relative to a modified base"},
        RefusedCase{"olora", R"({"peft_type":"LORA","init_lora_weights":"olora"})",
                    "relative to a modified base"},
        RefusedCase{"loftq", R"({"peft_type":"LORA","init_lora_weights":"loftq"})",
                    "relative to a modified base"},
        RefusedCase{"corda", R"({"peft_type":"LORA","init_lora_weights":"corda"})",
                    "relative to a modified base"},
        RefusedCase{"bad_pattern", R"({"peft_type":"LORA","rank_pattern":{"(":4}})",
                    "is not a valid regex"},
        RefusedCase{"pattern_value", R"({"peft_type":"LORA","alpha_pattern":{"q":"x"}})",
                    "is not a number"},
        RefusedCase{"negative_pattern_rank", R"({"peft_type":"LORA","rank_pattern":{"q":-2}})",
                    "must be positive"},
        // Found by the fuzzer: a huge backreference number overflowed inside std::regex; RE2
        // has no back-references and says so.
        RefusedCase{"backreference",
                    R"({"peft_type":"LORA","rank_pattern":{"a\\9999999999999999999999.0":2}})",
                    "back-references are not supported"},
        RefusedCase{"look_ahead",
                    R"({"peft_type":"LORA","rank_pattern":{"(?!.*lm_head).*\\.v_proj":2}})",
                    "look-around is not supported"},
        // Found by the fuzzer: a huge rank converted to int was undefined behaviour.
        RefusedCase{"huge_pattern_rank",
                    R"({"peft_type":"LORA","rank_pattern":{"q":37777777777777777777777.5}})",
                    "is not a rank"},
        // Found by the fuzzer: stacked quantifiers (l???????/****...) kept libstdc++'s regex
        // compiler busy for minutes; Python's re and RE2 refuse them.
        RefusedCase{"stacked_repeats", R"({"peft_type":"LORA","rank_pattern":{"l???/***x":2}})",
                    "bad repetition operator"},
        RefusedCase{"fractional_pattern_rank", R"({"peft_type":"LORA","rank_pattern":{"q":2.5}})",
                    "is not a rank"},
        // A pattern whose compiled program would be huge: RE2 refuses it within its memory
        // budget instead of allocating without bound.
        RefusedCase{"huge_program",
                    R"({"peft_type":"LORA","alpha_pattern":{"((a{1000}){1000}){1000}":2}})",
                    "is not a valid regex"}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(AdapterConfig, AcceptsConvertedAndHarmlessInits) {
  for (const char* init : {"true", "false", "\"gaussian\"", "\"eva\""})
    EXPECT_EQ(config_error(std::string(R"({"peft_type":"LORA","init_lora_weights":)") + init + "}"),
              "")
        << init;
  EXPECT_EQ(config_error(R"({"peft_type":"LORA","layer_replication":null,"target_parameters":[]})"),
            "");
}

TEST(Adapter, KeyFormsAndParts) {
  test::TempDir d;
  write_adapter(d, kConfig,
                {f32(kQ + ".lora_A.weight", {4, 6}), f32(kQ + ".lora_B.weight", {8, 4}),
                 f32("base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight", {4, 6}),
                 f32("base_model.model.model.layers.0.mlp.up_proj.lora_B.default.weight", {10, 4}),
                 f32("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector", {10}),
                 f32("base_model.model.model.embed_tokens.lora_embedding_A", {4, 30}),
                 f32("base_model.model.model.embed_tokens.lora_embedding_B", {6, 4}),
                 f32("base_model.model.score.weight", {3, 6}),
                 f32("base_model.model.model.layers.0.self_attn.o_proj.base_layer.bias", {6})});
  Adapter a = Adapter::open(d.str());
  ASSERT_EQ(a.modules().size(), 3u);
  const LoraModule& up = a.modules().at("model.layers.0.mlp.up_proj");
  EXPECT_TRUE(up.magnitude.has_value());
  EXPECT_EQ(up.r, 4);
  EXPECT_DOUBLE_EQ(up.scale, 2.0);
  EXPECT_TRUE(a.modules().at("model.embed_tokens").embedding);
  EXPECT_EQ(a.full_tensors().count("score.weight"), 1u);
  EXPECT_EQ(a.full_tensors().count("model.layers.0.self_attn.o_proj.bias"), 1u);
  ASSERT_EQ(a.config().warnings.size(), 1u);  // magnitude without use_dora
}

TEST(Adapter, FolderProblemsNamed) {
  {
    test::TempDir d;
    write_adapter(d, kConfig, {f32(kQ + ".lora_A.weight", {4, 6})});
    EXPECT_NE(adapter_error(d).find("module 'model.layers.0.self_attn.q_proj': has lora_A but no "
                                    "lora_B"),
              std::string::npos)
        << adapter_error(d);
  }
  {
    test::TempDir d;
    write_adapter(d, kConfig, {f32(kQ + ".lora_B.weight", {8, 4})});
    EXPECT_NE(adapter_error(d).find("has lora_B but no lora_A"), std::string::npos);
  }
  {
    test::TempDir d;
    write_adapter(d, kConfig,
                  {f32(kQ + ".lora_A.weight", {3, 6}), f32(kQ + ".lora_B.weight", {8, 3})});
    EXPECT_NE(adapter_error(d).find("rank 4 from the config, but lora_A has 3 rows and lora_B 3 "
                                    "columns"),
              std::string::npos)
        << adapter_error(d);
  }
  {
    test::TempDir d;
    write_adapter(d, kConfig,
                  {f32(kQ + ".lora_A.a1.weight", {4, 6}), f32(kQ + ".lora_B.a2.weight", {8, 4})});
    EXPECT_NE(adapter_error(d).find("holds two adapters"), std::string::npos);
  }
  {
    test::TempDir d;
    test::write_text(d / "adapter_config.json", kConfig);
    test::write_text(d / "adapter_model.bin", "PK");
    EXPECT_NE(adapter_error(d).find("safe_serialization=True"), std::string::npos);
  }
  {
    test::TempDir d;
    test::write_text(d / "adapter_config.json",
                     R"({"peft_type":"LORA","init_lora_weights":"olora"})");
    EXPECT_NE(adapter_error(d).find("adapter_config.json: init_lora_weights"), std::string::npos);
  }
}

TEST(Adapter, PairingWithTheBase) {
  test::TempDir b;
  write_safetensors(b / "model.safetensors", {f32("model.layers.0.self_attn.q_proj.weight", {8, 6}),
                                              f32("model.layers.0.mlp.c_fc.weight", {6, 12})});
  Checkpoint base = Checkpoint::open(b / "model.safetensors");
  auto pair_error = [&](std::vector<TensorData> ts) {
    test::TempDir d;
    write_adapter(d, kConfig, ts);
    Adapter a = Adapter::open(d.str());
    try {
      match_adapter(base, a, {});
    } catch (const BadInput& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(pair_error({f32("base_model.model.model.layers.9.x.lora_A.weight", {4, 6}),
                        f32("base_model.model.model.layers.9.x.lora_B.weight", {8, 4})})
                .find("the base has no weight model.layers.9.x.weight"),
            std::string::npos);
  EXPECT_NE(pair_error({f32(kQ + ".lora_A.weight", {4, 5}), f32(kQ + ".lora_B.weight", {8, 4})})
                .find("lora_A [4, 5] and lora_B [8, 4] do not fit the base weight [8, 6]"),
            std::string::npos);
  EXPECT_NE(pair_error({f32(kQ + ".lora_A.weight", {4, 6}), f32(kQ + ".lora_B.weight", {8, 4}),
                        f32(kQ + ".lora_magnitude_vector", {6})})
                .find("DoRA magnitude has 6 entries, the layer has 8 outputs"),
            std::string::npos);

  // Factors that fit only the [in, out] orientation mark a Conv1D layer.
  test::TempDir d;
  write_adapter(d, kConfig,
                {f32("base_model.model.model.layers.0.mlp.c_fc.lora_A.weight", {4, 6}),
                 f32("base_model.model.model.layers.0.mlp.c_fc.lora_B.weight", {12, 4})});
  Adapter a = Adapter::open(d.str());
  MatchTable t = match_adapter(base, a, {});
  ASSERT_EQ(t.pairs.size(), 1u);
  EXPECT_TRUE(t.pairs[0].transposed);
  EXPECT_TRUE(t.pairs[0].conv1d);
}
