// Hostile input, tried as an attacker would against the binary a service runs: every case must
// end in a documented exit code with a message naming file, tensor and problem, never in a
// signal, a hang (each run is bounded by `timeout`) or a half-written output.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "indim/checkpoint.hpp"
#include "indim/safetensors.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

using Outcome = test::CommandResult;  // rc: 124 or 137 when `timeout` fired

Outcome indim(const std::string& args, const std::string& cache) {
  return test::run_command("XDG_CACHE_HOME=" + cache + " timeout -s KILL 60 " +
                           std::string(INDIM_CLI_PATH) + " " + args + " 2>&1");
}

std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

TensorData f32(const std::string& name, int64_t rows, int64_t cols, const std::vector<float>& v) {
  return {name,
          DType::F32,
          {static_cast<uint64_t>(rows), static_cast<uint64_t>(cols)},
          encode_floats(v, DType::F32)};
}

// A base and a fine-tune of two 32x24 layers each, under dir/base and dir/tuned.
struct Pair {
  std::string base, tuned;
};
Pair small_pair(const test::TempDir& d, const std::string& name0 = "model.layers.0.mlp.w.weight") {
  fs::create_directories(d / "base");
  fs::create_directories(d / "tuned");
  std::vector<TensorData> base, tuned;
  for (int l = 0; l < 2; ++l) {
    const std::string n = l == 0 ? name0 : "model.layers." + std::to_string(l) + ".mlp.w.weight";
    auto w = random_values(32 * 24, 10 + l);
    base.push_back(f32(n, 32, 24, w));
    auto t = random_values(32 * 24, 20 + l);
    for (size_t i = 0; i < w.size(); ++i) w[i] += 0.3f * t[i];
    tuned.push_back(f32(n, 32, 24, w));
  }
  write_safetensors(d / "base/model.safetensors", base);
  write_safetensors(d / "tuned/model.safetensors", tuned);
  return {d / "base", d / "tuned"};
}

class Hostile : public ::testing::Test {
 protected:
  Outcome run(const std::string& args) { return indim(args, dir / "cache"); }
  test::TempDir dir;
};

void expect_bad_input(const Outcome& r, std::initializer_list<const char*> words) {
  EXPECT_EQ(r.rc, 2) << r.out;
  for (const char* w : words) EXPECT_NE(r.out.find(w), std::string::npos) << w << "\n" << r.out;
}

// 1. Regexes over huge names: RE2 neither recurses nor backtracks.
TEST_F(Hostile, HugeNamesNeverCrashTheRegexes) {
  const std::string huge = "h.0.attn.c_attn." + std::string(100000, 'x') + ".weight";
  write_safetensors(dir / "long.safetensors", {f32(huge, 4, 4, random_values(16, 1))});
  Outcome r = run("inspect " + dir / "long.safetensors");
  EXPECT_EQ(r.rc, 0) << r.out.substr(0, 400);

  const Pair p = small_pair(dir, "model.layers.0." + std::string(100000, 'y') + ".weight");
  r = run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o" +
          " --include 'y+\\.weight$' --exclude '(a*)*b' -q");
  EXPECT_EQ(r.rc, 0) << r.out.substr(0, 400);

  // An adapter key of 40k characters (split_key) in analyze and inspect.
  fs::create_directories(dir / "ad");
  test::write_text(dir / "ad/adapter_config.json", R"({"peft_type":"LORA","r":2,"lora_alpha":2})");
  const std::string key = "base_model.model." + std::string(40000, 'z') + ".lora_A.weight";
  write_safetensors(dir / "ad/adapter_model.safetensors", {f32(key, 2, 24, random_values(48, 2))});
  r = run("inspect " + p.base + " " + dir / "ad");
  EXPECT_EQ(r.rc, 2) << r.out.substr(0, 400);  // lora_A without lora_B: refused, not crashed
  EXPECT_NE(r.out.find("has lora_A but no lora_B"), std::string::npos);
}

TEST_F(Hostile, PatternsRe2CannotCompileAreUsageErrors) {
  const Pair p = small_pair(dir);
  Outcome r =
      run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o" + " --include '(?=x)'");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("--include \"(?=x)\" is not a valid regex"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("look-around is not supported"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "o"));
}

