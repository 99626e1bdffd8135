// `indim serve` over real HTTP on loopback: the binary started by each test, its jobs run on
// generated safetensors checkpoints, every answer checked by status and content.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "hub_cache.hpp"
#include "indim/demo.hpp"
#include "service_jobs.hpp"

using namespace indim;
using test::body_of;
using test::ServiceProcess;
using Json = nlohmann::json;

namespace {

// Checkpoints every test reads: a small model (2 layers) and a slower one (6 layers, both
// sides in fp64 take seconds), under one root; a folder outside it.
struct Models {
  test::TempDir dir;
  std::string root, outside;
  DemoPaths small, big;
  Models() {
    root = dir / "root";
    outside = dir / "outside";
    std::filesystem::create_directories(outside);
    DemoOptions s;
    s.hidden = 128, s.intermediate = 256, s.kv_dim = 64, s.layers = 2;
    small = generate_demo(root + "/small", s);
    DemoOptions b;
    b.hidden = 256, b.intermediate = 640, b.kv_dim = 128, b.layers = 6;
    big = generate_demo(root + "/big", b);
    test::write_text(outside + "/secret.txt", "not for the service\n");
  }
};

Models& models() {
  static Models m;
  return m;
}

const Json kSlow = {{"side", "both"}, {"algo", "gesdd"}, {"precision", "fp64"}};

Json job_body(const std::string& base, std::vector<std::string> tuned,
              Json options = Json::object()) {
  return {{"base", base}, {"tuned", tuned}, {"options", options}};
}

httplib::Result post(httplib::Client& c, const Json& body) {
  return c.Post("/v1/jobs", body.dump(), "application/json");
}

std::string submit(httplib::Client& c, const Json& body) { return test::submit_job(c, body); }
using test::wait_job;
using test::wait_state;

Json job(httplib::Client& c, const std::string& id) { return body_of(c.Get("/v1/jobs/" + id)); }

bool has_units_done(const Json& j, int n) {
  return j.value("state", "") == "running" && j["progress"].value("units_done", 0) >= n;
}

int journal_lines(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}

// report.json without what differs between runs of the same analysis: times and paths (and,
// with `cached`, whether a base decomposition came from the cache, which a resumed job's did).
Json comparable(Json j, bool cached = false) {
  if (j.is_object()) {
    Json out = Json::object();
    for (auto& [k, v] : j.items())
      if (k != "seconds" && k != "created" && k != "timing" && k != "path" && k != "files" &&
          !(cached && k == "base_cached"))
        out[k] = comparable(v, cached);
    return out;
  }
  if (j.is_array())
    for (auto& v : j) v = comparable(v, cached);
  return j;
}

// `indim analyze` of the same inputs and options, its report.json; one worker, as the service
// runs (BLAS's thread count moves the last bits of sigma, and the reports are compared whole).
Json analyze_report(const std::string& out, const std::string& base,
                    const std::vector<std::string>& tuned, const std::string& flags) {
  std::string cmd = std::string(INDIM_CLI_PATH) + " analyze " + base;
  for (const auto& t : tuned) cmd += " " + t;
  cmd += " --backend cpu --no-cache --workers 1 -q --out " + out + " " + flags + " >/dev/null 2>&1";
  EXPECT_EQ(test::run_command(cmd).rc, 0) << cmd;
  return Json::parse(test::read_text(out + "/report.json"));
}

class Service : public ::testing::Test {
 protected:
  void SetUp() override { models(); }
  std::string state() const { return dir_ / "state"; }
  test::TempDir dir_;
};

}  // namespace

