// The service's parts on their own: request checks, root confinement, the token check, the
// listen address, the job database across reopening, and the metrics text.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

#include "indim/checkpoint.hpp"
#include "indim/error.hpp"
#include "indim/mitigate.hpp"
#include "service/admission.hpp"
#include "service/api_error.hpp"
#include "service/http_api.hpp"
#include "service/job_request.hpp"
#include "service/job_store.hpp"
#include "service/roots.hpp"
#include "service/serve.hpp"
#include "test_util.hpp"

using namespace indim;
using namespace indim::service;
namespace fs = std::filesystem;

namespace {

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e.status();
  }
  return 0;
}

}  // namespace

TEST(JobRequest, FillsDefaultsAndSetsTheAnalyzeOptions) {
  const JobSpec s = parse_job_spec(
      R"({"base": "b", "tuned": ["t1", "t2"], "options": {"k": 4, "eps": [0.3, 0.6],
          "side": "both", "precision": "fp64", "include": "q_proj", "html": true,
          "lowrank": false, "lowrank_tol": 1e-8, "noise_floor": "on"}})");
  EXPECT_EQ(s.base, "b");
  EXPECT_EQ(s.tuned, (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(s.options["algo"], "auto");
  EXPECT_EQ(s.options["include"], nlohmann::json::array({"q_proj"}));
  AnalyzeOptions o;
  apply_job_options(spec_from_json(spec_to_json(s)).options, o);
  EXPECT_EQ(o.k, 4);
  EXPECT_EQ(o.eps, (std::vector<double>{0.3, 0.6}));
  EXPECT_EQ(o.side, Side::Both);
  EXPECT_EQ(o.precision, Precision::F64);
  EXPECT_EQ(o.select.include, (std::vector<std::string>{"q_proj"}));
  EXPECT_TRUE(o.html);
  EXPECT_FALSE(o.delta);
  EXPECT_FALSE(o.lowrank);
  EXPECT_EQ(o.lowrank_tol, 1e-8);
  EXPECT_EQ(o.noise_floor, AnalyzeOptions::NoiseFloorMode::On);
  const JobSpec d = parse_job_spec(R"({"base": "b", "tuned": ["t"]})");
  EXPECT_EQ(d.options["k"], 10);
  EXPECT_EQ(d.options["eps"], nlohmann::json::array({0.5}));
  EXPECT_EQ(d.options["lowrank"], true);
  EXPECT_EQ(d.options["lowrank_tol"], 0.0);
  EXPECT_EQ(d.options["noise_floor"], "auto");
  AnalyzeOptions od;
  od.noise_floor = AnalyzeOptions::NoiseFloorMode::Off;
  apply_job_options(d.options, od);
  EXPECT_EQ(od.noise_floor, AnalyzeOptions::NoiseFloorMode::Auto);
}

TEST(JobRequest, RefusesWithA400ThatNamesTheField) {
  for (const char* body :
       {R"({"base": "b", "tuned": ["t"], "options": {"k": 1073741825}})",
        R"({"base": "b", "tuned": ["t"], "options": {"eps": [0.5, "x"]}})",
        R"({"base": "b", "tuned": ["t"], "options": {"lowrank": "yes"}})",
        R"({"base": "b", "tuned": ["t"], "options": {"lowrank_tol": -1e-3}})",
        R"({"base": "b", "tuned": ["t"], "options": {"lowrank_tol": 1.5}})",
        R"({"base": "b", "tuned": ["t"], "options": {"noise_floor": true}})",
        R"({"base": "b", "tuned": ["t"], "options": {"noise_floor": "maybe"}})",
        R"J({"base": "b", "tuned": ["t"], "options": {"exclude": ["a", "(?=x)"]}})J",
        R"({"base": "", "tuned": ["t"]})", "null", "\"text\"", ""}) {
    EXPECT_EQ(status_of([&] { parse_job_spec(body); }), 400) << body;
  }
  try {
    parse_job_spec(R"({"base": "b", "tuned": ["t"], "options": {"workers": 4}})");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown option \"workers\"; known:"), std::string::npos);
  }
}

