// `indim serve` started by a test: the real binary on a free loopback port, its stderr in a
// log file, stopped by pid within a bounded time; and an HTTP client with its token.
#pragma once

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

extern char** environ;

namespace indim::test {

constexpr const char* kToken = "test-token-0123456789abcdef";

class ServiceProcess {
 public:
  /// Starts `indim serve --root ROOT --state STATE` with the test token and `extra` flags, in
  /// `cwd` when given; ready() says whether it wrote serve.json in time.
  ServiceProcess(const std::string& root, const std::string& state,
                 std::vector<std::string> extra = {}, const std::string& cwd = "")
      : state_(state) {
    std::filesystem::create_directories(state);
    write_text(state + "/../token", std::string(kToken) + "\n");
    std::filesystem::permissions(state + "/../token", std::filesystem::perms::owner_read |
                                                          std::filesystem::perms::owner_write);
    std::vector<std::string> args = {INDIM_CLI_PATH, "serve",   "--listen", "127.0.0.1:0", "--root",
                                     root,           "--state", state,      "--backend",   "cpu"};
    // The test token, unless the test gives its tenants (--tokens).
    if (std::find(extra.begin(), extra.end(), "--tokens") == extra.end())
      args.insert(args.end(), {"--token-file", state + "/../token"});
    args.insert(args.end(), extra.begin(), extra.end());
    std::filesystem::remove(state + "/serve.json");
    log_ = state + "/../serve-" + std::to_string(++starts_) + ".log";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    wait_ready();
  }
  ~ServiceProcess() {
    if (pid_ > 0) stop(SIGKILL, std::chrono::seconds(10));
  }

  bool ready() const { return !url_.empty(); }
  const std::string& url() const { return url_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_text(log_); }

  /// Sends `sig` and waits up to `limit`; the exit code, 128 + N for signal N, -1 on timeout
  /// (then SIGKILL).
  int stop(int sig, std::chrono::seconds limit) {
    if (pid_ <= 0) return exit_code_;  // it ended already
    ::kill(pid_, sig);
    const auto until = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

  /// A client with the token (`token` "" sends none).
  std::unique_ptr<httplib::Client> client(const std::string& token = kToken) const {
    auto c = std::make_unique<httplib::Client>(url_);
    if (!token.empty()) c->set_bearer_token_auth(token);
    c->set_read_timeout(60, 0);
    return c;
  }

 private:
  void wait_ready() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (pid_ > 0 && std::chrono::steady_clock::now() < until) {
      const auto j = nlohmann::json::parse(read_text(state_ + "/serve.json"), nullptr, false);
      if (j.is_object() && j.value("pid", 0) == pid_) {
        url_ = j.value("url", "");
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  std::string state_, log_, url_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
  static inline int starts_ = 0;
};

/// The JSON of an answer (null when there is none or it is not JSON).
inline nlohmann::json body_of(const httplib::Result& r) {
  if (!r) return nullptr;
  return nlohmann::json::parse(r->body, nullptr, false);
}

}  // namespace indim::test