TEST_F(Service, SubmitPollFetchEveryOutputListAndFollowEvents) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const auto r = post(
      *c, job_body("small/base", {"small/full", "small/lora-adapter"}, {{"k", 8}, {"html", true}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = body_of(r).at("id");
  EXPECT_EQ(body_of(r).at("state"), "queued");
  EXPECT_EQ(r->get_header_value("Location"), "/v1/jobs/" + id);

  std::string events;  // the stream ends itself once the job is over
  const auto e = c->Get("/v1/jobs/" + id + "/events", [&](const char* d, size_t n) {
    events.append(d, n);
    return true;
  });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 200);
  EXPECT_NE(e->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  ASSERT_NE(events.find("event: end\ndata: "), std::string::npos) << events;
  const Json last = Json::parse(events.substr(events.rfind("data: ") + 6));
  EXPECT_EQ(last.at("state"), "done");

  const Json j = job(*c, id);
  EXPECT_EQ(j.at("state"), "done");
  EXPECT_GT(j["progress"]["units_total"].get<int>(), 0);
  EXPECT_EQ(j["progress"]["units_done"], j["progress"]["units_total"]);
  EXPECT_DOUBLE_EQ(j["progress"]["fraction"].get<double>(), 1.0);
  EXPECT_EQ(j["progress"]["eta_seconds"], 0);
  EXPECT_TRUE(j["error"].is_null());
  EXPECT_EQ(j["options"]["k"], 8);
  EXPECT_EQ(j["options"]["precision"], "fp32");  // defaults filled in
  for (const std::string name :
       {"report.json", "matrices.csv", "vectors.csv", "report.html", "journal.jsonl"}) {
    const auto o = c->Get("/v1/jobs/" + id + "/" + name);
    ASSERT_TRUE(o);
    EXPECT_EQ(o->status, 200) << name;
    EXPECT_EQ(o->body, test::read_text(state() + "/jobs/" + id + "/" + name)) << name;
    EXPECT_EQ(j["outputs"][name], "/v1/jobs/" + id + "/" + name);
  }
  EXPECT_NE(
      c->Get("/v1/jobs/" + id + "/matrices.csv")->get_header_value("Content-Type").find("text/csv"),
      std::string::npos);
  EXPECT_EQ(c->Get("/v1/jobs/" + id + "/other.json")->status, 404);
  EXPECT_EQ(c->Get("/v1/jobs/0123456789abcdef")->status, 404);

  const Json report = Json::parse(c->Get("/v1/jobs/" + id + "/report.json")->body);
  const Json ref =
      analyze_report(dir_ / "ref", models().small.base,
                     {models().small.full, models().small.lora_adapter}, "--k 8 --html");
  EXPECT_EQ(comparable(report), comparable(ref));

  const Json all = body_of(c->Get("/v1/jobs"));
  ASSERT_EQ(all["jobs"].size(), 1u);
  EXPECT_EQ(all["jobs"][0]["id"], id);
  EXPECT_EQ(body_of(c->Get("/v1/jobs?state=done"))["jobs"].size(), 1u);
  EXPECT_EQ(body_of(c->Get("/v1/jobs?state=queued"))["jobs"].size(), 0u);
  EXPECT_EQ(c->Get("/v1/jobs?state=bogus")->status, 400);
  EXPECT_EQ(c->Get("/v1/jobs?limit=0")->status, 400);
  EXPECT_EQ(s.stop(SIGTERM, std::chrono::seconds(30)), 0) << s.log();
}

TEST_F(Service, RefusesRequestsWithoutTheTokenOrWithAWrongOne) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  for (const std::string token :
       {"", "wrong-token-0123456789abcdef", "test-token-0123456789abcde"}) {
    auto c = s.client(token);
    for (const std::string path : {"/v1/jobs", "/v1/jobs/0123456789abcdef", "/metrics"}) {
      const auto r = c->Get(path);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 401) << token << " " << path;
      EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer realm=\"indim\"");
    }
    EXPECT_EQ(post(*c, job_body("small/base", {"small/full"}))->status, 401);
  }
  auto basic = s.client("");
  basic->set_basic_auth("user", test::kToken);
  EXPECT_EQ(basic->Get("/v1/jobs")->status, 401);
  const auto h = s.client("")->Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(body_of(h)["workers_up"], true);
  EXPECT_EQ(s.log().find(test::kToken), std::string::npos) << "the token is never logged";
  EXPECT_EQ(body_of(s.client()->Get("/v1/jobs"))["jobs"].size(), 0u);
}

