// `indim serve` shared by several people: tenants with their own tokens who see only their own
// jobs, admins who see all, private state files, and token files only their owner may read.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "service_jobs.hpp"

using namespace indim;
using test::body_of;
using test::ServiceProcess;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kAlice = "alice-token-0123456789abcdef";
constexpr const char* kBob = "bob-token-0123456789abcdef";
constexpr const char* kOps = "ops-token-0123456789abcdef";

const Json kJob = {{"base", "small/base"}, {"tuned", {"small/full"}}};

void write_secret(const std::string& path, const std::string& text, fs::perms perms) {
  test::write_text(path, text);
  fs::permissions(path, perms);
}

std::string submit_done(httplib::Client& c) {
  const std::string id = test::submit_job(c, kJob);
  if (!id.empty()) test::wait_state(c, id, "done");
  return id;
}

std::vector<std::string> listed(httplib::Client& c) {
  std::vector<std::string> ids;
  const Json page = body_of(c.Get("/v1/jobs"));
  for (const Json& j : page["jobs"]) ids.push_back(j.at("id"));
  return ids;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_mode & 0777;
}

class ServiceTenants : public ::testing::Test {
 protected:
  void SetUp() override {
    test::demo_models();
    write_secret(
        tokens(),
        std::string("# name token\nalice ") + kAlice + "\nbob " + kBob + "\n\nops " + kOps + "\n",
        fs::perms::owner_read | fs::perms::owner_write);
  }
  std::string state() const { return dir_ / "state"; }
  std::string tokens() const { return dir_ / "tokens"; }
  test::TempDir dir_;
};

}  // namespace

TEST_F(ServiceTenants, EachTenantSeesFetchesAndCancelsOnlyItsOwnJobsAndAdminsSeeAll) {
  ServiceProcess s(test::demo_models().dir.str(), state(),
                   {"--tokens", tokens(), "--admins", "ops"});
  ASSERT_TRUE(s.ready()) << s.log();
  auto alice = s.client(kAlice), bob = s.client(kBob), ops = s.client(kOps);
  const std::string a = submit_done(*alice), b = submit_done(*bob);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(listed(*alice), std::vector<std::string>{a});
  EXPECT_EQ(listed(*bob), std::vector<std::string>{b});
  EXPECT_EQ(listed(*ops), (std::vector<std::string>{b, a}));
  EXPECT_EQ(body_of(alice->Get("/v1/jobs/" + a))["tenant"], "alice");
  for (const std::string path :
       {"/v1/jobs/" + b, "/v1/jobs/" + b + "/report.json", "/v1/jobs/" + b + "/events"}) {
    const auto r = alice->Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(r->body.find("bob"), std::string::npos) << "nothing of another tenant's job";
  }
  EXPECT_EQ(alice->Delete("/v1/jobs/" + b + "?purge=true")->status, 404);
  EXPECT_TRUE(fs::exists(state() + "/jobs/" + b + "/report.json")) << "bob's outputs are kept";
  EXPECT_EQ(ops->Get("/v1/jobs/" + a + "/report.json")->status, 200);
  EXPECT_EQ(ops->Delete("/v1/jobs/" + b + "?purge=true")->status, 200);
  EXPECT_FALSE(fs::exists(state() + "/jobs/" + b + "/report.json"));
  EXPECT_EQ(s.client("not-a-token-of-anyone-at-all")->Get("/v1/jobs")->status, 401);
  const std::string metrics = alice->Get("/metrics")->body;
  for (const char* token : {kAlice, kBob, kOps})
    EXPECT_EQ(metrics.find(token), std::string::npos) << "no token in the metrics";
  EXPECT_EQ(s.log().find(kAlice), std::string::npos) << "no token in the log";
}

TEST_F(ServiceTenants, AnIdempotencyKeyBelongsToItsTenant) {
  ServiceProcess s(test::demo_models().dir.str(), state(), {"--tokens", tokens()});
  ASSERT_TRUE(s.ready()) << s.log();
  const httplib::Headers key = {{"Idempotency-Key", "retry-7f3a"}};
  const auto a = s.client(kAlice)->Post("/v1/jobs", key, kJob.dump(), "application/json");
  const auto b = s.client(kBob)->Post("/v1/jobs", key, kJob.dump(), "application/json");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->status, 202);
  EXPECT_EQ(b->status, 202);
  EXPECT_NE(body_of(a)["id"], body_of(b)["id"]);
}

