// `indim serve` through faults: a disk that stops taking writes, a job that kills the service at
// every start, a job that can never fit in memory, a client that retries a POST after kill -9,
// a damaged row in the job database, and listings and retention that stay bounded.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "service/job_store.hpp"
#include "service_jobs.hpp"

using namespace indim;
using test::body_of;
using test::ServiceProcess;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const Json kSmall = {{"base", "small/base"}, {"tuned", {"small/full"}}};
const Json kSlow = {{"base", "big/base"}, {"tuned", {"big/full"}}, {"options", test::kSlowOptions}};

std::string root() { return test::demo_models().dir.str(); }

bool running_with_units(const Json& j) {
  return j.value("state", "") == "running" && j["progress"].value("units_done", 0) >= 1;
}

// The state the database holds for a job, read as another process would.
std::string stored_state(const std::string& db, const std::string& id) {
  service::JobStore store(db);
  const auto j = store.get(id);
  return j ? service::state_name(j->state) : "";
}

void set_file_size_limit(pid_t pid, rlim_t soft) {
  rlimit now{};
  ASSERT_EQ(::prlimit(pid, RLIMIT_FSIZE, nullptr, &now), 0);
  now.rlim_cur = std::min(soft, now.rlim_max);
  ASSERT_EQ(::prlimit(pid, RLIMIT_FSIZE, &now, nullptr), 0);
}

void sql(const std::string& db, const std::string& statement) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(h, statement.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(h);
}

class ServiceFaults : public ::testing::Test {
 protected:
  void SetUp() override { test::demo_models(); }
  std::string state() const { return dir_ / "state"; }
  std::string db() const { return state() + "/jobs.db"; }
  test::TempDir dir_;
};

}  // namespace

TEST_F(ServiceFaults, AJobWhoseEndCannotBeRecordedConvergesOnceWritesSucceedAgain) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string id = test::submit_job(*c, kSlow);
  test::wait_job(*c, id, running_with_units);
  // Every write past the first byte of a file now fails (EFBIG), as on a full disk: the job's
  // journal, and the database's record of the job's end.
  set_file_size_limit(s.pid(), 1);
  const Json ended = test::wait_state(*c, id, "failed");
  EXPECT_NE(ended["error"].value("message", "").find("journal"), std::string::npos) << ended;
  const auto cancel = c->Delete("/v1/jobs/" + id);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(body_of(cancel)["state"], "failed") << "an ended job, whatever the disk says";
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(stored_state(db(), id), "running") << "the disk took nothing yet";
  set_file_size_limit(s.pid(), RLIM_INFINITY);
  std::string stored;
  for (int i = 0; i < 200 && (stored = stored_state(db(), id)) != "failed"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(stored, "failed") << s.log();
  test::wait_state(*c, test::submit_job(*c, kSmall), "done");  // and the queue moves on
}

TEST_F(ServiceFaults, AJobRunningAtMaxAttemptsDeathsFailsAndTheQueueMovesOn) {
  std::string id, next;
  for (int death = 1; death <= 3; ++death) {
    ServiceProcess s(root(), state());
    ASSERT_TRUE(s.ready()) << s.log();
    auto c = s.client();
    if (death == 1) {
      id = test::submit_job(*c, kSlow);
      next = test::submit_job(*c, kSmall);
    }
    test::wait_job(*c, id, running_with_units);
    EXPECT_EQ(s.stop(SIGKILL, std::chrono::seconds(10)), 128 + SIGKILL);
  }
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const Json j = test::wait_state(*c, id, "failed");
  EXPECT_EQ(j["attempts"], 3);
  EXPECT_NE(j["error"].value("message", "").find("stopped while running this job 3 times"),
            std::string::npos)
      << j;
  EXPECT_EQ(j["error"]["exit_code"], 3);
  test::wait_state(*c, next, "done");
}

TEST_F(ServiceFaults, AJobThatCanNeverFitInMemoryFailsBeforeItStarts) {
  // An 8192 x 8192 fp32 weight in sparse files: 256 MiB each on paper, nothing on disk.
  const std::string root = dir_ / "huge";
  for (const char* side : {"base", "tuned"}) {
    fs::create_directories(root + "/" + side);
    const std::string header =
        R"({"model.layers.0.mlp.down_proj.weight":{"dtype":"F32","shape":[8192,8192],)"
        R"("data_offsets":[0,268435456]}})";
    const std::string path = root + "/" + side + "/model.safetensors";
    test::write_bytes(path, test::st_image(header, 0));
    fs::resize_file(path, 8 + header.size() + (256ull << 20));
  }
  ServiceProcess s(root, state(), {"--job-memory", "1G"});
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto t0 = std::chrono::steady_clock::now();
  const std::string id = test::submit_job(*c, {{"base", "base"}, {"tuned", {"tuned"}}});
  const Json j = test::wait_state(*c, id, "failed");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
  const std::string message = j["error"].value("message", "");
  EXPECT_NE(message.find("model.layers.0.mlp.down_proj.weight' [8192, 8192]"), std::string::npos)
      << message;
  EXPECT_NE(message.find("over the 1.0 GiB a job may use here (--job-memory)"), std::string::npos)
      << message;
  EXPECT_EQ(j["error"]["problem"], "too-large");
  EXPECT_EQ(j["error"]["exit_code"], 2);
  EXPECT_EQ(j["progress"]["units_done"], 0);
}