TEST_F(Service, RefusesPathsThatResolveOutsideTheRoots) {
  const Models& m = models();
  const std::string links = m.root + "/links-" + std::to_string(::getpid());
  std::filesystem::create_directories(links + "/dir-with-link");
  std::filesystem::create_directory_symlink(m.outside, links + "/to-outside");
  std::filesystem::create_symlink(m.outside + "/secret.txt",
                                  links + "/dir-with-link/model.safetensors");
  std::filesystem::create_directories(links + "/index");
  test::write_text(links + "/index/model.safetensors.index.json",
                   R"({"metadata": {}, "weight_map": {"w": "../../../outside/secret.txt"}})");
  ServiceProcess s(m.root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string rel = "links-" + std::to_string(::getpid());
  for (const std::string& bad : std::vector<std::string>{
           "../outside/secret.txt", m.outside + "/secret.txt", "small/../../outside",
           rel + "/to-outside", rel + "/to-outside/secret.txt", rel + "/dir-with-link",
           rel + "/index", rel + "/index/model.safetensors.index.json"}) {
    for (const Json& body : {job_body(bad, {"small/full"}), job_body("small/base", {bad})}) {
      const auto r = post(*c, body);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 403) << bad << ": " << r->body;
      EXPECT_NE(body_of(r).value("error", "").find(bad), std::string::npos) << r->body;
    }
  }
  const auto missing = post(*c, job_body("small/none", {"small/full"}));
  EXPECT_EQ(missing->status, 400) << missing->body;
  EXPECT_EQ(body_of(c->Get("/v1/jobs"))["jobs"].size(), 0u) << "nothing was queued";
  std::filesystem::remove_all(links);
}

TEST_F(Service, RefusesMalformedOrUnknownRequestFieldsAndOversizedBodies) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{", "request body"},
      {"[1, 2]", "object"},
      {R"({"base": "small/base", "tuned": ["small/full"], "priority": 1})", "priority"},
      {R"({"base": "small/base", "tuned": []})", "tuned"},
      {R"({"base": "small/base", "tuned": "small/full"})", "tuned"},
      {R"({"tuned": ["small/full"]})", "base"},
      {R"({"base": 7, "tuned": ["small/full"]})", "base"},
      {R"({"base": "small/base", "base": "small/base", "tuned": ["small/full"]})", "duplicate"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"kk": 3}})", "kk"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"k": 0}})", "options.k"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"k": "10"}})", "options.k"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"k": 2.5}})", "options.k"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"eps": 2}})", "options.eps"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"eps": []}})", "options.eps"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"precision": "fp16"}})",
       "fp16"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"side": "up"}})",
       "options.side"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"algo": "qr"}})",
       "options.algo"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"include": "("}})",
       "include"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"html": "yes"}})",
       "options.html"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"plot_top": 99}})",
       "plot_top"},
      {R"({"base": "small/base", "tuned": ["small/full"], "options": []})", "options"},
      {std::string(100, '[') + std::string(100, ']'), "deep"},
      // The reason quotes 40 bytes of the value, which cuts a two-byte character in half.
      {R"({"base": "small/base", "tuned": ["small/full"], "options": {"side": ")" +
           std::string(20, 'x') +
           [] {
             std::string e;
             for (int i = 0; i < 30; ++i) e += "\xc3\xa9";
             return e;
           }() +
           "\"}}",
       "options.side"},
  };
  for (const auto& [body, says] : bad) {
    const auto r = c->Post("/v1/jobs", body, "application/json");
    ASSERT_TRUE(r) << body;
    EXPECT_EQ(r->status, 400) << body << ": " << r->body;
    EXPECT_NE(body_of(r).value("error", "").find(says), std::string::npos) << r->body;
  }
  const std::string huge = R"({"base": "small/base", "tuned": ["small/full"], "pad": ")" +
                           std::string(3 << 20, 'x') + "\"}";
  const auto big = c->Post("/v1/jobs", huge, "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(body_of(c->Get("/v1/jobs"))["jobs"].size(), 0u) << "nothing was queued";
  EXPECT_EQ(s.client("")->Get("/healthz")->status, 200) << "still serving";
}

TEST_F(Service, CancelsAQueuedJobAtOnceAndARunningOneAtItsNextUnit) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string running = submit(*c, job_body("big/base", {"big/full"}, kSlow));
  const std::string queued = submit(*c, job_body("big/base", {"big/lora"}, kSlow));
  wait_job(*c, running, [](const Json& j) { return has_units_done(j, 1); });
  const auto q = c->Delete("/v1/jobs/" + queued);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->status, 200);
  EXPECT_EQ(body_of(q)["state"], "cancelled");
  EXPECT_EQ(c->Delete("/v1/jobs/" + running)->status, 200);
  const Json r = wait_state(*c, running, "cancelled");
  EXPECT_LT(r["progress"]["units_done"].get<int>(), r["progress"]["units_total"].get<int>());
  EXPECT_EQ(c->Get("/v1/jobs/" + running + "/report.json")->status, 409);
  EXPECT_EQ(job(*c, queued)["attempts"], 0) << "a cancelled queued job never ran";
  EXPECT_TRUE(std::filesystem::exists(state() + "/jobs/" + running + "/journal.jsonl"));
  const Json purged = body_of(c->Delete("/v1/jobs/" + running + "?purge=true"));
  EXPECT_EQ(purged["purged"], true);
  EXPECT_FALSE(std::filesystem::exists(state() + "/jobs/" + running));
  EXPECT_EQ(c->Get("/v1/jobs/" + running + "/report.json")->status, 410);
  EXPECT_EQ(c->Delete("/v1/jobs/0123456789abcdef")->status, 404);
}

