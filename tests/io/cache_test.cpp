#include "indim/cache.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

Decomposition sample(Precision p, int64_t dim, int64_t count, bool right) {
  std::mt19937 rng(static_cast<unsigned>(dim * 100 + count));
  std::uniform_real_distribution<double> u(-1, 1);
  Decomposition d;
  for (int64_t i = 0; i < count; ++i) d.sigma.push_back(1.0 / (i + 1));
  Vectors v = Vectors::zeros(p, dim, count);
  for (int64_t i = 0; i < dim * count; ++i)
    p == Precision::F32 ? void(v.values<float>()[i] = static_cast<float>(u(rng)))
                        : void(v.values<double>()[i] = u(rng));
  (right ? d.right : d.left) = v;
  return d;
}

void expect_same(const Decomposition& a, const Decomposition& b) {
  EXPECT_EQ(a.sigma, b.sigma);
  for (auto [x, y] : {std::pair{&a.left, &b.left}, std::pair{&a.right, &b.right}}) {
    EXPECT_EQ(x->dim, y->dim);
    EXPECT_EQ(x->count, y->count);
    EXPECT_EQ(x->data, y->data);  // the same precision and the same values
  }
}

}  // namespace

TEST(Cache, RoundTripsBothPrecisionsAndSides) {
  test::TempDir dir;
  DecompositionCache c(dir / "c", 1ull << 30);
  for (Precision p : {Precision::F32, Precision::F64})
    for (bool right : {false, true}) {
      const Decomposition d = sample(p, 37, 11, right);
      const std::string k =
          DecompositionCache::key(reinterpret_cast<const uint8_t*>("abc"), 3,
                                  std::string(precision_name(p)) + (right ? "r" : "l"));
      c.store(k, d, "tensor x");
      std::string warning;
      auto back = c.load(k, &warning);
      ASSERT_TRUE(back.has_value());
      EXPECT_TRUE(warning.empty());
      expect_same(d, *back);
    }
  EXPECT_FALSE(c.load("0123456789abcdef0123456789abcdef", nullptr).has_value());
}

TEST(Cache, KeysDependOnBytesAndContext) {
  const uint8_t a[] = {1, 2, 3}, b[] = {1, 2, 4};
  const std::string ka = DecompositionCache::key(a, 3, "ctx");
  EXPECT_EQ(ka.size(), 32u);
  EXPECT_EQ(ka, DecompositionCache::key(a, 3, "ctx"));
  EXPECT_NE(ka, DecompositionCache::key(b, 3, "ctx"));
  EXPECT_NE(ka, DecompositionCache::key(a, 3, "ctx2"));
}

TEST(Cache, DamagedFilesAreRemovedAndReported) {
  test::TempDir dir;
  DecompositionCache c(dir / "c", 1ull << 30);
  const Decomposition d = sample(Precision::F32, 20, 5, false);
  const std::string k = DecompositionCache::key(reinterpret_cast<const uint8_t*>("x"), 1, "");
  const std::string path = dir / ("c/" + k + ".isvd");
  for (const char* how : {"flip", "truncate", "garbage"}) {
    c.store(k, d, "t");
    std::string bytes = test::read_text(path);
    if (std::string(how) == "flip") bytes[bytes.size() / 2] ^= 0x40;
    if (std::string(how) == "truncate") bytes.resize(bytes.size() - 9);
    if (std::string(how) == "garbage") bytes = "not a cache file at all";
    test::write_text(path, bytes);
    std::string warning;
    EXPECT_FALSE(c.load(k, &warning).has_value()) << how;
    EXPECT_NE(warning.find(path), std::string::npos) << warning;
    EXPECT_NE(warning.find("recomputing"), std::string::npos) << warning;
    EXPECT_FALSE(fs::exists(path)) << how;
  }
}

TEST(Cache, EvictsLeastRecentlyUsedBeyondTheBound) {
  test::TempDir dir;
  const Decomposition d = sample(Precision::F64, 100, 10, false);  // ~8.6 kB a file
  DecompositionCache probe(dir / "c", 1ull << 30);
  probe.store("probe", d, "p");
  const uint64_t one = probe.list().at(0).bytes;
  probe.clear();
  DecompositionCache c(dir / "c", 3 * one + one / 2);  // room for three
  for (const char* k : {"a", "b", "c"}) {
    c.store(k, d, k);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(c.load("a", nullptr).has_value());  // a is now the most recently used
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  c.store("d", d, "d");
  std::vector<std::string> keys;
  for (const auto& e : c.list()) keys.push_back(e.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"d", "a", "c"})) << "b was the least recently used";
}

TEST(Cache, ParseSize) {
  EXPECT_EQ(DecompositionCache::parse_size("1048576"), 1048576u);
  EXPECT_EQ(DecompositionCache::parse_size("2K"), 2048u);
  EXPECT_EQ(DecompositionCache::parse_size("1.5G"), 1610612736u);
  EXPECT_THROW(DecompositionCache::parse_size("12X"), UsageError);
  EXPECT_THROW(DecompositionCache::parse_size("lots"), UsageError);
  EXPECT_THROW(DecompositionCache::parse_size("-1G"), UsageError);
  EXPECT_THROW(DecompositionCache::parse_size("1e30T"), UsageError);  // no undefined conversion
  EXPECT_THROW(DecompositionCache::parse_size("nan"), UsageError);
}

TEST(Cache, SecondFineTuneReusesTheBaseAndGetsTheSameAnswer) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 2, d.vocab = 64, d.lora_rank = 4;
  DemoPaths p = generate_demo(dir.str(), d);
  AnalyzeOptions o;
  o.base = p.base;
  o.backend = "cpu";
  o.tuned = {p.lora};
  o.out_dir = dir / "nocache";
  const AnalyzeResult plain = analyze(o);
  o.cache_dir = dir / "cache";
  o.tuned = {p.full};
  o.out_dir = dir / "first";
  for (const auto& r : analyze(o).records) EXPECT_FALSE(r.base_cached);
  o.tuned = {p.lora};
  o.out_dir = dir / "second";
  const AnalyzeResult cached = analyze(o);
  ASSERT_EQ(cached.records.size(), plain.records.size());
  for (size_t i = 0; i < plain.records.size(); ++i) {
    EXPECT_TRUE(cached.records[i].base_cached) << cached.records[i].name;
    EXPECT_EQ(cached.records[i].maxcos, plain.records[i].maxcos) << "bit-identical base vectors";
    EXPECT_EQ(cached.records[i].counts, plain.records[i].counts);
  }
  o.precision = Precision::F64;  // another precision is another key
  o.out_dir = dir / "fp64";
  for (const auto& r : analyze(o).records) EXPECT_FALSE(r.base_cached);
}