namespace {

// A request path located and inspected as the service does.
std::string confine(const RootSet& roots, const std::string& path) {
  InspectBudget budget;
  const RootSet::Located at = roots.locate(path);
  roots.inspect(path, at, budget);
  return at.path;
}

}  // namespace

TEST(Roots, ConfinesPathsIndexesAndFolderEntries) {
  test::TempDir dir;
  const std::string root = dir / "root", out = dir / "out";
  std::filesystem::create_directories(root + "/ok");
  std::filesystem::create_directories(out);
  test::write_text(root + "/ok/model.safetensors", "x");
  test::write_text(out + "/w.safetensors", "x");
  test::write_text(root + "/ok/inside.index.json", R"({"weight_map": {"a": "model.safetensors"}})");
  test::write_text(root + "/bad.index.json", R"({"weight_map": {"a": "../out/w.safetensors"}})");
  const std::string canon = std::filesystem::canonical(root).string();
  const RootSet roots({root});
  EXPECT_EQ(confine(roots, "ok"), canon + "/ok");
  EXPECT_EQ(confine(roots, canon + "/ok/model.safetensors"), canon + "/ok/model.safetensors");
  EXPECT_EQ(status_of([&] { confine(roots, "bad.index.json"); }), 403);
  EXPECT_EQ(status_of([&] { confine(roots, out); }), 403);
  EXPECT_EQ(status_of([&] { confine(roots, "../out/w.safetensors"); }), 403);
  EXPECT_EQ(status_of([&] { confine(roots, "../out/none"); }), 403) << "outside, even if missing";
  EXPECT_EQ(status_of([&] { confine(roots, "none"); }), 400);
  EXPECT_EQ(status_of([&] { confine(roots, std::string("ok\0/x", 5)); }), 400);
  EXPECT_EQ(status_of([&] { confine(roots, "ok/" + std::string(256, 'n')); }), 400);
  std::filesystem::create_symlink(out + "/w.safetensors", root + "/ok/link.safetensors");
  EXPECT_EQ(status_of([&] { confine(roots, "ok"); }), 403) << "a folder entry that points out";
  EXPECT_THROW(RootSet({dir / "missing"}), UsageError);
  EXPECT_THROW(RootSet(std::vector<std::string>{}), UsageError);
  // A root "/root" does not admit "/rootother".
  std::filesystem::create_directories(root + "other");
  EXPECT_EQ(status_of([&] { confine(roots, root + "other"); }), 403);
}

TEST(Token, MatchesOnlyTheWholeToken) {
  EXPECT_TRUE(token_matches("secret-token-1234", "secret-token-1234"));
  EXPECT_FALSE(token_matches("secret-token-123", "secret-token-1234"));
  EXPECT_FALSE(token_matches("secret-token-12345", "secret-token-1234"));
  EXPECT_FALSE(token_matches("Secret-token-1234", "secret-token-1234"));
  EXPECT_FALSE(token_matches("", ""));
}

TEST(Listen, ParsesHostAndPortAndKnowsLoopback) {
  EXPECT_EQ(parse_listen("127.0.0.1:8470"), (std::pair<std::string, int>{"127.0.0.1", 8470}));
  EXPECT_EQ(parse_listen("[::1]:0"), (std::pair<std::string, int>{"::1", 0}));
  for (const char* bad : {"8470", "host:", ":80", "h:65536", "h:8x", "h:123456"})
    EXPECT_THROW(parse_listen(bad), UsageError) << bad;
  EXPECT_TRUE(is_loopback("127.0.0.1"));
  EXPECT_TRUE(is_loopback("::1"));
  EXPECT_TRUE(is_loopback("localhost"));
  EXPECT_FALSE(is_loopback("0.0.0.0"));
  EXPECT_FALSE(is_loopback("10.1.2.3"));
}