TEST_F(Service, TwoClientsSubmitAndPollAtOnce) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  std::vector<std::vector<std::string>> ids(2);
  std::atomic<int> failures{0};
  auto client_work = [&](int who) {
    auto c = s.client();
    for (int i = 0; i < 3; ++i) {
      const auto r = post(*c, job_body("small/base", {i % 2 ? "small/full" : "small/lora"}));
      if (!r || r->status != 202) {
        ++failures;
        continue;
      }
      ids[who].push_back(body_of(r)["id"]);
    }
    for (const auto& id : ids[who])
      if (wait_state(*c, id, "done").value("state", "") != "done") ++failures;
  };
  std::thread a(client_work, 0), b(client_work, 1);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  std::set<std::string> unique;
  for (const auto& v : ids) unique.insert(v.begin(), v.end());
  EXPECT_EQ(unique.size(), 6u);
  EXPECT_EQ(body_of(s.client()->Get("/v1/jobs?state=done"))["jobs"].size(), 6u);
}

TEST_F(Service, ResumesAJobAfterKill9WithoutRecomputingAFinishedMatrix) {
  const Models& m = models();
  std::string id;
  int kept = 0;
  {
    ServiceProcess s(m.root, state());
    ASSERT_TRUE(s.ready()) << s.log();
    auto c = s.client();
    id = submit(*c, job_body("big/base", {"big/full"}, kSlow));
    wait_job(*c, id, [](const Json& j) { return has_units_done(j, 3); });
    EXPECT_EQ(s.stop(SIGKILL, std::chrono::seconds(10)), 128 + SIGKILL);
    kept = journal_lines(state() + "/jobs/" + id + "/journal.jsonl") - 1;  // less the header
  }
  ASSERT_GE(kept, 6);  // 3 units, both sides
  ServiceProcess s(m.root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const Json j = wait_state(*c, id, "done");
  EXPECT_EQ(j["attempts"], 2);
  EXPECT_GE(j["resumed_records"].get<int>(), kept - 1) << "a torn last line may be dropped";
  EXPECT_GE(j["progress"]["units_resumed"].get<int>(), (kept - 1) / 2);
  const Json report = Json::parse(c->Get("/v1/jobs/" + id + "/report.json")->body);
  const Json ref = analyze_report(dir_ / "ref", m.big.base, {m.big.full},
                                  "--side both --algo gesdd --precision fp64");
  EXPECT_EQ(comparable(report, true), comparable(ref, true));
  EXPECT_NE(s.log().find("requeued"), std::string::npos) << s.log();
}

TEST_F(Service, SigtermDrainsTheRunningJobBackToTheQueueAndExitsZero) {
  const Models& m = models();
  std::string id;
  {
    ServiceProcess s(m.root, state());
    ASSERT_TRUE(s.ready()) << s.log();
    auto c = s.client();
    id = submit(*c, job_body("big/base", {"big/full"}, kSlow));
    wait_job(*c, id, [](const Json& j) { return has_units_done(j, 1); });
    EXPECT_EQ(s.stop(SIGTERM, std::chrono::seconds(60)), 0) << s.log();
    EXPECT_NE(s.log().find("received SIGTERM: draining"), std::string::npos) << s.log();
    EXPECT_NE(s.log().find("queued again"), std::string::npos) << s.log();
  }
  ServiceProcess s(m.root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const Json j = wait_state(*c, id, "done");
  EXPECT_EQ(j["attempts"], 2);
  EXPECT_GT(j["resumed_records"].get<int>(), 0);
}

TEST_F(Service, ASecondServerOnOneStateFolderRefuses) {
  ServiceProcess first(models().root, state());
  ASSERT_TRUE(first.ready()) << first.log();
  ServiceProcess second(models().root, state());
  EXPECT_FALSE(second.ready());
  EXPECT_EQ(second.stop(0, std::chrono::seconds(10)), 3);
  EXPECT_NE(second.log().find("in use by pid " + std::to_string(first.pid())), std::string::npos)
      << second.log();
  EXPECT_EQ(first.client("")->Get("/healthz")->status, 200);
}

TEST_F(Service, ASecondJobOnABaseReadsNothingFromTheCacheDirectory) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string first = submit(*c, job_body("small/base", {"small/full"}));
  wait_state(*c, first, "done");
  const std::string cache = state() + "/cache";
  int removed = 0;
  for (const auto& e : std::filesystem::directory_iterator(cache))
    if (e.path().extension() == ".isvd") std::filesystem::remove(e.path()), ++removed;
  EXPECT_GT(removed, 0) << "the first job filled the cache directory";
  const std::string second = submit(*c, job_body("small/base", {"small/lora"}));
  wait_state(*c, second, "done");
  const Json report = Json::parse(c->Get("/v1/jobs/" + second + "/report.json")->body);
  for (const Json& r : report.at("matrices"))
    EXPECT_TRUE(r.at("base_cached").get<bool>()) << r.dump();
  for (const auto& e : std::filesystem::directory_iterator(cache))
    EXPECT_NE(e.path().extension(), ".isvd") << "nothing was read from or written to " << cache;
  const std::string metrics = c->Get("/metrics")->body;
  EXPECT_NE(
      metrics.find("indim_base_cache_hits_total{level=\"memory\"} " + std::to_string(removed)),
      std::string::npos)
      << metrics;
}

TEST_F(Service, MetricsScrapeInPrometheusTextFormat) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  wait_state(*c, submit(*c, job_body("small/base", {"small/full"})), "done");
  const auto r = c->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain; version=0.0.4"),
            std::string::npos);
  const std::regex sample(R"(^(indim_[a-z_]+)(\{[a-z]+="[^"]*"\})? (-?[0-9.e+]+)$)");
  const std::regex meta(R"(^# (HELP|TYPE) (indim_[a-z_]+) .+$)");
  std::istringstream in(r->body);
  std::string line;
  std::set<std::string> typed;
  std::vector<double> buckets;
  double count = -1;
  for (std::smatch mt; std::getline(in, line);) {
    if (std::regex_match(line, mt, meta)) {
      if (mt[1] == "TYPE") typed.insert(mt[2]);
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, mt, sample)) << line;
    std::string family = mt[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (typed.count(family) == 0 && family.size() > std::strlen(suffix) &&
          family.compare(family.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
        family.resize(family.size() - std::strlen(suffix));
    EXPECT_EQ(typed.count(family), 1u) << "no TYPE before " << line;
    if (mt[1] == "indim_matrix_seconds_bucket") buckets.push_back(std::stod(mt[3]));
    if (mt[1] == "indim_matrix_seconds_count") count = std::stod(mt[3]);
  }
  ASSERT_FALSE(buckets.empty());
  EXPECT_TRUE(std::is_sorted(buckets.begin(), buckets.end())) << "buckets are cumulative";
  EXPECT_EQ(buckets.back(), count);
  EXPECT_GT(count, 0);
  EXPECT_NE(r->body.find("indim_jobs{state=\"done\"} 1\n"), std::string::npos);
  EXPECT_NE(r->body.find("indim_jobs_ended_total{state=\"done\"} 1\n"), std::string::npos);
}

// Prometheus's own checker (Debian's prometheus package, which scripts/setup.sh installs) on
// what a running service serves, after a job, a failed request and a refused token.
TEST_F(Service, PromtoolChecksTheMetricsOfARunningService) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  wait_state(*c, submit(*c, job_body("small/base", {"small/full"})), "done");
  EXPECT_EQ(s.client("wrong-token-0123456789abcdef")->Get("/v1/jobs")->status, 401);
  const std::string scrape = dir_ / "scrape.txt";
  const auto got =
      test::run_command("curl -sf -H 'Authorization: Bearer " + std::string(test::kToken) + "' " +
                        s.url() + "/metrics -o " + scrape + " 2>&1");
  ASSERT_EQ(got.rc, 0) << got.out;
  const auto check = test::run_command("promtool check metrics < " + scrape + " 2>&1");
  EXPECT_EQ(check.rc, 0) << check.out << "\n" << test::read_text(scrape);
  EXPECT_EQ(check.out, "") << "no lint findings either";
  EXPECT_NE(test::read_text(scrape).find("indim_http_requests_total{code=\"401\"} 1"),
            std::string::npos);
}

