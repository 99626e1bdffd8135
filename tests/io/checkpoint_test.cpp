#include "indim/checkpoint.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

TensorData f32(const std::string& name, std::vector<float> v) {
  return {name, DType::F32, {v.size()}, encode_floats(v, DType::F32)};
}

std::string open_error(const std::string& path) {
  try {
    Checkpoint::open(path);
  } catch (const BadInput& e) {
    return e.what();
  }
  return "";
}

// Two shards and an index, as Hugging Face writes them.
void write_two_shards(const test::TempDir& d) {
  write_safetensors(d / "model-00001-of-00002.safetensors", {f32("a", {1, 2}), f32("b", {3})});
  write_safetensors(d / "model-00002-of-00002.safetensors", {f32("c", {4, 5, 6})});
}

}  // namespace

TEST(Checkpoint, SingleFileByPathAndByDirectory) {
  test::TempDir d;
  write_safetensors(d / "model.safetensors", {f32("x", {1, 2, 3})});
  for (const std::string& p : {d / "model.safetensors", d.str()}) {
    Checkpoint c = Checkpoint::open(p);
    EXPECT_EQ(c.kind(), "safetensors");
    ASSERT_NE(c.find("x"), nullptr);
    float v[3];
    convert_elements(c.find("x")->file->data(*c.find("x")->info), DType::F32, 3, v);
    EXPECT_EQ(v[2], 3.0f);
  }
}

TEST(Checkpoint, ShardedIndexFoundInDirectory) {
  test::TempDir d;
  write_two_shards(d);
  write_shard_index(d / "model.safetensors.index.json",
                    {{"a", "model-00001-of-00002.safetensors"},
                     {"b", "model-00001-of-00002.safetensors"},
                     {"c", "model-00002-of-00002.safetensors"}},
                    24);
  Checkpoint c = Checkpoint::open(d.str());
  EXPECT_EQ(c.kind(), "sharded");
  EXPECT_EQ(c.files().size(), 2u);
  ASSERT_EQ(c.tensors().size(), 3u);
  const TensorRef* t = c.find("c");
  ASSERT_NE(t, nullptr);
  EXPECT_NE(t->file->path().find("00002"), std::string::npos);
  float v[3];
  convert_elements(t->file->data(*t->info), DType::F32, 3, v);
  EXPECT_EQ(v[0], 4.0f);
}

TEST(Checkpoint, IndexNamesOddShardNames) {
  test::TempDir d;
  write_safetensors(d / "model_00002-of-00072.safetensors", {f32("a", {1})});
  write_shard_index(d / "model.safetensors.index.json", {{"a", "model_00002-of-00072.safetensors"}},
                    4);
  EXPECT_EQ(Checkpoint::open(d / "model.safetensors.index.json").tensors().size(), 1u);
}

struct IndexCase {
  const char* label;
  std::string index;
  const char* message;
};

class BadIndex : public ::testing::TestWithParam<IndexCase> {};

TEST_P(BadIndex, Rejected) {
  test::TempDir d;
  write_two_shards(d);
  test::write_text(d / "model.safetensors.index.json", GetParam().index);
  const std::string msg = open_error(d.str());
  ASSERT_FALSE(msg.empty()) << GetParam().label;
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find(GetParam().message), std::string::npos) << msg;
}

INSTANTIATE_TEST_SUITE_P(
    Index, BadIndex,
    ::testing::Values(
        IndexCase{"bad_json", "{\"weight_map\": {", "invalid JSON"},
        IndexCase{"no_weight_map", R"({"metadata":{}})", "no \"weight_map\" object"},
        IndexCase{"map_not_object", R"({"weight_map":[1]})", "no \"weight_map\" object"},
        IndexCase{"value_not_string", R"({"weight_map":{"a":3}})",
                  "weight_map value is not a string"},
        IndexCase{"escape_dotdot", R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})",
                  "must be a plain file name"},
        IndexCase{"absolute", R"({"weight_map":{"a":"/etc/passwd"}})", "must be a plain file name"},
        IndexCase{"subdir", R"({"weight_map":{"a":"sub/x.safetensors"}})",
                  "must be a plain file name"},
        IndexCase{"missing_shard", R"({"weight_map":{"a":"model-00009-of-00009.safetensors"}})",
                  "does not exist"},
        IndexCase{"tensor_not_in_shard",
                  R"({"weight_map":{"c":"model-00001-of-00002.safetensors"}})",
                  "does not contain it"},
        IndexCase{"duplicate_tensor",
                  R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                  R"("a":"model-00001-of-00002.safetensors"}})",
                  "duplicate key \"a\""}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(Checkpoint, TensorStoredInTwoShardsRejected) {
  test::TempDir d;
  write_safetensors(d / "s1.safetensors", {f32("a", {1}), f32("b", {2})});
  write_safetensors(d / "s2.safetensors", {f32("b", {3})});
  write_shard_index(d / "model.safetensors.index.json",
                    {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}, 8);
  EXPECT_NE(open_error(d.str()).find("tensor 'b' is stored in two shards"), std::string::npos);
}

TEST(Checkpoint, DirectoryProblemsExplained) {
  test::TempDir d;
  EXPECT_NE(open_error(d.str()).find("no .safetensors file or shard index found"),
            std::string::npos);
  write_safetensors(d / "one.safetensors", {f32("a", {1})});
  write_safetensors(d / "two.safetensors", {f32("a", {1})});
  EXPECT_NE(open_error(d.str()).find("2 .safetensors files but no"), std::string::npos);
  test::TempDir peft;
  test::write_text(peft / "adapter_config.json", "{}");
  EXPECT_NE(open_error(peft.str()).find("PEFT adapter"), std::string::npos);
  test::TempDir bin;
  test::write_text(bin / "pytorch_model.bin", "PK");
  EXPECT_NE(open_error(bin.str()).find("convert it to safetensors"), std::string::npos);
  EXPECT_NE(open_error(d / "nope").find("no such file or directory"), std::string::npos);
}