TEST(JobStore, KeepsJobsAcrossReopeningNewestFirst) {
  test::TempDir dir;
  const std::string path = dir / "jobs.db";
  {
    JobStore store(path);
    for (int i = 0; i < 3; ++i) {
      Job j;
      j.id = "job" + std::to_string(i);
      j.request = {{"base", "b"}, {"tuned", {"t"}}, {"options", nlohmann::json::object()}};
      j.base = "b";
      j.created = 100 + i;
      store.insert(j);
      EXPECT_EQ(j.seq, i + 1);
    }
    Job j = *store.get("job1");
    j.state = JobState::Failed;
    j.error = "broken";
    j.exit_code = 2;
    j.progress.units_total = 7;
    store.update(j);
  }
  JobStore store(path);
  const Job j = *store.get("job1");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_EQ(j.error, "broken");
  EXPECT_EQ(j.exit_code, 2);
  EXPECT_EQ(j.progress.units_total, 7);
  EXPECT_EQ(j.request["base"], "b");
  const auto all = store.list({});
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.front().id, "job2");
  ListQuery queued;
  queued.state = JobState::Queued;
  EXPECT_EQ(store.list(queued).size(), 2u);
  EXPECT_EQ(store.in_state(JobState::Queued).front().id, "job0");
  EXPECT_EQ(store.count(JobState::Failed), 1);
  EXPECT_FALSE(store.get("nope").has_value());
}

TEST(JobStore, ListsSummariesByTenantAndCursorAndSkipsNothingItCannotRead) {
  test::TempDir dir;
  const std::string path = dir / "jobs.db";
  {  // a database of the first schema, without tenants: opening it adds the columns
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT "
                           "UNIQUE NOT NULL, state TEXT NOT NULL, request TEXT NOT NULL, base TEXT "
                           "NOT NULL, created REAL NOT NULL, started REAL NOT NULL, finished REAL "
                           "NOT NULL, attempts INTEGER NOT NULL, error TEXT NOT NULL, error_class "
                           "TEXT NOT NULL, problem TEXT NOT NULL, exit_code INTEGER NOT NULL, "
                           "resumed_records INTEGER NOT NULL, seconds REAL NOT NULL, purged "
                           "INTEGER NOT NULL, units_done INTEGER NOT NULL, units_total INTEGER NOT "
                           "NULL, cost_done REAL NOT NULL, cost_total REAL NOT NULL, units_resumed "
                           "INTEGER NOT NULL, cost_resumed REAL NOT NULL);"
                           "INSERT INTO jobs VALUES (NULL, 'old', 'done', '{\"base\": \"b\", "
                           "\"tuned\": [\"t\"], \"options\": {}}', 'b', 1, 1, 1, 1, '', '', '', "
                           "0, 0, 0, 0, 0, 0, 0, 0, 0, 0);"
                           "INSERT INTO jobs VALUES (NULL, 'torn', 'queued', 'not json', 'b', 1, "
                           "0, 0, 0, '', '', '', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  JobStore store(path);
  for (int i = 0; i < 4; ++i) {
    Job j;
    j.id = "job" + std::to_string(i);
    j.tenant = i % 2 ? "bob" : "alice";
    j.request = {{"base", "b" + std::to_string(i)},
                 {"tuned", {"t1", "t2"}},
                 {"options", {{"pad", std::string(4096, 'x')}}}};
    if (i == 3) j.request["kind"] = "mitigate";
    store.insert(j);
  }
  EXPECT_EQ(store.get("old")->tenant, "");
  const Job torn = *store.get("torn");
  EXPECT_EQ(torn.state, JobState::Failed);
  EXPECT_NE(torn.error.find("not a JSON object"), std::string::npos) << torn.error;
  ListQuery alice;
  alice.tenant = "alice";
  const auto mine = store.list(alice);
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine[0].id, "job2");
  EXPECT_EQ(mine[0].request,
            (nlohmann::json{{"base", "b2"}, {"tuned_count", 2}, {"kind", "analyze"}}));
  EXPECT_EQ(mine[0].tuned_count, 2);
  const auto bobs = store.list([] {
    ListQuery q;
    q.tenant = "bob";
    return q;
  }());
  ASSERT_EQ(bobs.size(), 2u);
  EXPECT_EQ(bobs[0].request["kind"], "mitigate") << "a listing says a mitigate job's kind";
  ListQuery page;
  page.limit = 2;
  const auto first = store.list(page);
  ASSERT_EQ(first.size(), 2u);
  page.before = first.back().seq;
  const auto second = store.list(page);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].id, "job1");
  EXPECT_EQ(second[1].id, "job0");
  page.before = second.back().seq;
  const auto third = store.list(page);
  ASSERT_EQ(third.size(), 2u);
  EXPECT_EQ(third[0].id, "torn");
  EXPECT_FALSE(third[0].damage.empty());
  EXPECT_EQ(store.ended_beyond(0), std::vector<std::string>{"old"});
  store.remove("old");
  EXPECT_FALSE(store.get("old"));
}

