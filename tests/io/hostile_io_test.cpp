// The readers and the cache against inputs a service must survive: files truncated under their
// mapping, headers of hundreds of thousands of tensors, crafted or misplaced cache entries.
#include <gtest/gtest.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "indim/analyze.hpp"
#include "indim/cache.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/safetensors.hpp"
#include "io/json_strict.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const BadInput& e) {
    return e.what();
  }
  return "";
}

TensorData f32(const std::string& name, size_t n, float v) {
  return {name, DType::F32, {n}, encode_floats(std::vector<float>(n, v), DType::F32)};
}

// 6. A file truncated under its mapping: the read sees zeros instead of SIGBUS, and the damage
// is reported naming file and tensor.
TEST(Truncation, ReadOfAVanishedPageIsBadInputNotSigbus) {
  test::TempDir dir;
  const std::string path = dir / "m.safetensors";
  write_safetensors(path, {f32("a", 1 << 16, 1.0f), f32("b", 1 << 16, 2.0f)});
  auto f = SafetensorsFile::open(path);
  const TensorInfo* b = f->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(error_of([&] { f->check_intact(*b); }), "");
  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);  // a trainer rewriting the file in place
  float sum = 0;
  const float* v = reinterpret_cast<const float*>(f->data(*b));
  for (uint64_t i = 0; i < b->numel(); ++i) sum += v[i];  // SIGBUS without the handler
  EXPECT_EQ(sum, 0.0f);
  const std::string msg = error_of([&] { f->check_intact(*b); });
  EXPECT_NE(msg.find("m.safetensors: tensor 'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vanished while being read"), std::string::npos) << msg;
}

TEST(Truncation, AnalyzeRefusesAFileThatShrinksUnderTheRun) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 64, d.intermediate = 128, d.kv_dim = 32, d.layers = 2, d.vocab = 64, d.lora_rank = 4;
  d.base_shards = 1;
  const DemoPaths p = generate_demo(dir.str(), d);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full};
  o.backend = "cpu";
  o.out_dir = dir / "out";
  const std::string tuned_file = p.full + "/model.safetensors";
  ASSERT_TRUE(fs::exists(tuned_file));
  o.progress = [&](int done, int, const std::string&) {
    if (done == 1) ASSERT_EQ(::truncate(tuned_file.c_str(), 1 << 12), 0);
  };
  std::string msg;
  try {
    analyze(o);
  } catch (const BadInput& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find(tuned_file + ": tensor '"), std::string::npos) << msg;
  EXPECT_NE(msg.find("while being read"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "out/report.json"));
}

// 3. Headers of many tensors parse in linear time (the callback parser took minutes at 100k).
TEST(Header, TwoHundredThousandTensorsParse) {
  std::string h = "{";
  for (int i = 0; i < 200000; ++i)
    h += (i ? "," : "") + std::string("\"model.layers.") + std::to_string(i) +
         ".w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" + std::to_string(4 * i) + "," +
         std::to_string(4 * i + 4) + "]}";
  h += "}";
  const auto img = test::st_image(h, 4 * 200000);
  const SafetensorsHeader parsed = parse_safetensors(img.data(), img.size(), "big");
  EXPECT_EQ(parsed.tensors.size(), 200000u);
  EXPECT_EQ(parsed.tensors.back().end, 800000u);
  // A duplicate far down is still found, in a nested object too.
  const std::string dup = h.substr(0, h.size() - 1) +
                          ",\"model.layers.7.w\":{\"dtype\":\"F32\",\"shape\":[1],"
                          "\"data_offsets\":[0,4]}}";
  const auto dimg = test::st_image(dup, 4 * 200000);
  EXPECT_NE(error_of([&] {
              parse_safetensors(dimg.data(), dimg.size(), "dup");
            }).find("duplicate key \"model.layers.7.w\""),
            std::string::npos);
  EXPECT_NE(error_of([] {
              detail::parse_json_strict(R"({"a":{"b":1,"b":2}})", "x");
            }).find("duplicate key \"b\""),
            std::string::npos);
}

TEST(Header, DeepNestingRefusedNotRecursed) {
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  EXPECT_NE(
      error_of([&] { detail::parse_json_strict(deep, "deep"); }).find("nested deeper than 64"),
      std::string::npos);
  const std::string h = "{\"__metadata__\":" + std::string(100000, '[') + "}";
  const auto img = test::st_image(h, 0);
  EXPECT_NE(error_of([&] { parse_safetensors(img.data(), img.size(), "deep"); }).find("deep: "),
            std::string::npos);
}

// 7. The cache is an optimisation: every fault degrades to recomputing.
Decomposition tiny() {
  Decomposition d;
  d.sigma = {2.0, 1.0};
  d.left.dim = 2, d.left.count = 2;
  d.left.data = std::vector<float>{1, 0, 0, 1};
  return d;
}