// 2. A FIFO in place of each file indim reads: refused at once, never waited on.
TEST_F(Hostile, FifosAreRefusedNotWaitedOn) {
  const Pair p = small_pair(dir);
  ASSERT_EQ(::mkfifo((dir / "fifo.safetensors").c_str(), 0644), 0);
  expect_bad_input(run("inspect " + dir / "fifo.safetensors"), {"fifo.safetensors", "is a FIFO"});

  fs::remove(p.base + "/model.safetensors");  // the checkpoint inside a directory
  ASSERT_EQ(::mkfifo((p.base + "/model.safetensors").c_str(), 0644), 0);
  expect_bad_input(run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o"),
                   {"model.safetensors", "is a FIFO"});

  const Pair q = small_pair(dir);  // rewrites base/model.safetensors over the FIFO's name
  ASSERT_EQ(::mkfifo((q.base + "/config.json").c_str(), 0644), 0);
  expect_bad_input(run("inspect " + q.base), {"config.json", "is a FIFO"});
  fs::remove(q.base + "/config.json");

  fs::create_directories(dir / "shards");
  write_safetensors(dir / "shards/a.safetensors", {f32("x", 2, 2, random_values(4, 3))});
  ASSERT_EQ(::mkfifo((dir / "shards/model.safetensors.index.json").c_str(), 0644), 0);
  expect_bad_input(run("inspect " + dir / "shards/model.safetensors.index.json"),
                   {"index.json", "is a FIFO"});

  fs::create_directories(dir / "ad");
  ASSERT_EQ(::mkfifo((dir / "ad/adapter_config.json").c_str(), 0644), 0);
  expect_bad_input(run("inspect " + q.base + " " + dir / "ad"),
                   {"adapter_config.json", "is a FIFO"});
}

// 4. --k far beyond the matrix: clamped per matrix, outputs of fixed width.
TEST_F(Hostile, HugeKIsClampedAndTheCsvKeepsItsColumns) {
  const Pair p = small_pair(dir);
  const Outcome r = run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o" +
                        " --k 2147483647 -q --no-cache");
  ASSERT_EQ(r.rc, 1) << r.out;  // above the documented bound
  const Outcome ok = run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o" +
                         " --k 1073741824 -q --no-cache");
  ASSERT_EQ(ok.rc, 0) << ok.out;
  const auto report = nlohmann::json::parse(test::read_text(dir / "o/report.json"));
  for (const auto& m : report["matrices"]) {
    EXPECT_EQ(m["k"], 24);
    EXPECT_EQ(m["k_clamped"], true);
    EXPECT_EQ(m["maxcos"].size(), 24u);
  }
  EXPECT_LT(fs::file_size(dir / "o/matrices.csv"), 2000u);
  EXPECT_LT(fs::file_size(dir / "o/vectors.csv"), 10000u);  // 2 x 24 rows
}

// 5. Two runs into one --out: the second refuses at once, naming the holder.
TEST_F(Hostile, SecondRunIntoOneOutRefuses) {
  const Pair p = small_pair(dir);
  ASSERT_EQ(run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o -q").rc, 0);
  // Hold the lock as a running analyze would (flock, from a shell that stays 20 s).
  const std::string holder = "flock -x " + dir / "o/.indim.lock" + " sleep 20 & echo $!";
  FILE* h = ::popen(holder.c_str(), "r");
  char pidbuf[32] = {};
  ASSERT_NE(std::fgets(pidbuf, sizeof pidbuf, h), nullptr);
  ::pclose(h);
  const pid_t pid = std::stoi(pidbuf);
  for (int i = 0;
       i < 100 && std::system(("flock -n " + dir / "o/.indim.lock" + " true").c_str()) == 0; ++i)
    ::usleep(50000);  // until the holder has it
  const std::string before = test::read_text(dir / "o/report.json");
  const Outcome r = run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o -q");
  ::kill(pid, SIGKILL);
  EXPECT_EQ(r.rc, 3) << r.out;
  EXPECT_NE(r.out.find("in use by"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("indim analyze"), std::string::npos) << r.out;  // what the file says
  EXPECT_EQ(test::read_text(dir / "o/report.json"), before);
}

// 8. A directory holding a whole checkpoint and a shard index is ambiguous.
TEST_F(Hostile, CheckpointBesideAnIndexIsAmbiguous) {
  const Pair p = small_pair(dir);
  write_safetensors(p.base + "/model-00001-of-00001.safetensors",
                    {f32("model.layers.0.mlp.w.weight", 32, 24, random_values(32 * 24, 5))});
  write_shard_index(p.base + "/model.safetensors.index.json",
                    {{"model.layers.0.mlp.w.weight", "model-00001-of-00001.safetensors"}}, 1);
  expect_bad_input(run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o"),
                   {"ambiguous", "model.safetensors.index.json", "/model.safetensors,"});
}

// 10. Exit codes and messages of the review's cases.
TEST_F(Hostile, MessagesSayWhatIsWrong) {
  const Pair p = small_pair(dir);
  fs::create_directories(dir / "ad");
  test::write_text(dir / "ad/adapter_config.json", R"({"peft_type":"LORA","r":2})");
  expect_bad_input(run("analyze " + dir / "ad " + p.tuned + " --out " + dir / "o"),
                   {"adapter", "give it as TUNED"});

  fs::create_symlink("loop2", dir / "loop1");
  fs::create_symlink("loop1", dir / "loop2");
  expect_bad_input(run("inspect " + dir / "loop1"), {"loop1", "a loop of symbolic links"});

  Outcome r = run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o --k 0");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("--k: must be a whole number from 1"), std::string::npos) << r.out;
  r = run("analyze " + p.base + " " + p.tuned + " --out " + dir / "o --fail-on-intruders -1");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("--fail-on-intruders: must be a whole number from 0"), std::string::npos);

  test::write_bytes(dir / "back.safetensors",
                    test::st_image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8));
  expect_bad_input(run("inspect " + dir / "back.safetensors"),
                   {"tensor 't'", "[8, 4] end before they begin"});

  fs::create_directories(p.base + "/config.json");
  expect_bad_input(run("inspect " + p.base), {"config.json", "is a directory, not a file"});
}