namespace {

// A checkpoint of one F32 matrix [n, n] as a sparse file: its size on paper, nothing on disk.
std::string sparse_checkpoint(const std::string& dir, uint64_t n) {
  fs::create_directories(dir);
  const uint64_t bytes = n * n * 4;
  const std::string header = R"({"model.layers.0.mlp.down_proj.weight":{"dtype":"F32","shape":[)" +
                             std::to_string(n) + "," + std::to_string(n) +
                             R"(],"data_offsets":[0,)" + std::to_string(bytes) + "]}}";
  const std::string path = dir + "/model.safetensors";
  test::write_bytes(path, test::st_image(header, 0));
  fs::resize_file(path, 8 + header.size() + bytes);
  return path;
}

}  // namespace

// A mitigate job's peak is also its fp64 copies of the largest matrix, made after the analysis,
// and its variants take disk (folders and the archive): admission counts both.
TEST(Admission, AMitigateJobCountsItsCopiesAndItsVariantsDisk) {
  test::TempDir dir;
  AnalyzeOptions o;
  o.base = sparse_checkpoint(dir / "base", 8192);
  o.tuned = {sparse_checkpoint(dir / "tuned", 8192)};
  o.backend = "cpu";
  o.workers = 1;
  MitigateOptions m;
  m.analysis = o;
  m.out_dir = dir / "out";
  m.lambdas = {0.5, 0};
  m.controls = {"shrink"};
  const MemoryNeed analysis = memory_need(o), mitigation = memory_need(o, &m);
  EXPECT_EQ(analysis.disk, 0u);
  EXPECT_EQ(mitigation.host, std::max<uint64_t>(analysis.host, 6ull * 8 * 8192 * 8192));
  const uint64_t copy = Checkpoint::open(o.tuned[0]).total_bytes();
  EXPECT_GE(copy, 8192ull * 8192 * 4);
  EXPECT_EQ(mitigation.disk, 2 * copy * 2 * (1 + 1)) << "folders and tar, 2 lambdas, 1 control";
  ServeOptions serve;
  serve.job_memory = mitigation.host - 1;
  try {
    admit(o, serve, &m);
    FAIL() << "admitted past --job-memory";
  } catch (const BadInput& e) {
    EXPECT_EQ(e.problem(), InputProblem::TooLarge);
    EXPECT_NE(std::string(e.what()).find("of host memory"), std::string::npos) << e.what();
  }
  if (analysis.host < serve.job_memory) EXPECT_NO_THROW(admit(o, serve));
  // 16 GiB on paper, 16 lambdas with both controls: 1.5 TiB of variants, more than any test disk.
  o.base = sparse_checkpoint(dir / "huge-base", 65536);
  o.tuned = {sparse_checkpoint(dir / "huge-tuned", 65536)};
  m.analysis = o;
  m.lambdas.clear();
  for (int i = 0; i < 16; ++i) m.lambdas.push_back(i / 16.0);
  m.controls = {"shrink", "rescale"};
  serve.job_memory = ~0ull;
  try {
    admit(o, serve, &m);
    FAIL() << "admitted past the free disk";
  } catch (const BadInput& e) {
    EXPECT_EQ(e.problem(), InputProblem::TooLarge);
    EXPECT_NE(std::string(e.what()).find("of disk (16 lambda(s)"), std::string::npos) << e.what();
  }
}
