// The indim binary as a user runs it: exit codes, messages, outputs on disk.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "indim/demo.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

struct CliRun {
  int rc;
  std::string out;  // stdout and stderr together
};

// The CLI caches base decompositions under $XDG_CACHE_HOME: keep each test process's own.
struct CacheHome {
  std::string dir =
      (std::filesystem::temp_directory_path() / ("indim-cli-cache-" + std::to_string(::getpid())))
          .string();
  ~CacheHome() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

const std::string& cache_home() {
  static const CacheHome home;
  return home.dir;
}

CliRun indim_cli(const std::string& args) {
  const test::CommandResult r = test::run_command(
      "XDG_CACHE_HOME=" + cache_home() + " " + std::string(INDIM_CLI_PATH) + " " + args + " 2>&1");
  return {r.rc > 128 ? -1 : r.rc, r.out};
}

DemoPaths tiny_demo(const test::TempDir& dir) {
  DemoOptions o;
  o.hidden = 40;
  o.intermediate = 96;
  o.kv_dim = 20;
  o.layers = 2;
  o.vocab = 48;
  return generate_demo(dir.str(), o);
}

}  // namespace

TEST(Cli, HelpVersionAndUsageErrors) {
  CliRun help = indim_cli("--help");
  EXPECT_EQ(help.rc, 0);
  EXPECT_NE(help.out.find("analyze"), std::string::npos);
  EXPECT_NE(help.out.find("Exit codes"), std::string::npos);
  CliRun ahelp = indim_cli("analyze --help");
  EXPECT_EQ(ahelp.rc, 0);
  EXPECT_NE(ahelp.out.find("--eps"), std::string::npos);
  EXPECT_NE(ahelp.out.find("[0.5]"), std::string::npos) << "defaults print in --help";
  EXPECT_EQ(indim_cli("--version").rc, 0);
  EXPECT_EQ(indim_cli("").rc, 1);
  EXPECT_EQ(indim_cli("analyze onlyone").rc, 1);
  EXPECT_EQ(indim_cli("analyze a b --k 0").rc, 1);
  EXPECT_EQ(indim_cli("analyze a b --precision fp16").rc, 1);
  EXPECT_EQ(indim_cli("analyze a b --streams 0").rc, 1);
  EXPECT_EQ(indim_cli("analyze a b --algo gesvdq").rc, 1);
  const CliRun cpu_gesvd = indim_cli("analyze a b --out x --backend cpu --algo gesvdj");
  EXPECT_EQ(cpu_gesvd.rc, 1);
  EXPECT_NE(cpu_gesvd.out.find("runs on the CUDA backend only"), std::string::npos)
      << cpu_gesvd.out;
  EXPECT_EQ(indim_cli("frobnicate").rc, 1);
}

