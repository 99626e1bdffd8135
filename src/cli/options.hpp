// The analysis flags `indim analyze`, `demo` and `submit` share, and their checks.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "indim/analyze.hpp"

namespace indim::cli {

/// A whole-number option in [lo, hi], refused with a message that names the option and the
/// range (CLI11's own range text does not say which option it means).
CLI::Validator in_range(const std::string& option, long long lo, long long hi);

/// What is computed and reported, as opposed to where it runs.
struct AnalysisFlags {
  int k = 10;
  std::vector<double> eps{0.5};
  std::string precision = "fp32";
  std::string side = "left";
  std::string algo = "auto";
  std::vector<std::string> include, exclude;
  bool split_fused = false;
  bool delta = false;
  bool noise_floor = false, no_noise_floor = false;
  bool no_lowrank = false;
  double lowrank_tol = 0;
  bool html = false;
  std::vector<std::string> plot_matrices;
  int plot_top = 4;
};

/// --k, --eps, --precision, --side, --algo, --plot-matrices, --plot-top.
void add_analysis_options(CLI::App* cmd, AnalysisFlags& f);
/// --include, --exclude, --split-fused, --html, --delta, --noise-floor, --no-noise-floor,
/// --no-lowrank, --lowrank-tol.
void add_selection_options(CLI::App* cmd, AnalysisFlags& f);
/// --noise-floor / --no-noise-floor as the library's mode (neither: Auto).
AnalyzeOptions::NoiseFloorMode noise_floor_mode(bool on, bool off);
/// The service's "options" object for these flags (the same names, underscored).
nlohmann::json to_job_options(const AnalysisFlags& f);

}  // namespace indim::cli