TEST_F(Service, AFailedJobSaysWhyAndWhichClassOfError) {
  test::write_text(models().root + "/not-a-checkpoint.safetensors", "hello");
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string id = submit(*c, job_body("small/base", {"not-a-checkpoint.safetensors"}));
  const Json j = wait_state(*c, id, "failed");
  EXPECT_EQ(j["error"]["class"], "bad-input");
  EXPECT_EQ(j["error"]["exit_code"], 2);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("not-a-checkpoint.safetensors"),
            std::string::npos);
  EXPECT_EQ(c->Get("/v1/jobs/" + id + "/report.json")->status, 409);
}

TEST_F(Service, RetentionRemovesTheOutputsOfOldJobs) {
  std::string id;
  {
    ServiceProcess s(models().root, state());
    ASSERT_TRUE(s.ready()) << s.log();
    auto c = s.client();
    id = submit(*c, job_body("small/base", {"small/full"}));
    wait_state(*c, id, "done");
  }
  ServiceProcess s(models().root, state(), {"--keep-days", "0"});
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const Json j = wait_job(*c, id, [](const Json& j) { return j.value("purged", false); });
  EXPECT_EQ(j["state"], "done");
  EXPECT_EQ(c->Get("/v1/jobs/" + id + "/report.json")->status, 410);
  EXPECT_FALSE(std::filesystem::exists(state() + "/jobs/" + id));
}

