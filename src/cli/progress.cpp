#include "cli/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace indim::cli {

ProgressBar::ProgressBar()
    : enabled_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::planned(int units, const UnitCost& total) {
  units_ = units;
  total_flops_ = total.flops;
  start_ = std::chrono::steady_clock::now();
}

void ProgressBar::unit_finished(const UnitEvent& unit) {
  ++done_;
  done_flops_ += unit.cost.flops;
  if (unit.resumed) resumed_flops_ += unit.cost.flops;  // no time was spent on these
  draw(unit.name);
}

void ProgressBar::show(int done, int units, double share, double eta_seconds,
                       const std::string& what) {
  done_ = done, units_ = units;
  if (units > 0) draw_line(share, eta_seconds, what);
}

void ProgressBar::draw(const std::string& what) {
  if (units_ <= 0 || total_flops_ <= 0) return;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double worked = done_flops_ - resumed_flops_;
  const double eta = worked > 0 ? secs * (total_flops_ - done_flops_) / worked : 0.0;
  draw_line(done_flops_ / total_flops_, eta, what);
}

void ProgressBar::draw_line(double share, double eta, const std::string& what) {
  if (!enabled_) return;
  constexpr int kWidth = 30;
  const int filled = std::min(kWidth, std::max(0, static_cast<int>(kWidth * share)));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string label = what.size() > 40 ? "..." + what.substr(what.size() - 37) : what;
  std::fprintf(stderr, "\r\033[K[%s%s] %d/%d  %.0fs, ~%.0fs left  %s",
               std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(), done_,
               units_, secs, eta, label.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace indim::cli
