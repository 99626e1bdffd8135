// Ctrl-C on `indim analyze`: the first SIGINT lets the matrices in flight finish, exits 130
// with a journal that `--resume` completes, and writes no report; the real binary, signalled
// once its journal holds a record.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "indim/demo.hpp"
#include "test_util.hpp"

extern char** environ;

using namespace indim;

namespace {

int journal_records(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = -1;
  while (std::getline(in, line)) ++n;
  return n;
}

// Waits up to `limit` for the child; its exit code, 128 + N for signal N, or -1 on timeout
// (the child is then killed).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < until) {
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

}  // namespace

TEST(Interrupt, FirstCtrlCLeavesAResumableJournalAndExits130) {
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 256, d.intermediate = 640, d.kv_dim = 128, d.layers = 6;
  const DemoPaths p = generate_demo(dir.str(), d);
  const std::string out = dir / "out", journal = out + "/journal.jsonl";
  const std::string cli = INDIM_CLI_PATH;
  std::vector<std::string> args = {cli,           "analyze", p.base,      p.full, "--out",  out,
                                   "--no-cache",  "-q",      "--side",    "both", "--algo", "gesdd",
                                   "--precision", "fp64",    "--backend", "cpu"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, cli.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (journal_records(journal) < 1 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  ASSERT_EQ(wait_for(pid, std::chrono::seconds(60)), 130);
  const int kept = journal_records(journal);
  EXPECT_GE(kept, 2);       // whole units: both sides of each
  EXPECT_LT(kept, 2 * 42);  // stopped early: 42 matrices in all
  EXPECT_EQ(kept % 2, 0) << "a unit's sides are journalled together";
  EXPECT_FALSE(std::filesystem::exists(out + "/report.json"));

  std::string cmd;
  for (size_t i = 0; i < args.size(); ++i) cmd += (i ? " " : "") + args[i];
  const test::CommandResult r = test::run_command(cmd + " --resume 2>&1");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("(" + std::to_string(kept) + " records resumed from the journal)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(journal_records(journal), 2 * 42);
  EXPECT_TRUE(std::filesystem::exists(out + "/report.json"));
}
