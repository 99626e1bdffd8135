// A progress bar on stderr, drawn only when stderr is a terminal: the CLI's observer of a run.
// The share done and the time left are by estimated cost (flops), not by count, so one large
// matrix does not make the estimate jump.
#pragma once

#include <chrono>
#include <string>

#include "indim/analyze.hpp"

namespace indim::cli {

class ProgressBar final : public RunObserver {
 public:
  ProgressBar();
  ~ProgressBar() override;
  void planned(int units, const UnitCost& total) override;
  void unit_finished(const UnitEvent& unit) override;
  /// A job on the service, drawn from the figures its events carry.
  void show(int done, int units, double share, double eta_seconds, const std::string& what);
  void finish();

 private:
  void draw(const std::string& what);
  void draw_line(double share, double eta, const std::string& what);

  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  int units_ = 0, done_ = 0;
  double total_flops_ = 0, done_flops_ = 0, resumed_flops_ = 0;
};

}  // namespace indim::cli
