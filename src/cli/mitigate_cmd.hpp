// `indim mitigate BASE TUNED --out DIR`: the intervention on intruder dimensions and its
// controls, written as checkpoints (or PEFT adapters) to evaluate.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "indim/mitigate.hpp"

namespace indim::cli {

struct MitigateCommand {
  std::vector<double> lambdas{0.75};
  std::vector<std::string> controls{"shrink", "rescale"};
  bool no_controls = false;
  std::string adapter_rank = "exact";
  std::vector<std::string> include, exclude;
  bool html = false;
  bool noise_floor = false, no_noise_floor = false;
  bool quiet = false;
  CLI::App* cmd = nullptr;
};

/// --lambda, --controls / --no-controls, --adapter-rank, --include, --exclude, --html,
/// --noise-floor / --no-noise-floor, --quiet.
void add_mitigate_options(CLI::App* cmd, MitigateCommand& c);

/// Runs it with `analysis` (base, tuned, out, compute and analysis flags already set), a
/// progress bar and Ctrl-C, and prints what was written; throws the library's errors.
int run_mitigate(const MitigateCommand& c, AnalyzeOptions analysis);

}  // namespace indim::cli
