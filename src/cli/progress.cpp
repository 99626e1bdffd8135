#include "cli/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace indim::cli {

ProgressBar::ProgressBar()
    : enabled_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int done, int total, const std::string& what) {
  if (!enabled_ || total <= 0) return;
  constexpr int kWidth = 30;
  const int filled = kWidth * done / total;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = done > 0 ? secs * (total - done) / done : 0.0;
  std::string label = what.size() > 40 ? "..." + what.substr(what.size() - 37) : what;
  std::fprintf(stderr, "\r\033[K[%s%s] %d/%d  %.0fs, ~%.0fs left  %s",
               std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(), done,
               total, secs, eta, label.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace indim::cli