TEST_F(ServiceFaults, ARetriedPostWithAnIdempotencyKeyGetsTheFirstJobAlsoAfterKill9) {
  const httplib::Headers key = {{"Idempotency-Key", "3f2a-retry-of-a-lost-answer"}};
  std::string id;
  {
    ServiceProcess s(root(), state());
    ASSERT_TRUE(s.ready()) << s.log();
    auto c = s.client();
    const auto first = c->Post("/v1/jobs", key, kSmall.dump(), "application/json");
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 202) << first->body;
    id = body_of(first)["id"];
    const auto again = c->Post("/v1/jobs", key, kSmall.dump(), "application/json");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 200);
    EXPECT_EQ(body_of(again)["id"], id);
    EXPECT_EQ(again->get_header_value("Location"), "/v1/jobs/" + id);
    Json other = kSmall;
    other["options"] = {{"k", 3}};
    const auto clash = c->Post("/v1/jobs", key, other.dump(), "application/json");
    EXPECT_EQ(clash->status, 409) << clash->body;
    const auto bad = c->Post("/v1/jobs", {{"Idempotency-Key", std::string(300, 'k')}},
                             kSmall.dump(), "application/json");
    EXPECT_EQ(bad->status, 400);
    s.stop(SIGKILL, std::chrono::seconds(10));
  }
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto retried = c->Post("/v1/jobs", key, kSmall.dump(), "application/json");
  ASSERT_TRUE(retried);
  EXPECT_EQ(body_of(retried)["id"], id);
  EXPECT_EQ(body_of(c->Get("/v1/jobs"))["jobs"].size(), 1u) << "no duplicate";
}

TEST_F(ServiceFaults, AStoredRowThatDoesNotParseIsSkippedInListingsAndFailedInItsOwnGet) {
  std::string good, torn, queued;
  {
    ServiceProcess s(root(), state());
    ASSERT_TRUE(s.ready()) << s.log();
    auto c = s.client();
    good = test::submit_job(*c, kSmall);
    torn = test::submit_job(*c, kSmall);
    test::wait_state(*c, torn, "done");
    ASSERT_EQ(s.stop(SIGTERM, std::chrono::seconds(30)), 0);
  }
  sql(db(), "UPDATE jobs SET request = '{\"base\": ' WHERE id = '" + torn + "'");
  queued = "00000000000000aa";
  sql(db(),
      "INSERT INTO jobs (id, state, request, base, created, started, finished, attempts, error, "
      "error_class, problem, exit_code, resumed_records, seconds, purged, units_done, "
      "units_total, cost_done, cost_total, units_resumed, cost_resumed, tenant) VALUES ('" +
          queued +
          "', 'queued', 'garbage', 'b', 1, 0, 0, 0, '', '', '', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
          "'default')");
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto list = c->Get("/v1/jobs");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200) << list->body;
  const Json jobs = body_of(list)["jobs"];
  ASSERT_EQ(jobs.size(), 1u) << jobs;
  EXPECT_EQ(jobs[0]["id"], good);
  const Json t = body_of(c->Get("/v1/jobs/" + torn));
  EXPECT_EQ(t["state"], "failed");
  EXPECT_NE(t["error"].value("message", "").find("stored request is not a JSON object"),
            std::string::npos)
      << t;
  const Json q =
      test::wait_job(*c, queued, [](const Json& j) { return j.value("state", "") == "failed"; });
  EXPECT_EQ(stored_state(db(), queued), "failed") << "the dispatcher failed it, not ran it";
  EXPECT_NE(s.log().find("listing skips job " + torn), std::string::npos) << s.log();
}

TEST_F(ServiceFaults, ListingsPageByCursorAndLeaveTheRequestToTheJobsOwnGet) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  Json heavy = kSmall;  // a 300 KB request, as a listing used to echo it
  for (int i = 0; i < 256; ++i)
    heavy["options"]["exclude"].push_back("x" + std::to_string(i) + std::string(1200, 'a'));
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.insert(ids.begin(), test::submit_job(*c, heavy));
  std::vector<std::string> seen;
  std::string next;
  for (int page = 0; page < 10; ++page) {
    const auto r = c->Get("/v1/jobs?limit=2" + (next.empty() ? "" : "&cursor=" + next));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_LT(r->body.size(), 16u << 10) << "summaries, not requests";
    const Json body = body_of(r);
    for (const Json& j : body["jobs"]) {
      seen.push_back(j["id"]);
      EXPECT_EQ(j["tuned_count"], 1);
      EXPECT_EQ(j["base"], "small/base");
      EXPECT_FALSE(j.contains("options"));
    }
    if (body["next"].is_null()) break;
    next = body["next"];
  }
  EXPECT_EQ(seen, ids) << "every job once, newest first";
  EXPECT_EQ(body_of(c->Get("/v1/jobs/" + ids[0]))["options"]["exclude"].size(), 256u);
  EXPECT_EQ(c->Get("/v1/jobs?cursor=abc")->status, 400);
}

TEST_F(ServiceFaults, RetentionKeepsAtMostKeepJobsEndedJobs) {
  ServiceProcess s(root(), state(), {"--keep-jobs", "2"});
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(test::submit_job(*c, kSmall));
    test::wait_state(*c, ids.back(), "done");
  }
  EXPECT_EQ(c->Get("/v1/jobs/" + ids[0])->status, 404);
  EXPECT_FALSE(fs::exists(state() + "/jobs/" + ids[0]));
  EXPECT_EQ(c->Get("/v1/jobs/" + ids[2] + "/report.json")->status, 200);
  EXPECT_EQ(body_of(c->Get("/v1/jobs"))["jobs"].size(), 2u);
}