TEST_F(Service, TheClientSubmitsWaitsListsShowsAndFetches) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  const std::string cli = std::string("INDIM_TOKEN=") + test::kToken + " " + INDIM_CLI_PATH;
  const std::string out = dir_ / "client-out";
  const auto sub =
      test::run_command(cli + " submit --server " + s.url() +
                        " small/base small/full --k 6 --noise-floor --wait -q --out " + out);
  ASSERT_EQ(sub.rc, 0) << sub.out;
  const std::string id = sub.out.substr(0, 16);
  EXPECT_NE(sub.out.find("job " + id + " done"), std::string::npos) << sub.out;
  const Json report = Json::parse(test::read_text(out + "/report.json"));
  EXPECT_EQ(report["settings"]["k"], 6) << report.dump().substr(0, 400);
  ASSERT_GT(report["matrices"].size(), 0u);
  EXPECT_EQ(report["matrices"][0]["noise_floor"]["format"], "BF16") << "--noise-floor was sent";
  const auto ls = test::run_command(cli + " jobs ls --server " + s.url());
  EXPECT_EQ(ls.rc, 0);
  EXPECT_NE(ls.out.find(id + "  done"), std::string::npos) << ls.out;
  const auto show = test::run_command(cli + " jobs show " + id + " --server " + s.url());
  EXPECT_EQ(Json::parse(show.out)["id"], id);
  const auto fetch =
      test::run_command(cli + " jobs fetch " + id + " --server " + s.url() + " --out " + out + "2");
  EXPECT_EQ(fetch.rc, 0) << fetch.out;
  EXPECT_EQ(test::read_text(out + "2/matrices.csv"), test::read_text(out + "/matrices.csv"));
  const auto wrong = test::run_command(std::string("INDIM_TOKEN=nope ") + INDIM_CLI_PATH +
                                       " jobs ls --server " + s.url() + " 2>&1");
  EXPECT_EQ(wrong.rc, 1);
  EXPECT_NE(wrong.out.find("401"), std::string::npos) << wrong.out;
  const auto outside =
      test::run_command(cli + " submit --server " + s.url() + " /etc small/full 2>&1");
  EXPECT_EQ(outside.rc, 2);
  EXPECT_NE(outside.out.find("403"), std::string::npos) << outside.out;
  // The health check of containers: no token, 0 while up, 3 once the service is gone.
  const std::string health = std::string(INDIM_CLI_PATH) + " health --server " + s.url() + " 2>&1";
  const auto up = test::run_command(health);
  EXPECT_EQ(up.rc, 0) << up.out;
  EXPECT_NE(up.out.find("\"workers_up\":true"), std::string::npos) << up.out;
  s.stop(SIGTERM, std::chrono::seconds(30));
  const auto down = test::run_command(health);
  EXPECT_EQ(down.rc, 3) << down.out;
}

