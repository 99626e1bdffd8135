#include "indim/match.hpp"

#include <gtest/gtest.h>

#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

TensorData zeros(const std::string& name, std::vector<uint64_t> shape) {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return {name, DType::BF16, shape, std::vector<uint8_t>(n * 2, 0x3F)};
}

Checkpoint make(const test::TempDir& d, const std::string& file, std::vector<TensorData> ts) {
  write_safetensors(d / file, ts);
  return Checkpoint::open(d / file);
}

const MatchedPair* pair(const MatchTable& t, const std::string& base_name) {
  for (const auto& p : t.pairs)
    if (p.base_name == base_name) return &p;
  return nullptr;
}

}  // namespace

TEST(Match, LayerIndexAndType) {
  EXPECT_EQ(layer_index("model.layers.12.self_attn.q_proj.weight"), 12);
  EXPECT_EQ(matrix_type("model.layers.12.self_attn.q_proj.weight"), "self_attn.q_proj");
  EXPECT_EQ(layer_index("h.0.attn.c_attn.weight"), 0);
  EXPECT_EQ(matrix_type("h.0.attn.c_attn.weight"), "attn.c_attn");
  EXPECT_EQ(layer_index("roberta.encoder.layer.3.attention.self.query.weight"), 3);
  EXPECT_EQ(matrix_type("roberta.encoder.layer.3.attention.self.query.weight"),
            "encoder.attention.self.query");
  EXPECT_EQ(matrix_type("decoder.block.5.layer.1.EncDecAttention.q.weight"),
            "decoder.layer.*.EncDecAttention.q");
  EXPECT_EQ(matrix_type("encoder.block.5.layer.0.SelfAttention.q.weight"),
            "encoder.layer.*.SelfAttention.q");
  EXPECT_EQ(matrix_type("model.layers.2.block_sparse_moe.experts.7.w1.weight"),
            "block_sparse_moe.experts.*.w1");
  EXPECT_EQ(layer_index("model.layers.2.block_sparse_moe.experts.7.w1.weight"), 2);
  EXPECT_EQ(layer_index("lm_head.weight"), -1);
  EXPECT_EQ(matrix_type("lm_head.weight"), "lm_head");
  EXPECT_EQ(layer_index("0.weight"), 0);
  EXPECT_EQ(strip_peft_prefix("base_model.model.model.layers.0.x"), "model.layers.0.x");
}

TEST(Match, PrefixesOnEitherSide) {
  test::TempDir d;
  Checkpoint base = make(d, "b.safetensors",
                         {zeros("model.layers.0.mlp.up_proj.weight", {8, 4}),
                          zeros("model.layers.0.mlp.down_proj.weight", {4, 8}),
                          zeros("model.layers.1.self_attn.q_proj.weight", {4, 4})});
  Checkpoint tuned = make(d, "t.safetensors",
                          {zeros("base_model.model.model.layers.0.mlp.up_proj.weight", {8, 4}),
                           zeros("layers.0.mlp.down_proj.weight", {4, 8}),
                           zeros("transformer.model.layers.1.self_attn.q_proj.weight", {4, 4}),
                           zeros("extra.weight", {2, 2})});
  MatchTable t = match_checkpoints(base, tuned, {});
  ASSERT_EQ(t.pairs.size(), 3u);
  EXPECT_EQ(pair(t, "model.layers.0.mlp.up_proj.weight")->tuned_name,
            "base_model.model.model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(pair(t, "model.layers.0.mlp.down_proj.weight")->tuned_name,
            "layers.0.mlp.down_proj.weight");
  EXPECT_EQ(pair(t, "model.layers.1.self_attn.q_proj.weight")->tuned_name,
            "transformer.model.layers.1.self_attn.q_proj.weight");
  EXPECT_TRUE(t.base_only.empty());
  EXPECT_EQ(t.tuned_only, std::vector<std::string>{"extra.weight"});

  // And the other way round: the base lacks the prefix the tuned file has.
  MatchTable back = match_checkpoints(tuned, base, {});
  EXPECT_EQ(back.pairs.size(), 3u);
}

TEST(Match, DefaultSelectionAndFilters) {
  test::TempDir d;
  std::vector<TensorData> ts = {
      zeros("model.embed_tokens.weight", {16, 4}),
      zeros("model.layers.0.input_layernorm.weight", {4}),
      zeros("model.layers.0.self_attn.q_proj.weight", {4, 4}),
      zeros("model.layers.0.self_attn.q_proj.bias", {4}),
      zeros("model.layers.0.mlp.gate_proj.weight", {8, 4}),
      zeros("model.layers.0.mlp.experts.gate_up_proj", {2, 8, 4}),
      zeros("model.layers.0.conv.weight", {2, 8, 4}),
      zeros("model.norm.weight", {4}),
      zeros("lm_head.weight", {16, 4}),
  };
  Checkpoint base = make(d, "b.safetensors", ts);
  Checkpoint tuned = make(d, "t.safetensors", ts);
  MatchTable t = match_checkpoints(base, tuned, {});
  std::vector<std::string> selected;
  for (const auto& p : t.pairs)
    if (p.selected) selected.push_back(p.base_name);
  EXPECT_EQ(selected, (std::vector<std::string>{"model.layers.0.mlp.experts.gate_up_proj",
                                                "model.layers.0.mlp.gate_proj.weight",
                                                "model.layers.0.self_attn.q_proj.weight"}));
  EXPECT_EQ(pair(t, "model.layers.0.mlp.experts.gate_up_proj")->parts.size(), 2u);  // 2 experts
  EXPECT_EQ(pair(t, "lm_head.weight")->reason, "embedding, head or norm");
  EXPECT_EQ(pair(t, "model.layers.0.conv.weight")->reason, "3-D tensor");

  MatchTable inc = match_checkpoints(base, tuned, {{"lm_head|embed"}, {}});
  selected.clear();
  for (const auto& p : inc.pairs)
    if (p.selected) selected.push_back(p.base_name);
  EXPECT_EQ(selected, (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight"}));

  MatchTable exc = match_checkpoints(base, tuned, {{}, {"mlp\\."}});
  EXPECT_FALSE(pair(exc, "model.layers.0.mlp.gate_proj.weight")->selected);
  EXPECT_EQ(pair(exc, "model.layers.0.mlp.gate_proj.weight")->reason, "matches --exclude");
  EXPECT_TRUE(pair(exc, "model.layers.0.self_attn.q_proj.weight")->selected);

  EXPECT_THROW(match_checkpoints(base, tuned, {{"("}, {}}), UsageError);
}

TEST(Match, ShapeMismatchFlagged) {
  test::TempDir d;
  Checkpoint base = make(d, "b.safetensors", {zeros("model.layers.0.a.weight", {4, 4})});
  Checkpoint tuned = make(d, "t.safetensors", {zeros("model.layers.0.a.weight", {4, 5})});
  MatchTable t = match_checkpoints(base, tuned, {});
  ASSERT_EQ(t.pairs.size(), 1u);
  EXPECT_FALSE(t.pairs[0].shapes_equal);
}