TEST(Cli, AnalyzeWritesReportsAndPrintsSummary) {
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  CliRun r = indim_cli("analyze " + p.base + " " + p.full + " " + p.lora + " --out " +
                       (dir / "res") + " --eps 0.5,0.35 --backend cpu");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("Intruders summed over all matrices, by eps"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q_proj"), std::string::npos);
  EXPECT_NE(r.out.find("0.35"), std::string::npos);
  for (const char* f : {"report.json", "matrices.csv", "journal.jsonl"})
    EXPECT_TRUE(fs::exists(dir / ("res/" + std::string(f)))) << f;
  auto report = nlohmann::json::parse(test::read_text(dir / "res/report.json"));
  EXPECT_EQ(report["settings"]["primary_eps"], 0.5);
  EXPECT_EQ(report["matrices"].size(), 28u);

  CliRun resumed = indim_cli("analyze " + p.base + " " + p.full + " " + p.lora + " --out " +
                             (dir / "res") + " --eps 0.5,0.35 --backend cpu --resume -q");
  EXPECT_EQ(resumed.rc, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("28 records resumed"), std::string::npos) << resumed.out;
}

TEST(Cli, FailOnIntrudersGate) {
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  const std::string base = "analyze " + p.base + " --out " + (dir / "r") + " -q ";
  EXPECT_EQ(indim_cli(base + p.full + " --fail-on-intruders 0").rc, 0);
  CliRun lora = indim_cli(base + p.lora + " --fail-on-intruders 0");
  EXPECT_EQ(lora.rc, 4) << lora.out;
  EXPECT_NE(lora.out.find("exceed --fail-on-intruders 0"), std::string::npos);
}

TEST(Cli, BadInputExitsTwoNamingFileAndLeavesNoOutputs) {
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  // Truncate the LoRA file: its last tensor now runs past the end.
  const std::string file = p.lora + "/model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 10);
  CliRun r = indim_cli("analyze " + p.base + " " + p.lora + " --out " + (dir / "res"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("bad input: " + file + ": tensor data ends at byte"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "res/report.json"));
  CliRun missing = indim_cli("inspect " + (dir / "nothing-here"));
  EXPECT_EQ(missing.rc, 2);
  EXPECT_NE(missing.out.find("nothing-here: no such file or directory"), std::string::npos);
  CliRun badre =
      indim_cli("analyze " + p.base + " " + p.full + " --include '(' --out " + (dir / "x"));
  EXPECT_EQ(badre.rc, 1) << badre.out;
  CliRun nocuda =
      indim_cli("analyze " + p.base + " " + p.full + " --backend cuda --out " + (dir / "y"));
  EXPECT_NE(nocuda.rc, 0);
  EXPECT_NE(nocuda.out.find("cuda"), std::string::npos) << nocuda.out;
}

TEST(Cli, AdapterFolderAnalysedAndRefusalsExitTwo) {
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  CliRun ok =
      indim_cli("analyze " + p.base + " " + p.lora_adapter + " --out " + (dir / "r") + " -q");
  ASSERT_EQ(ok.rc, 0) << ok.out;
  auto report = nlohmann::json::parse(test::read_text(dir / "r/report.json"));
  EXPECT_EQ(report["inputs"]["tuned"][0]["kind"], "peft-lora");
  EXPECT_EQ(report["matrices"].size(), 4u);  // q and v of 2 layers
  CliRun insp = indim_cli("inspect " + p.base + " " + p.lora_adapter);
  EXPECT_NE(insp.out.find("PEFT LoRA adapter: r=8, lora_alpha=16"), std::string::npos) << insp.out;
  EXPECT_NE(insp.out.find("LoRA r=8 scale=2"), std::string::npos) << insp.out;
  EXPECT_NE(insp.out.find("layout: llama (from config.json)"), std::string::npos) << insp.out;
  // At hidden 40, r = 8 is past the low-rank route's break-even (40 / 20): the record says so.
  const std::string route = report["matrices"][0]["route"].get<std::string>();
  EXPECT_NE(route.find("(full route: r = 8 is past the break-even 2 for 40 x 40)"),
            std::string::npos)
      << route;
  CliRun full = indim_cli("analyze " + p.base + " " + p.lora_adapter + " --out " + (dir / "rf") +
                          " -q --no-lowrank");
  ASSERT_EQ(full.rc, 0) << full.out;
  auto full_report = nlohmann::json::parse(test::read_text(dir / "rf/report.json"));
  EXPECT_NE(
      full_report["matrices"][0]["route"].get<std::string>().find("(full route: --no-lowrank)"),
      std::string::npos);
  EXPECT_EQ(full_report["settings"]["lowrank"], false);
  EXPECT_EQ(indim_cli("analyze " + p.base + " " + p.lora_adapter + " --out " + (dir / "rt") +
                      " --lowrank-tol 2")
                .rc,
            1);

  test::write_text(p.lora_adapter + "/adapter_config.json",
                   R"({"peft_type":"LORA","r":8,"lora_alpha":16,"init_lora_weights":"pissa"})");
  CliRun bad = indim_cli("analyze " + p.base + " " + p.lora_adapter + " --out " + (dir / "r2"));
  EXPECT_EQ(bad.rc, 2) << bad.out;
  EXPECT_NE(bad.out.find("adapter_config.json: init_lora_weights is \"pissa\""), std::string::npos)
      << bad.out;
  EXPECT_FALSE(fs::exists(dir / "r2/report.json"));
}

TEST(Cli, CacheServesTheSecondFineTuneAndListsAndClears) {
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  const std::string cache = " --cache " + (dir / "cache");
  ASSERT_EQ(indim_cli("analyze " + p.base + " " + p.full + " --out " + (dir / "a") + cache).rc, 0);
  ASSERT_EQ(indim_cli("analyze " + p.base + " " + p.lora + " --out " + (dir / "b") + cache).rc, 0);
  auto report = nlohmann::json::parse(test::read_text(dir / "b/report.json"));
  for (const auto& m : report["matrices"]) EXPECT_TRUE(m["base_cached"].get<bool>()) << m["name"];
  CliRun ls = indim_cli("cache ls" + cache);
  EXPECT_EQ(ls.rc, 0);
  EXPECT_NE(ls.out.find("14 entries"), std::string::npos) << ls.out;  // 2 layers x 7 matrices
  EXPECT_NE(ls.out.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << ls.out;
  CliRun clear = indim_cli("cache clear" + cache);
  EXPECT_NE(clear.out.find("removed 14 entries"), std::string::npos) << clear.out;
  ASSERT_EQ(indim_cli("analyze " + p.base + " " + p.lora + " --out " + (dir / "c") + cache +
                      " --no-cache")
                .rc,
            0);
  EXPECT_NE(indim_cli("cache ls" + cache).out.find("0 entries"), std::string::npos);
  EXPECT_EQ(indim_cli("analyze a b --cache-max 12X").rc, 1);
}

TEST(Cli, ProgressBarOnlyOnATerminal) {
  if (std::system("command -v script > /dev/null 2>&1") != 0) GTEST_SKIP() << "no script(1)";
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  const std::string args = "analyze " + p.base + " " + p.full + " --out " + (dir / "r") + " -q";
  // script(1) gives the command a pseudo-terminal, as a user's shell would.
  CliRun tty{-1, ""};
  FILE* f = ::popen(("XDG_CACHE_HOME=" + cache_home() + " script -qec '" +
                     std::string(INDIM_CLI_PATH) + " " + args + "' /dev/null 2>&1")
                        .c_str(),
                    "r");
  ASSERT_NE(f, nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) tty.out.append(buf, n);
  ::pclose(f);
  EXPECT_NE(tty.out.find("] 14/14"), std::string::npos) << "the bar reaches the end";
  EXPECT_NE(tty.out.find("\r\033[K["), std::string::npos);
  CliRun piped = indim_cli(args);
  EXPECT_EQ(piped.rc, 0);
  EXPECT_EQ(piped.out.find("\033[K"), std::string::npos) << "no bar into a pipe";
}

TEST(Cli, InspectListsTensorsAndMatchTable) {
  test::TempDir dir;
  DemoPaths p = tiny_demo(dir);
  CliRun one = indim_cli("inspect " + p.base);
  ASSERT_EQ(one.rc, 0) << one.out;
  EXPECT_NE(one.out.find("sharded, 2 file(s)"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("model.layers.1.mlp.down_proj.weight"), std::string::npos);
  EXPECT_NE(one.out.find("BF16"), std::string::npos);
  CliRun two = indim_cli("inspect " + p.base + " " + p.lora);
  ASSERT_EQ(two.rc, 0) << two.out;
  EXPECT_NE(two.out.find("14 selected for analysis, 0 shape mismatches"), std::string::npos)
      << two.out;
  EXPECT_NE(two.out.find("embedding, head or norm"), std::string::npos);
}

TEST(Cli, DemoRunsAndShowsTheDifference) {
  test::TempDir dir;
  CliRun r = indim_cli("demo --out " + (dir / "demo"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("[0] full fine-tune: 0 intruder dimensions"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[1] LoRA fine-tune:"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "demo/results/report.json"));
  EXPECT_TRUE(fs::exists(dir / "demo/base/model.safetensors.index.json"));
}