TEST_F(Service, ServesHttpsWithTheGivenCertificate) {
  const std::string cert = dir_ / "cert.pem", key = dir_ / "key.pem";
  const auto made = test::run_command(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
      "subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " 2>&1");
  if (made.rc != 0) GTEST_SKIP() << "openssl could not make a certificate: " << made.out;
  ServiceProcess s(models().root, state(), {"--tls-cert", cert, "--tls-key", key});
  ASSERT_TRUE(s.ready()) << s.log();
  ASSERT_EQ(s.url().rfind("https://127.0.0.1:", 0), 0u) << s.url();
  httplib::SSLClient tls("127.0.0.1", std::stoi(s.url().substr(s.url().rfind(':') + 1)));
  tls.set_ca_cert_path(cert);
  tls.enable_server_certificate_verification(true);
  tls.set_bearer_token_auth(test::kToken);
  const auto r = tls.Get("/v1/jobs");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  httplib::Client plain("http://" + s.url().substr(8));
  EXPECT_FALSE(plain.Get("/healthz")) << "no plain HTTP on the TLS port";
  const std::string cli = std::string("INDIM_TOKEN=") + test::kToken + " " + INDIM_CLI_PATH;
  const auto ls = test::run_command(cli + " jobs ls --server " + s.url() + " --ca-cert " + cert);
  EXPECT_EQ(ls.rc, 0) << ls.out;
  const auto untrusted = test::run_command(cli + " jobs ls --server " + s.url() + " 2>&1");
  EXPECT_EQ(untrusted.rc, 3) << "a certificate nobody trusts is refused: " << untrusted.out;
}

TEST_F(Service, ClosesAConnectionThatNeverFinishesItsRequest) {
  ServiceProcess s(models().root, state(), {"--http-timeout", "1"});
  ASSERT_TRUE(s.ready()) << s.log();
  const int port = std::stoi(s.url().substr(s.url().rfind(':') + 1));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string partial = "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  EXPECT_EQ(s.client()->Get("/v1/jobs")->status, 200) << "others are served meanwhile";
  timeval wait{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  const auto t0 = std::chrono::steady_clock::now();
  char buf[256];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);  // 0: closed (or an error answer first)
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  EXPECT_GE(n, 0) << "closed, not left hanging";
  EXPECT_LT(secs, 8.0);
}

TEST_F(Service, RefusesSubmissionsBeyondMaxQueuedWith429) {
  ServiceProcess s(models().root, state(), {"--max-queued", "1"});
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  std::vector<int> statuses;
  std::string refusal;
  for (const char* tuned : {"big/full", "big/lora", "big/full"}) {
    const auto r = post(*c, job_body("big/base", {tuned}, kSlow));
    ASSERT_TRUE(r);
    statuses.push_back(r->status);
    if (r->status == 429) refusal = body_of(r).value("error", "");
  }
  EXPECT_EQ(statuses.front(), 202);
  EXPECT_NE(std::find(statuses.begin(), statuses.end(), 429), statuses.end())
      << "with one job queued at most, one of three quick submissions waits in vain";
  EXPECT_NE(refusal.find("--max-queued"), std::string::npos) << refusal;
  EXPECT_LE(body_of(c->Get("/v1/jobs?state=queued"))["jobs"].size(), 1u);
}

TEST_F(Service, ResolvesHubIdsOnlyInsideItsRoots) {
  const Models& m = models();
  const std::string commit = "4444444444444444444444444444444444444444";
  const std::string hub = dir_ / "hub";  // a root of its own, laid out as a hub cache
  test::set_hub_ref(test::add_hub_snapshot(hub, "acme/base", commit, m.small.base, true), "main",
                    commit);
  test::set_hub_ref(test::add_hub_snapshot(hub, "acme/full", commit, m.small.full, true), "main",
                    commit);
  // A repo whose snapshot links out of the roots.
  const std::string leak = hub + "/models--acme--leak";
  std::filesystem::create_directories(leak + "/snapshots/" + commit);
  std::filesystem::create_symlink(m.outside + "/secret.txt",
                                  leak + "/snapshots/" + commit + "/model.safetensors");
  test::set_hub_ref(leak, "main", commit);
  ServiceProcess s(hub, state(), {"--root", m.root});
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string id = submit(*c, job_body("acme/base", {"acme/full"}));
  const Json j = wait_state(*c, id, "done");
  const Json report = Json::parse(c->Get("/v1/jobs/" + id + "/report.json")->body);
  EXPECT_EQ(report["inputs"]["base"]["path"], "acme/base");
  EXPECT_EQ(report["inputs"]["base"]["hub"]["commit"], commit);
  EXPECT_EQ(report["inputs"]["tuned"][0]["hub"]["repo"], "acme/full");
  const auto out = post(*c, job_body("acme/leak", {"acme/full"}));
  EXPECT_EQ(out->status, 403) << out->body;
  const auto absent = post(*c, job_body("acme/absent", {"acme/full"}));
  EXPECT_EQ(absent->status, 400) << absent->body;
  EXPECT_NE(body_of(absent).value("error", "").find("hub cache"), std::string::npos);
}

// A mitigate job: the same folders and figures as `indim mitigate`, mitigation.json per file and
// the variant folders as one tar archive; its own options checked.
TEST_F(Service, MitigateJobWritesTheVariantsAsAnArchive) {
  ServiceProcess s(models().root, state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  Json body = job_body("small/base", {"small/lora-adapter"},
                       {{"lambda", Json::array({0.5, 0})}, {"controls", Json::array({"shrink"})}});
  body["kind"] = "mitigate";
  const std::string id = submit(*c, body);
  ASSERT_FALSE(id.empty());
  const Json j = wait_state(*c, id, "done");
  EXPECT_EQ(j["kind"], "mitigate");
  EXPECT_EQ(j["options"]["adapter_rank"], "exact");
  const auto tar = c->Get("/v1/jobs/" + id + "/mitigation.tar");
  ASSERT_TRUE(tar);
  ASSERT_EQ(tar->status, 200) << tar->body;
  EXPECT_EQ(tar->get_header_value("Content-Type"), "application/x-tar");
  const std::string archive = dir_ / "m.tar";
  test::write_text(archive, tar->body);
  const std::string unpacked = dir_ / "unpacked";
  std::filesystem::create_directories(unpacked);
  ASSERT_EQ(test::run_command("tar -xf " + archive + " -C " + unpacked).rc, 0);
  for (const std::string f :
       {"intruders-0.5/adapter_model.safetensors", "intruders-0/adapter_config.json",
        "shrink-0/adapter_model.safetensors", "shrink-0.5/adapter_config.json"})
    EXPECT_EQ(test::read_text(unpacked + "/" + f),
              test::read_text(state() + "/jobs/" + id + "/" + f))
        << f;
  EXPECT_FALSE(std::filesystem::exists(unpacked + "/rescale-0"));
  const Json mine = Json::parse(c->Get("/v1/jobs/" + id + "/mitigation.json")->body);
  const std::string cli = std::string(INDIM_CLI_PATH) + " mitigate " + models().small.base + " " +
                          models().small.lora_adapter +
                          " --backend cpu --no-cache --workers 1 -q --lambda " +
                          "0.5,0 --controls shrink --out " + (dir_ / "cli") + " >/dev/null 2>&1";
  ASSERT_EQ(test::run_command(cli).rc, 0) << cli;
  const Json ref = Json::parse(test::read_text(dir_ / "cli/mitigation.json"));
  EXPECT_EQ(comparable(mine["matrices"]), comparable(ref["matrices"]));
  EXPECT_GT(mine["matrices"].size(), 0u);

  auto refused = [&](Json b) { return post(*c, b)->status; };
  Json bad = body;
  bad["kind"] = "bogus";
  EXPECT_EQ(refused(bad), 400);
  bad = body;
  bad["tuned"] = {"small/lora-adapter", "small/full"};
  EXPECT_EQ(refused(bad), 400);
  bad = body;
  bad["options"]["lambda"] = 2;
  EXPECT_EQ(refused(bad), 400);
  bad = body;
  bad["options"]["side"] = "right";
  EXPECT_EQ(refused(bad), 400);
  bad = job_body("small/base", {"small/full"}, {{"lambda", 0.5}});  // an analyze job has none
  EXPECT_EQ(refused(bad), 400);
  EXPECT_EQ(s.stop(SIGTERM, std::chrono::seconds(30)), 0) << s.log();
}