TEST_F(ServiceTenants, TheStateIsPrivateToTheServiceUser) {
  const mode_t old = ::umask(022);
  ServiceProcess s(test::demo_models().dir.str(), state());
  ::umask(old);
  ASSERT_TRUE(s.ready()) << s.log();
  const std::string id = submit_done(*s.client());
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(mode_of(state()), 0700u);
  EXPECT_EQ(mode_of(state() + "/jobs"), 0700u);
  EXPECT_EQ(mode_of(state() + "/jobs/" + id), 0700u);
  for (const std::string& file :
       std::vector<std::string>{"jobs.db", "jobs.db-wal", "serve.json",
                                "jobs/" + id + "/report.json", "jobs/" + id + "/journal.jsonl"})
    EXPECT_EQ(mode_of(state() + "/" + file), 0600u) << file;
  for (const auto& e : fs::recursive_directory_iterator(state() + "/cache"))
    EXPECT_EQ(mode_of(e.path().string()) & 077, 0u) << e.path();
}

TEST_F(ServiceTenants, TokenFilesOthersCanReadAreRefused) {
  const std::string open_token = dir_ / "open-token";
  write_secret(open_token, std::string(test::kToken) + "\n",
               fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                   fs::perms::others_read);
  const std::string cli = INDIM_CLI_PATH;
  const auto serve =
      test::run_command(cli + " serve --root " + test::demo_models().dir.str() + " --state " +
                        state() + " --token-file " + open_token + " 2>&1");
  EXPECT_EQ(serve.rc, 1) << serve.out;
  EXPECT_NE(serve.out.find(open_token + ": permissions 0644"), std::string::npos) << serve.out;
  EXPECT_NE(serve.out.find("chmod 600"), std::string::npos) << serve.out;
  fs::permissions(tokens(), fs::perms::group_read, fs::perm_options::add);
  const auto shared = test::run_command(cli + " serve --root " + test::demo_models().dir.str() +
                                        " --state " + state() + " --tokens " + tokens() + " 2>&1");
  EXPECT_EQ(shared.rc, 1) << shared.out;
  EXPECT_NE(shared.out.find(tokens() + ": permissions 0640"), std::string::npos) << shared.out;
  const auto client = test::run_command(cli + " jobs ls --server http://127.0.0.1:9 --token-file " +
                                        open_token + " 2>&1");
  EXPECT_EQ(client.rc, 1) << client.out;
  EXPECT_NE(client.out.find("permissions 0644"), std::string::npos) << client.out;
}

TEST_F(ServiceTenants, ABadTokensFileIsAUsageErrorNamingTheLine) {
  const std::string cli = INDIM_CLI_PATH;
  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"alice short-token\n", "shorter than 16"},
           {"alice " + std::string(kAlice) + "\nalice " + kBob + "\n", "named twice"},
           {"alice " + std::string(kAlice) + "\nbob " + kAlice + "\n", "token of another"},
           {"alice\n", ":1: expected NAME TOKEN"},
           {"al/ice " + std::string(kAlice) + "\n", ":1: a tenant name"}}) {
    write_secret(tokens(), text, fs::perms::owner_read | fs::perms::owner_write);
    const auto r = test::run_command(cli + " serve --root " + test::demo_models().dir.str() +
                                     " --state " + state() + " --tokens " + tokens() + " 2>&1");
    EXPECT_EQ(r.rc, 1) << text << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << r.out;
  }
  write_secret(tokens(), "alice " + std::string(kAlice) + "\n",
               fs::perms::owner_read | fs::perms::owner_write);
  const auto r =
      test::run_command(cli + " serve --root " + test::demo_models().dir.str() + " --state " +
                        state() + " --tokens " + tokens() + " --admins bob 2>&1");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("--admins bob: no tenant"), std::string::npos) << r.out;
}