TEST(CacheFaults, DirectoryEntryIsAMissAndIsReplaced) {
  test::TempDir dir;
  DecompositionCache c(dir / "c", 1ull << 30);
  ASSERT_EQ(c.unusable(), "");
  const std::string key = "00000000000000000000000000000abc";
  fs::create_directories(dir / ("c/" + key + ".isvd/inner"));
  std::string warning;
  EXPECT_FALSE(c.load(key, &warning).has_value());
  EXPECT_NE(warning.find("is a directory"), std::string::npos) << warning;
  EXPECT_TRUE(c.store(key, tiny(), "t", &warning));
  auto back = c.load(key, &warning);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->sigma, tiny().sigma);
}

TEST(CacheFaults, CraftedCountsThatOverflowAreAMiss) {
  test::TempDir dir;
  DecompositionCache c(dir / "c", 1ull << 30);
  const std::string key = "0000000000000000000000000000beef";
  // A well-formed file with a valid checksum whose counts multiply past 2^64.
  for (
      const std::string meta :
      {R"({"key":")" + key +
           R"(","label":"x","precision":"fp32","sigma":2305843009213693953,"left":null,"right":null})",
       R"({"key":")" + key +
           R"(","label":"x","precision":"fp32","sigma":0,"left":{"dim":4611686018427387904,"count":4},"right":null})",
       // 64 GiB of vectors claimed by a file of a few hundred bytes: refused before allocating.
       R"({"key":")" + key +
           R"(","label":"x","precision":"fp32","sigma":2,"left":{"dim":1073741824,"count":16},"right":null})"}) {
    std::string out("INDIMSVD", 8);
    const uint32_t version = 1, mlen = static_cast<uint32_t>(meta.size());
    out.append(reinterpret_cast<const char*>(&version), 4);
    out.append(reinterpret_cast<const char*>(&mlen), 4);
    out += meta + std::string(16, '\0');
    const uint64_t sum = XXH3_64bits(out.data(), out.size());
    out.append(reinterpret_cast<const char*>(&sum), 8);
    test::write_text(dir / ("c/" + key + ".isvd"), out);
    std::string warning;
    EXPECT_FALSE(c.load(key, &warning).has_value()) << meta;
    EXPECT_NE(warning.find("recomputing"), std::string::npos) << warning;
  }
}

TEST(CacheFaults, UnusableCacheDirectoryWarnsAndTheRunGoesOn) {
  test::TempDir dir;
  test::write_text(dir / "file", "not a directory");
  DemoOptions d;
  d.hidden = 32, d.intermediate = 64, d.kv_dim = 16, d.layers = 1, d.vocab = 32, d.lora_rank = 2;
  const DemoPaths p = generate_demo(dir / "demo", d);
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full};
  o.backend = "cpu";
  o.out_dir = dir / "out";
  o.cache_dir = dir / "file/cache";  // under a regular file: can never be created
  std::vector<std::string> notes;
  o.note = [&](const std::string& s) { notes.push_back(s); };
  const AnalyzeResult r = analyze(o);
  EXPECT_FALSE(r.records.empty());
  int warned = 0;
  for (const auto& n : notes) warned += n.find("going on without the cache") != std::string::npos;
  EXPECT_EQ(warned, 1);
}

// 9. A rank-1 tuned matrix: its null directions are not intruders, whatever the side or route.
TEST(NullDirections, RankOneTunedMatrixCountsAlikeOnEveryRoute) {
  test::TempDir dir;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g;
  const int m = 32, n = 24;
  std::vector<float> base(m * n), tuned(m * n), u(m), v(n);
  for (auto& x : base) x = g(rng);
  for (auto& x : u) x = g(rng);
  for (auto& x : v) x = g(rng);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) tuned[i * n + j] = u[i] * v[j];
  const std::vector<uint64_t> shape{m, n};
  write_safetensors(dir / "b.safetensors", {{"model.layers.0.w.weight", DType::F32, shape,
                                             encode_floats(base, DType::F32)}});
  write_safetensors(dir / "t.safetensors", {{"model.layers.0.w.weight", DType::F32, shape,
                                             encode_floats(tuned, DType::F32)}});
  for (Side side : {Side::Left, Side::Right})
    for (const char* algo : {"gram64", "gesdd"}) {
      AnalyzeOptions o;
      o.base = dir / "b.safetensors";
      o.tuned = {dir / "t.safetensors"};
      o.backend = "cpu";
      o.algo = algo;
      o.side = side;
      o.out_dir = dir / (std::string("o-") + algo + side_name(side));
      const AnalyzeResult r = analyze(o);
      ASSERT_EQ(r.records.size(), 1u);
      const MatrixResult& rec = r.records[0];
      EXPECT_EQ(rec.null_directions, 9) << algo << " " << side_name(side);
      EXPECT_LE(rec.count_at(0.5), 1) << "only the rank-1 direction is tested";
      for (int j = 1; j < rec.k; ++j) {
        EXPECT_TRUE(std::isnan(rec.maxcos[j]));
        EXPECT_EQ(rec.argmax[j], -1);
      }
      EXPECT_EQ(r.tuned[0].null_directions, 9);
      const std::string report = test::read_text(r.report_json);
      EXPECT_NE(report.find("\"null_directions\": 9"), std::string::npos);
      EXPECT_NE(report.find("null"), std::string::npos);
    }
}

}  // namespace
