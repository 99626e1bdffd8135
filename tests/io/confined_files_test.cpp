// Files opened beneath a root's descriptor: by openat2, and by the component walk kernels
// without it use. Both must agree: links that stay inside work, anything that leaves the root
// is refused the same way whatever it points at.
#include "io/confined_files.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;
using detail::ConfinedFiles;
using detail::PathKind;
namespace fs = std::filesystem;

namespace {

InputProblem problem_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const BadInput& e) {
    return e.problem();
  }
  return InputProblem::Other;
}

class Confined : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    root_ = fs::canonical(dir_.str()).string() + "/root";
    out_ = fs::canonical(dir_.str()).string() + "/outside";
    fs::create_directories(root_ + "/d");
    fs::create_directories(out_);
    test::write_text(root_ + "/a.txt", "a");
    test::write_text(root_ + "/d/b.txt", "bb");
    test::write_text(out_ + "/s", "secret");
    fs::create_symlink("d/b.txt", root_ + "/rel-in");
    fs::create_symlink(root_ + "/d/b.txt", root_ + "/abs-in");
    fs::create_symlink("../a.txt", root_ + "/d/up-in");
    fs::create_symlink("../outside/s", root_ + "/rel-out");
    fs::create_symlink(out_ + "/s", root_ + "/abs-out");
    fs::create_symlink(out_ + "/missing", root_ + "/abs-out-missing");
    fs::create_symlink("/proc/self/fd/0", root_ + "/proc-fd");
    fs::create_directory_symlink(out_, root_ + "/dir-out");
    fs::create_symlink("loop2", root_ + "/loop1");
    fs::create_symlink("loop1", root_ + "/loop2");
    ::mkfifo((root_ + "/fifo").c_str(), 0600);
  }
  ConfinedFiles files() const {
    ConfinedFiles f({root_});
    f.walk_only(GetParam());
    return f;
  }
  test::TempDir dir_;
  std::string root_, out_;
};

}  // namespace

TEST_P(Confined, OpensWhatStaysInsideThroughAnyLink) {
  const ConfinedFiles f = files();
  for (const std::string name : {"a.txt", "d/b.txt", "rel-in", "abs-in", "d/up-in", "d/../a.txt"}) {
    uint64_t size = 0;
    const auto fd = f.open_file(root_ + "/" + name, &size);
    EXPECT_GE(fd.get(), 0) << name;
    EXPECT_EQ(size, name == "a.txt" || name == "d/up-in" || name == "d/../a.txt" ? 1u : 2u) << name;
  }
  EXPECT_EQ(detail::read_file(f, root_ + "/abs-in", 100), "bb");
  EXPECT_EQ(f.kind(root_), PathKind::Directory);
  EXPECT_EQ(f.kind(root_ + "/d"), PathKind::Directory);
  EXPECT_EQ(f.kind(root_ + "/none"), PathKind::Missing);
  EXPECT_EQ(f.kind("relative/path"), PathKind::Missing);
  const auto a = f.identify(root_ + "/rel-in"), b = f.identify(root_ + "/d/b.txt");
  EXPECT_EQ(a.inode, b.inode);
  auto names = f.list(root_ + "/d", 100);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"b.txt", "up-in"}));
}

TEST_P(Confined, RefusesEverythingThatLeavesTheRootAlike) {
  const ConfinedFiles f = files();
  for (const std::string path :
       {root_ + "/rel-out", root_ + "/abs-out", root_ + "/abs-out-missing", root_ + "/proc-fd",
        root_ + "/dir-out/s", root_ + "/dir-out/missing", root_ + "/../outside/s",
        root_ + "/d/../../outside/s", out_ + "/s", std::string("/etc/passwd")}) {
    EXPECT_EQ(problem_of([&] { f.open_file(path); }), InputProblem::Forbidden) << path;
    EXPECT_EQ(problem_of([&] { f.kind(path); }), InputProblem::Forbidden) << path;
    try {
      f.open_file(path);
    } catch (const BadInput& e) {
      EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos);
      EXPECT_EQ(std::string(e.what()).find("/proc/self"), std::string::npos);
    }
  }
  EXPECT_EQ(problem_of([&] { f.list(root_ + "/dir-out", 10); }), InputProblem::Forbidden);
}

TEST_P(Confined, SaysWhatElseIsWrong) {
  const ConfinedFiles f = files();
  EXPECT_EQ(problem_of([&] { f.open_file(root_ + "/none"); }), InputProblem::NotFound);
  EXPECT_EQ(problem_of([&] { f.open_file(root_ + "/a.txt/x"); }), InputProblem::NotFound);
  EXPECT_EQ(problem_of([&] { f.open_file(root_ + "/loop1"); }), InputProblem::NotAFile);
  EXPECT_EQ(problem_of([&] { f.open_file(root_ + "/fifo"); }), InputProblem::NotAFile);
  EXPECT_EQ(problem_of([&] { f.open_file(root_ + "/d"); }), InputProblem::NotAFile);
  EXPECT_THROW(ConfinedFiles({dir_ / "missing"}), UsageError);
}

INSTANTIATE_TEST_SUITE_P(Openat2AndWalk, Confined, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Walk" : "Openat2"; });
