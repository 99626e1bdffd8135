// The service's client against a service that lies about its outputs, and outputs whose tensor
// names a spreadsheet would run as formulas.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <thread>

#include "indim/safetensors.hpp"
#include "service_process.hpp"

using namespace indim;
using test::ServiceProcess;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kId = "0123456789abcdef";

// A service that answers every job as done, listing `outputs`, and every file as "pwned".
class HostileService {
 public:
  explicit HostileService(Json outputs) {
    server_.Get(std::string("/v1/jobs/") + kId, [outputs](const auto&, httplib::Response& res) {
      const Json job = {{"id", kId}, {"state", "done"}, {"outputs", outputs}};
      res.set_content(job.dump(), "application/json");
    });
    server_.Get(R"(/v1/jobs/[0-9a-f]{16}/.*)", [](const auto&, httplib::Response& res) {
      res.set_content("pwned", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~HostileService() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

std::vector<float> random_values(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

}  // namespace

TEST(ServiceClient, FetchWritesOnlyTheOutputsIndimKnows) {
  test::TempDir dir;
  const std::string cli = std::string("INDIM_TOKEN=") + test::kToken + " " + INDIM_CLI_PATH;
  for (const std::string& bad : {std::string("../escape.json"), dir / "absolute.json",
                                 std::string("sub/report.json"), std::string("notes.txt")}) {
    HostileService s({{"report.json", "x"}, {bad, "x"}, {"matrices.csv", "x"}});
    const std::string out = dir / "out";
    const auto r = test::run_command(cli + " jobs fetch " + kId + " --server " + s.url() +
                                     " --out " + out + " 2>&1");
    EXPECT_EQ(r.rc, 3) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("an output called \"" + bad + "\", which is none of indim's"),
              std::string::npos)
        << r.out;
    EXPECT_FALSE(fs::exists(dir / "escape.json"));
    EXPECT_FALSE(fs::exists(dir / "absolute.json"));
    EXPECT_FALSE(fs::exists(out + "/report.json")) << "nothing at all was written";
  }
  HostileService fair({{"report.json", "x"}, {"matrices.csv", "x"}});
  const auto ok = test::run_command(cli + " jobs fetch " + kId + " --server " + fair.url() +
                                    " --out " + (dir / "fair") + " 2>&1");
  EXPECT_EQ(ok.rc, 0) << ok.out;
  EXPECT_EQ(test::read_text(dir / "fair/matrices.csv"), "pwned");
}

TEST(ServiceClient, TensorNamesThatLookLikeFormulasAreTextInTheCsvs) {
  test::TempDir dir;
  const std::vector<std::string> names = {
      "=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-3+4", "@SUM(A1)", "\tx", "plain.weight"};
  for (const char* side : {"base", "tuned"}) {
    std::vector<TensorData> tensors;
    unsigned seed = side[0] == 'b' ? 1 : 2;
    for (const auto& name : names)
      tensors.push_back(
          {name, DType::F32, {8, 6}, encode_floats(random_values(48, ++seed), DType::F32)});
    fs::create_directories(dir / ("root/" + std::string(side)));
    write_safetensors(dir / ("root/" + std::string(side) + "/model.safetensors"), tensors);
  }
  ServiceProcess s(dir / "root", dir / "state");
  ASSERT_TRUE(s.ready()) << s.log();
  const std::string cli = std::string("INDIM_TOKEN=") + test::kToken + " " + INDIM_CLI_PATH;
  const auto r =
      test::run_command(cli + " submit --server " + s.url() +
                        " base tuned --include . --k 2 --wait -q --out " + (dir / "out") + " 2>&1");
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* csv : {"matrices.csv", "vectors.csv"}) {
    const std::string text = test::read_text(dir / ("out/" + std::string(csv)));
    EXPECT_NE(text.find(",\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","), std::string::npos)
        << text;
    for (const char* cell : {",\"'+1+2\",", ",\"'-3+4\",", ",\"'@SUM(A1)\",", ",\"'\tx\","})
      EXPECT_NE(text.find(cell), std::string::npos) << csv << " " << cell << "\n" << text;
    EXPECT_NE(text.find(",plain.weight,"), std::string::npos) << text;
  }
  const Json report = Json::parse(test::read_text(dir / "out/report.json"));
  bool raw = false;
  for (const Json& m : report["matrices"])
    raw = raw || m["name"] == "=HYPERLINK(\"http://x\",\"y\")";
  EXPECT_TRUE(raw) << "report.json keeps the names as they are";
}