TEST_F(Hostile, ResumeFromADamagedRecordIsAUsageErrorNamingTheLine) {
  const Pair p = small_pair(dir);
  const std::string args = "analyze " + p.base + " " + p.tuned + " --out " + dir / "o -q";
  ASSERT_EQ(run(args).rc, 0);
  std::string journal = test::read_text(dir / "o/journal.jsonl");
  const size_t at = journal.find("\"maxcos\"");  // first record loses its maxcos field
  ASSERT_NE(at, std::string::npos);
  journal.replace(at, 8, "\"nocos\"");
  test::write_text(dir / "o/journal.jsonl", journal);
  const Outcome r = run(args + " --resume");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("journal.jsonl: line 2:"), std::string::npos) << r.out;
}

// fp32 overflow inside the decomposition, and of a --delta update.
TEST_F(Hostile, OverflowIsBadInputNamingTheTensor) {
  fs::create_directories(dir / "b");
  fs::create_directories(dir / "t");
  auto w = random_values(16 * 12, 7);
  auto big = w;
  for (auto& x : big) x = x > 0 ? 3.0e38f : -3.0e38f;  // finite, but sigma ~ 2e39 is not
  write_safetensors(dir / "b/m.safetensors", {f32("model.layers.0.w.weight", 16, 12, w)});
  write_safetensors(dir / "t/m.safetensors", {f32("model.layers.0.w.weight", 16, 12, big)});
  Outcome r = run("analyze " + dir / "b " + dir / "t --out " + dir / "o --algo gesdd --no-cache");
  expect_bad_input(r, {"model.layers.0.w.weight", "overflow", "--precision fp64"});
  // W0 of +-2e38 and W = -W0: each decomposes in fp32 (or names its overflow), but the
  // update W - W0 = -+4e38 cannot be held in fp32.
  for (size_t i = 0; i < w.size(); ++i) w[i] = (w[i] > 0 ? 2.0e38f : -2.0e38f), big[i] = -w[i];
  write_safetensors(dir / "b/m.safetensors", {f32("model.layers.0.w.weight", 16, 12, w)});
  write_safetensors(dir / "t/m.safetensors", {f32("model.layers.0.w.weight", 16, 12, big)});
  r = run("analyze " + dir / "b " + dir / "t --out " + dir / "o2 --delta --no-cache");
  expect_bad_input(r, {"model.layers.0.w.weight", "overflow"});
}

// 11. JSON files over their documented limits (sparse files: the size is checked first).
TEST_F(Hostile, OversizedJsonFilesRefusedBeforeReading) {
  fs::create_directories(dir / "s");
  write_safetensors(dir / "s/a.safetensors", {f32("x", 2, 2, random_values(4, 3))});
  test::write_text(dir / "s/model.safetensors.index.json", "{");
  ASSERT_EQ(::truncate((dir / "s/model.safetensors.index.json").c_str(), 140 << 20), 0);
  expect_bad_input(run("inspect " + dir / "s"), {"index.json", "over the limit of 67108864"});

  const Pair p = small_pair(dir);
  fs::create_directories(dir / "ad");
  test::write_text(dir / "ad/adapter_config.json", "{");
  ASSERT_EQ(::truncate((dir / "ad/adapter_config.json").c_str(), 5 << 20), 0);
  expect_bad_input(run("inspect " + p.base + " " + dir / "ad"),
                   {"adapter_config.json", "over the limit of 4194304"});
}

// 12. A run that fails on bad input leaves the previous outputs exactly as they were.
TEST_F(Hostile, FailedRunLeavesOldOutputsAlone) {
  const Pair p = small_pair(dir);
  const std::string out = dir / "o";
  ASSERT_EQ(run("analyze " + p.base + " " + p.tuned + " --out " + out + " -q").rc, 0);
  std::map<std::string, std::string> before;
  for (const char* f : {"report.json", "matrices.csv", "vectors.csv", "journal.jsonl"})
    before[f] = test::read_text(out + "/" + f);
  // A non-finite value in both matrices: found while decomposing (by whichever of the
  // workers gets there first).
  auto w = random_values(32 * 24, 10);
  w[5] = std::numeric_limits<float>::infinity();
  write_safetensors(dir / "bad.safetensors", {f32("model.layers.0.mlp.w.weight", 32, 24, w),
                                              f32("model.layers.1.mlp.w.weight", 32, 24, w)});
  const Outcome r = run("analyze " + p.base + " " + dir / "bad.safetensors --out " + out + " -q");
  expect_bad_input(r, {"bad.safetensors", ".mlp.w.weight' holds a non-finite value"});
  for (const auto& [f, text] : before) EXPECT_EQ(test::read_text(out + "/" + f), text) << f;
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

}  // namespace
