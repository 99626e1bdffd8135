// Hugging Face ids resolved in a hub cache laid out as huggingface_hub lays it out: refs naming
// commits, snapshots whose files are relative symbolic links into blobs (or plain copies), tags,
// full commits, subfolders, and a repo holding an adapter; and the errors.
#include "indim/hub.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "hub_cache.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

const std::string kMain = "1111111111111111111111111111111111111111";
const std::string kV2 = "2222222222222222222222222222222222222222";
const std::string kLora = "3333333333333333333333333333333333333333";

// A hub cache with acme/base (main, tag v2), acme/full, acme/lora-r16 (an adapter, plain copies)
// and acme/multi (an adapter in a subfolder), from one generated model.
struct HubCache {
  test::TempDir dir;
  std::string cache;
  DemoPaths demo;
  HubCache() {
    cache = dir / "hub";
    DemoOptions o;
    o.hidden = 64, o.intermediate = 128, o.kv_dim = 32, o.layers = 2;
    demo = generate_demo(dir / "demo", o);
    const std::string base = test::add_hub_snapshot(cache, "acme/base", kMain, demo.base, true);
    test::set_hub_ref(base, "main", kMain);
    test::add_hub_snapshot(cache, "acme/base", kV2, demo.base, true);
    test::set_hub_ref(base, "v2", kV2);
    test::set_hub_ref(test::add_hub_snapshot(cache, "acme/full", kMain, demo.full, true), "main",
                      kMain);
    test::set_hub_ref(
        test::add_hub_snapshot(cache, "acme/lora-r16", kLora, demo.lora_adapter, false), "main",
        kLora);
    test::set_hub_ref(
        test::add_hub_snapshot(cache, "acme/multi", kLora, demo.lora_adapter, true, "adapters/r8"),
        "main", kLora);
  }
};

HubCache& hub() {
  static HubCache h;
  return h;
}

// The problem an id's resolution reports (Other when it resolves).
InputProblem problem_of(const std::string& id) {
  try {
    resolve_hub_id(id, {hub().cache});
  } catch (const BadInput& e) {
    return e.problem();
  }
  return InputProblem::Other;
}

std::string message_of(const std::string& id) {
  try {
    resolve_hub_id(id, {hub().cache});
  } catch (const BadInput& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Hub, ResolvesMainATagAFullCommitAndASubfolder) {
  const HubModel m = resolve_hub_id("acme/base", {hub().cache});
  EXPECT_EQ(m.repo, "acme/base");
  EXPECT_EQ(m.revision, "main");
  EXPECT_EQ(m.commit, kMain);
  EXPECT_EQ(m.path, hub().cache + "/models--acme--base/snapshots/" + kMain);
  EXPECT_NE(std::find(m.files.begin(), m.files.end(), "model.safetensors.index.json"),
            m.files.end());
  EXPECT_EQ(resolve_hub_id("acme/base@v2", {hub().cache}).commit, kV2);
  EXPECT_EQ(resolve_hub_id("acme/base@" + kV2, {hub().cache}).commit, kV2);
  const HubModel sub = resolve_hub_id("acme/multi/adapters/r8", {hub().cache});
  EXPECT_EQ(sub.subfolder, "adapters/r8");
  EXPECT_NE(std::find(sub.files.begin(), sub.files.end(), "adapter_config.json"), sub.files.end());
}

TEST(Hub, SaysWhatIsMissingAndHowToGetIt) {
  EXPECT_EQ(problem_of("acme/absent"), InputProblem::NotFound);
  const std::string absent = message_of("acme/absent@v9");
  EXPECT_NE(absent.find(hub().cache + "/models--acme--absent"), std::string::npos) << absent;
  EXPECT_NE(absent.find("revision v9"), std::string::npos) << absent;
  EXPECT_NE(absent.find("huggingface-cli download acme/absent --revision v9"), std::string::npos);
  EXPECT_NE(absent.find("never downloads"), std::string::npos);
  EXPECT_EQ(problem_of("acme/base@v3"), InputProblem::NotFound);
  EXPECT_NE(message_of("acme/base@v3").find("refs/v3"), std::string::npos);
  EXPECT_EQ(problem_of("acme/base@" + std::string(40, 'e')), InputProblem::NotFound);
  EXPECT_EQ(problem_of("acme/base/nope"), InputProblem::NotFound);
  EXPECT_EQ(problem_of("acme/../base"), InputProblem::Malformed);
  EXPECT_EQ(problem_of("acme/base@../../x"), InputProblem::Malformed);
  EXPECT_EQ(problem_of("acme"), InputProblem::Malformed);
  EXPECT_FALSE(looks_like_hub_id("./acme/base"));
  EXPECT_FALSE(looks_like_hub_id("/abs/path"));
  EXPECT_FALSE(looks_like_hub_id("model.safetensors"));
  EXPECT_TRUE(looks_like_hub_id("acme/base@refs/pr/1"));
}

TEST(Hub, FindsTheCacheAsHuggingfaceHubDoes) {
  const char* names[] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
                         "HOME"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* n : names)
    if (const char* v = std::getenv(n)) saved.emplace_back(n, v);
  for (const char* n : names) ::unsetenv(n);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(hub_cache_dir(), "/home/u/.cache/huggingface/hub");
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  EXPECT_EQ(hub_cache_dir(), "/xdg/huggingface/hub");
  ::setenv("HF_HOME", "/hf", 1);
  EXPECT_EQ(hub_cache_dir(), "/hf/hub");
  ::setenv("HUGGINGFACE_HUB_CACHE", "/old", 1);
  EXPECT_EQ(hub_cache_dir(), "/old");
  ::setenv("HF_HUB_CACHE", "/new", 1);
  EXPECT_EQ(hub_cache_dir(), "/new");
  for (const char* n : names) ::unsetenv(n);
  for (const auto& [n, v] : saved) ::setenv(n.c_str(), v.c_str(), 1);
}

