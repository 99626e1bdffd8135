// `indim serve` confines by descriptor: hub ids, siblings read beside a checkpoint, files
// swapped after the check, links in and out of a root, names the file system could never hold,
// and the work one request may cause. Each test starts the real service.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <thread>

#include "hub_cache.hpp"
#include "raw_socket.hpp"
#include "service_jobs.hpp"

using namespace indim;
using test::body_of;
using test::ServiceProcess;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kSecret = "TOPSECRET-bytes-of-an-outside-file";

httplib::Result post(httplib::Client& c, const Json& body) {
  return c.Post("/v1/jobs", body.dump(), "application/json");
}

Json job(const std::string& base, const std::vector<std::string>& tuned) {
  return {{"base", base}, {"tuned", tuned}};
}

std::string error_of(const httplib::Result& r) { return body_of(r).value("error", ""); }

class ServiceConfinement : public ::testing::Test {
 protected:
  void SetUp() override {
    test::demo_models();
    fs::create_directories(root());
    fs::create_directories(outside());
    fs::copy(test::demo_models().small, root() + "/m", fs::copy_options::recursive);
    test::write_text(outside() + "/secret.txt", std::string(kSecret) + "\n");
  }
  std::string root() const { return dir_ / "root"; }
  std::string outside() const { return dir_ / "outside"; }
  std::string state() const { return dir_ / "state"; }
  test::TempDir dir_;
};

}  // namespace

// A root holding models--outside--model made "outside/model" a hub id whose job read the
// folder outside/model relative to the service's working directory.
TEST_F(ServiceConfinement, AHubIdNeverMeansAPathOutsideTheRoots) {
  const std::string commit = "5555555555555555555555555555555555555555";
  test::set_hub_ref(test::add_hub_snapshot(root(), "outside/model", commit,
                                           test::demo_models().small + "/full", true),
                    "main", commit);
  fs::create_directories(outside() + "/model");
  test::write_text(outside() + "/model/model.safetensors", kSecret);
  ServiceProcess s(root(), state(), {}, dir_.str());  // its working directory holds outside/
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto r = post(*c, job("m/base", {"outside/model"}));
  ASSERT_EQ(r->status, 202) << r->body;
  const Json j = test::wait_ended(*c, body_of(r)["id"]);
  ASSERT_EQ(j["state"], "done") << j.dump();
  const Json report =
      Json::parse(c->Get("/v1/jobs/" + j["id"].get<std::string>() + "/report.json")->body);
  const Json tuned = report["inputs"]["tuned"][0];
  EXPECT_EQ(tuned["hub"]["commit"], commit);
  for (const Json& f : tuned["files"])
    EXPECT_EQ(f["path"].get<std::string>().rfind(fs::canonical(root()).string(), 0), 0u) << f;
}

// config.json beside a base named by its shard index (or file) was read wherever it pointed,
// and its parse error quoted its first bytes.
TEST_F(ServiceConfinement, FilesReadBesideACheckpointAreConfinedToo) {
  fs::remove(root() + "/m/base/config.json");
  fs::create_symlink(outside() + "/secret.txt", root() + "/m/base/config.json");
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto r = post(*c, job("m/base/model.safetensors.index.json", {"m/full"}));
  EXPECT_EQ(r->status, 403) << r->body;
  EXPECT_NE(error_of(r).find("m/base/model.safetensors.index.json: config.json leads outside"),
            std::string::npos)
      << r->body;
  EXPECT_EQ(r->body.find(kSecret), std::string::npos);
  EXPECT_EQ(r->body.find(outside()), std::string::npos) << "where the link points is not said";
}

// Swapped for a link out of the root after the check: the job reads beneath the root's
// descriptor, so it fails as forbidden without opening the outside file.
TEST_F(ServiceConfinement, AFileSwappedForALinkOutAfterTheCheckIsNeverRead) {
  fs::create_directories(outside() + "/tuned");
  fs::copy(test::demo_models().small + "/full/model.safetensors",
           outside() + "/tuned/model.safetensors");
  fs::copy(test::demo_models().big, root() + "/big", fs::copy_options::recursive);
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto slow =
      post(*c, {{"base", "big/base"},
                {"tuned", {"big/full"}},
                {"options", {{"side", "both"}, {"algo", "gesdd"}, {"precision", "fp64"}}}});
  ASSERT_EQ(slow->status, 202) << slow->body;
  const auto r = post(*c, job("m/base", {"m/lora"}));
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = body_of(r)["id"];
  // While it waits: the checked file becomes a link to a valid checkpoint outside.
  for (const auto& e : fs::directory_iterator(root() + "/m/lora")) fs::remove(e.path());
  fs::remove(root() + "/m/lora");
  fs::create_directory_symlink(outside() + "/tuned", root() + "/m/lora");
  const Json j = test::wait_ended(*c, id);
  EXPECT_EQ(j["state"], "failed") << j.dump();
  EXPECT_EQ(j["error"]["problem"], "forbidden") << j.dump();
  EXPECT_EQ(j["error"].value("message", "").find(outside()), std::string::npos) << j.dump();
  EXPECT_EQ(body_of(c->Get("/v1/jobs/" + body_of(slow)["id"].get<std::string>()))["state"], "done")
      << "the swap came while the job waited behind this one";
}

