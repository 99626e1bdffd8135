// A progress bar on stderr, drawn only when stderr is a terminal.
#pragma once

#include <chrono>
#include <string>

namespace indim::cli {

class ProgressBar {
 public:
  ProgressBar();
  ~ProgressBar();
  void update(int done, int total, const std::string& what);
  void finish();

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace indim::cli