TEST(Hub, AnalyzeAndInspectTakeIdsAndTheReportSaysWhichWeights) {
  const HubCache& h = hub();
  const std::string cli = "HF_HUB_CACHE=" + h.cache + " " + INDIM_CLI_PATH;
  const std::string by_id = h.dir / "by-id", by_path = h.dir / "by-path";
  const auto a = test::run_command(cli + " analyze acme/base acme/full acme/lora-r16 --out " +
                                   by_id + " --backend cpu --no-cache -q 2>&1");
  ASSERT_EQ(a.rc, 0) << a.out;
  const auto b = test::run_command(cli + " analyze " + h.demo.base + " " + h.demo.full + " " +
                                   h.demo.lora_adapter + " --out " + by_path +
                                   " --backend cpu --no-cache -q 2>&1");
  ASSERT_EQ(b.rc, 0) << b.out;
  const auto ids = nlohmann::json::parse(test::read_text(by_id + "/report.json"));
  const auto paths = nlohmann::json::parse(test::read_text(by_path + "/report.json"));
  auto timeless = [](nlohmann::json m) {
    for (auto& r : m) r.erase("seconds");
    return m;
  };
  EXPECT_TRUE(timeless(ids["matrices"]) == timeless(paths["matrices"]))
      << "the same records by id as by path";
  EXPECT_EQ(ids["tuned"][0]["intruders"], paths["tuned"][0]["intruders"]);
  const auto& base = ids["inputs"]["base"];
  EXPECT_EQ(base["path"], "acme/base");
  EXPECT_EQ(base["hub"]["repo"], "acme/base");
  EXPECT_EQ(base["hub"]["revision"], "main");
  EXPECT_EQ(base["hub"]["commit"], kMain);
  EXPECT_NE(base["files"][0]["path"].get<std::string>().find("/snapshots/" + kMain + "/"),
            std::string::npos);
  EXPECT_EQ(ids["inputs"]["tuned"][1]["hub"]["commit"], kLora);
  EXPECT_EQ(ids["inputs"]["tuned"][1]["kind"], "peft-lora");
  EXPECT_FALSE(paths["inputs"]["base"].contains("hub"));
  EXPECT_NE(test::read_text(by_id + "/matrices.csv").find(",acme/full,"), std::string::npos);

  const auto i = test::run_command(cli + " inspect acme/base@v2 acme/multi/adapters/r8");
  EXPECT_EQ(i.rc, 0) << i.out;
  EXPECT_NE(i.out.find("acme/base@v2: hub repo acme/base, revision v2, commit " + kV2),
            std::string::npos)
      << i.out;
  EXPECT_NE(i.out.find("subfolder adapters/r8"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("PEFT LoRA adapter"), std::string::npos) << i.out;

  const auto missing = test::run_command(cli + " analyze acme/base acme/other --out " + by_id +
                                         "-x --backend cpu 2>&1");
  EXPECT_EQ(missing.rc, 2) << missing.out;
  EXPECT_NE(missing.out.find("acme/other: neither a local path nor in the Hugging Face hub cache"),
            std::string::npos)
      << missing.out;
}

TEST(Hub, ALocalPathOfTheSameNameWins) {
  const HubCache& h = hub();
  const std::string work = h.dir / "work";
  fs::create_directories(work + "/acme");
  fs::create_directory_symlink(h.demo.full, work + "/acme/base");
  const InputPath p = [&] {
    const fs::path cwd = fs::current_path();
    fs::current_path(work);
    InputPath r = resolve_input("acme/base", {h.cache});
    fs::current_path(cwd);
    return r;
  }();
  EXPECT_FALSE(p.hub.has_value());
  EXPECT_EQ(p.path, "acme/base");
  EXPECT_TRUE(resolve_input("acme/base", {h.cache}).hub.has_value());
}