TEST_F(ServiceConfinement, LinksThatStayInsideARootKeepWorking) {
  fs::create_directory_symlink("m/full", root() + "/relative-link");
  fs::create_directory_symlink(fs::canonical(root()).string() + "/m/lora-adapter",
                               root() + "/absolute-link");
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto r = post(*c, job("m/base", {"relative-link", "absolute-link"}));
  ASSERT_EQ(r->status, 202) << r->body;
  EXPECT_EQ(test::wait_ended(*c, body_of(r)["id"])["state"], "done");
}

// A 403 said where a link pointed and told an existing outside path from a missing one.
TEST_F(ServiceConfinement, ARefusalIsNoOracleOverTheHost) {
  fs::create_symlink(outside() + "/secret.txt", root() + "/to-existing");
  fs::create_symlink(outside() + "/no-such-file", root() + "/to-missing");
  fs::create_symlink("/proc/self/fd/3", root() + "/to-own-fd");
  fs::create_symlink("../outside/secret.txt", root() + "/relative-out");
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  std::set<std::string> reasons;
  for (const std::string& p :
       {outside() + "/secret.txt", outside() + "/no-such-file", std::string("to-existing"),
        std::string("to-missing"), std::string("to-own-fd"), std::string("relative-out"),
        std::string("../outside/secret.txt"), std::string("../outside/no-such-file")}) {
    const auto r = post(*c, job(p, {"m/full"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << p << ": " << r->body;
    std::string why = error_of(r);
    ASSERT_EQ(why.rfind(p + ": ", 0), 0u) << why;
    reasons.insert(why.substr(p.size()));
    EXPECT_EQ(why.find("/proc"), std::string::npos) << why;
  }
  EXPECT_EQ(reasons.size(), 1u) << "one reason for every outside path, existing or not";
}

TEST_F(ServiceConfinement, NamesNoFileSystemHoldsAre400) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto nul = post(*c, job(std::string("m/base\0/../../outside", 22), {"m/full"}));
  EXPECT_EQ(nul->status, 400) << nul->body;
  EXPECT_NE(error_of(nul).find("NUL"), std::string::npos) << nul->body;
  const auto long_name = post(*c, job("m/" + std::string(300, 'x'), {"m/full"}));
  EXPECT_EQ(long_name->status, 400) << long_name->body;
  const auto long_path = post(*c, job(std::string(5000, 'a'), {"m/full"}));
  EXPECT_EQ(long_path->status, 400) << long_path->body;
  EXPECT_EQ(body_of(c->Get("/v1/jobs"))["jobs"].size(), 0u);
}

TEST_F(ServiceConfinement, AFileNameThatIsNotUtf8IsRefusedAtSubmissionAndByAnalyze) {
  const std::string bad = "weights-\xff\xfe.safetensors";
  fs::create_directories(root() + "/odd");
  fs::copy(test::demo_models().small + "/full/model.safetensors", root() + "/odd/" + bad);
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto r = post(*c, job("m/base", {"odd"}));
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(error_of(r).find("weights-\\xff\\xfe.safetensors: the file name is not UTF-8"),
            std::string::npos)
      << r->body;
  const auto analyze =
      test::run_command(std::string(INDIM_CLI_PATH) + " analyze " + root() + "/m/base " + root() +
                        "/odd --backend cpu --no-cache " + "-q --out " + (dir_ / "out") + " 2>&1");
  EXPECT_EQ(analyze.rc, 2) << analyze.out;
  EXPECT_NE(analyze.out.find("\\xff\\xfe.safetensors"), std::string::npos) << analyze.out;
}

TEST_F(ServiceConfinement, ARequestsCheckingWorkIsBoundedAndPathsDeduplicated) {
  // An index naming 100001 shards: more files than one request may make the service look at.
  fs::create_directories(root() + "/wide");
  Json map = Json::object();
  for (int i = 0; i <= 100000; ++i) map["t" + std::to_string(i)] = "s" + std::to_string(i);
  test::write_text(root() + "/wide/model.safetensors.index.json",
                   Json({{"weight_map", map}}).dump());
  fs::create_directories(root() + "/wide-but-allowed");  // 30000 shards: checked, slowly
  Json some = Json::object();
  for (int i = 0; i < 30000; ++i) some["t" + std::to_string(i)] = "s" + std::to_string(i);
  test::write_text(root() + "/wide-but-allowed/model.safetensors.index.json",
                   Json({{"weight_map", some}}).dump());
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  {  // a client that gives up while its paths are checked: nothing is queued for it
    test::RawSocket quitter(test::port_of(s.url()));
    const std::string body = job("m/base", {"wide-but-allowed"}).dump();
    ASSERT_TRUE(quitter.send_all(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(test::kToken) +
        "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  }
  for (int i = 0; i < 300 && s.log().find("POST /v1/jobs 4") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NE(s.log().find("POST /v1/jobs 4"), std::string::npos) << s.log();  // refused, not 202
  std::vector<std::string> same(1024, "m/full");  // one folder named 1024 times in 10 KiB
  const auto t0 = std::chrono::steady_clock::now();
  const auto dup = post(*c, job("m/base", same));
  EXPECT_EQ(dup->status, 400) << dup->body;
  EXPECT_NE(error_of(dup).find("tuned[1] (m/full) names the same checkpoint as tuned[0]"),
            std::string::npos)
      << dup->body;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  const auto aliases = post(*c, job("m/base", {"m/full", "./m/full/", "m//full"}));
  EXPECT_EQ(aliases->status, 400) << aliases->body;
  const auto wide = post(*c, job("m/base", {"wide"}));
  EXPECT_EQ(wide->status, 413) << wide->body;
  EXPECT_NE(error_of(wide).find("more than 100000 folder entries or shards"), std::string::npos)
      << wide->body;
  EXPECT_EQ(body_of(c->Get("/v1/jobs"))["jobs"].size(), 0u) << "nothing was queued";
}

// A mitigate job copies the files a loader reads beside the adapter (tokenizer, card) into each
// variant folder. A link out of the root is refused at submission; one put there after the
// check is read through the root's descriptor, so its target reaches neither the job's folder
// nor its archive.
TEST_F(ServiceConfinement, MitigateCopiesOnlyCompanionFilesInsideTheRoot) {
  const std::string adapter = root() + "/m/lora-adapter";
  test::write_text(adapter + "/README.md", "an adapter's card\n");
  fs::copy(test::demo_models().big, root() + "/big", fs::copy_options::recursive);
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  Json body = job("m/base", {"m/lora-adapter"});
  body["kind"] = "mitigate";
  body["options"] = {{"lambda", Json::array({0})}, {"controls", Json::array({"shrink"})}};
  fs::create_symlink(outside() + "/secret.txt", adapter + "/tokenizer.json");
  const auto refused = post(*c, body);
  EXPECT_EQ(refused->status, 403) << refused->body;
  EXPECT_EQ(refused->body.find(kSecret), std::string::npos);
  fs::remove(adapter + "/tokenizer.json");

  const auto slow =
      post(*c, {{"base", "big/base"},
                {"tuned", {"big/full"}},
                {"options", {{"side", "both"}, {"algo", "gesdd"}, {"precision", "fp64"}}}});
  ASSERT_EQ(slow->status, 202) << slow->body;
  const auto r = post(*c, body);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = body_of(r)["id"];
  fs::create_symlink(outside() + "/secret.txt", adapter + "/tokenizer.json");  // while it waits
  const Json j = test::wait_ended(*c, id);
  EXPECT_EQ(body_of(c->Get("/v1/jobs/" + body_of(slow)["id"].get<std::string>()))["state"], "done")
      << "the link came while the job waited behind this one";
  for (const auto& e : fs::recursive_directory_iterator(state() + "/jobs/" + id))
    if (e.is_regular_file())
      EXPECT_EQ(test::read_text(e.path()).find(kSecret), std::string::npos) << e.path();
  if (j["state"] == "failed") {  // the start's re-check refused the folder
    EXPECT_EQ(j["error"]["problem"], "forbidden") << j.dump();
    return;
  }
  ASSERT_EQ(j["state"], "done") << j.dump();
  for (const std::string variant : {"intruders-0", "shrink-0"}) {
    const std::string folder = state() + "/jobs/" + id + "/" + variant;
    EXPECT_EQ(test::read_text(folder + "/README.md"), "an adapter's card\n") << variant;
    EXPECT_FALSE(fs::exists(fs::symlink_status(folder + "/tokenizer.json"))) << variant;
  }
  const auto tar = c->Get("/v1/jobs/" + id + "/mitigation.tar");
  ASSERT_EQ(tar->status, 200) << tar->body;
  EXPECT_NE(tar->body.find("intruders-0/README.md"), std::string::npos);
  EXPECT_EQ(tar->body.find("tokenizer.json"), std::string::npos);
  EXPECT_EQ(tar->body.find(kSecret), std::string::npos);
}
