// The backend registry: every registered backend and algorithm is reachable from the CLI's
// names (accepted as options, listed in --help), and make_fleet builds what the entry says.
#include <gtest/gtest.h>

#include <algorithm>

#include "indim/backend.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

bool listed(const std::vector<std::string>& set, const std::string& s) {
  return std::find(set.begin(), set.end(), s) != set.end();
}

test::CommandResult cli(const std::string& args) {
  return test::run_command(std::string(INDIM_CLI_PATH) + " " + args + " 2>&1");
}

}  // namespace

TEST(Registry, EveryBackendAndAlgorithmIsACliName) {
  ASSERT_FALSE(backend_registry().empty());
  const test::CommandResult help = cli("analyze --help");
  ASSERT_EQ(help.rc, 0) << help.out;
  for (const BackendSpec& b : backend_registry()) {
    EXPECT_EQ(find_backend(b.name), &b);
    EXPECT_TRUE(listed(backend_choices(), b.name)) << b.name;
    EXPECT_NE(help.out.find(b.name + " (" + b.library + ")"), std::string::npos) << help.out;
    ASSERT_FALSE(b.algos.empty()) << b.name;
    for (const std::string& a : b.algos) {
      EXPECT_TRUE(listed(algo_choices(), a)) << a;
      EXPECT_NE(help.out.find(a + " ("), std::string::npos) << a;
    }
  }
  EXPECT_EQ(find_backend("tpu"), nullptr);
}

TEST(Registry, TheCliAcceptsEveryRegisteredPairAndRunsTheAvailableOnes) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 32, d.intermediate = 64, d.kv_dim = 16, d.layers = 1, d.vocab = 32;
  const DemoPaths p = generate_demo(dir.str(), d);
  for (const BackendSpec& b : backend_registry())
    for (const std::string& a : b.algos) {
      std::string why;
      const bool available = b.available(&why) > 0;
      const test::CommandResult r =
          cli("analyze " + p.base + " " + p.full + " --no-cache -q --backend " + b.name +
              " --algo " + a + " --out " + (dir / (b.name + "-" + a)));
      // The name pair is valid: an unavailable backend is a runtime failure that says why (a
      // usage error only where this build lacks the backend altogether).
      const int unavailable = b.device && !cuda_built() ? 1 : 3;
      EXPECT_EQ(r.rc, available ? 0 : unavailable) << b.name << " " << a << ": " << r.out;
      if (!available) EXPECT_NE(r.out.find(why), std::string::npos) << why << " | " << r.out;
    }
  EXPECT_EQ(cli("analyze " + p.base + " " + p.full + " --backend tpu --out x").rc, 1);
}

TEST(Registry, FleetsFollowTheOptions) {
  FleetOptions o;
  o.workers = 3;
  o.algo = "gesdd";
  const auto cpu = make_fleet("cpu", o, nullptr);
  ASSERT_EQ(cpu.size(), 3u);
  for (const auto& b : cpu) {
    EXPECT_EQ(b->name(), "cpu");
    EXPECT_EQ(b->algo(), "gesdd");
  }
  o.algo = "auto";
  EXPECT_EQ(make_fleet("cpu", o, nullptr).front()->algo(), find_backend("cpu")->algos.front());
  o.algo = "qr";
  EXPECT_THROW(make_fleet("auto", o, nullptr), UsageError);
  o.algo = "gesvd";
  EXPECT_THROW(make_fleet("cpu", o, nullptr), UsageError);
  std::string why;
  if (cuda_device_count(&why) == 0) {
    std::string note;
    o.algo = "auto";
    EXPECT_EQ(make_fleet("auto", o, &note).front()->name(), "cpu");
    EXPECT_NE(note.find("no usable CUDA device"), std::string::npos) << note;
    EXPECT_THROW(make_fleet("cuda", o, nullptr), Error);
  }
}
