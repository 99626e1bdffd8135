#include "cli/mitigate_cmd.hpp"

#include <cstdio>
#include <iostream>

#include "cli/interrupt.hpp"
#include "cli/options.hpp"
#include "cli/progress.hpp"
#include "indim/report.hpp"

namespace indim::cli {

void add_mitigate_options(CLI::App* cmd, MitigateCommand& c) {
  cmd->add_option("--lambda", c.lambdas,
                  "Fraction of each intruder's sigma kept, one folder per value (1: unchanged, 0: "
                  "removed), e.g. 0.75,0.5,0")
      ->delimiter(',')
      ->capture_default_str();
  auto* controls =
      cmd->add_option("--controls", c.controls,
                      "Controls written beside each lambda: shrink (the whole update scaled to "
                      "the same ||W - W0||), rescale (the scaled update back to ||dW||)")
          ->delimiter(',')
          ->capture_default_str()
          ->check(CLI::IsMember({"shrink", "rescale"}));
  cmd->add_flag("--no-controls", c.no_controls, "Write the intervention only")->excludes(controls);
  cmd->add_option("--adapter-rank", c.adapter_rank,
                  "PEFT adapters: exact (rank r plus the intruders per module), r (each module "
                  "cut back to its own rank, as PEFT does) or a rank R; the cut's error is "
                  "reported")
      ->capture_default_str();
  cmd->add_option("--include", c.include,
                  "Regex of base tensor names to treat (replaces the default selection)");
  cmd->add_option("--exclude", c.exclude, "Regex of base tensor names to leave as they are");
  cmd->add_flag("--html", c.html, "Also write report.html, with the mitigation section");
  auto* nf = cmd->add_flag("--noise-floor", c.noise_floor,
                           "Also measure each matrix's noise floor (default where the base is "
                           "quantised), as indim analyze does");
  cmd->add_flag("--no-noise-floor", c.no_noise_floor, "Skip the noise floor")->excludes(nf);
  cmd->add_flag("-q,--quiet", c.quiet, "No summary table");
}

int run_mitigate(const MitigateCommand& c, AnalyzeOptions analysis) {
  MitigateOptions o;
  analysis.select.include = c.include;
  analysis.select.exclude = c.exclude;
  analysis.html = c.html;
  analysis.noise_floor = noise_floor_mode(c.noise_floor, c.no_noise_floor);
  o.out_dir = analysis.out_dir;
  o.lambdas = c.lambdas;
  o.controls = c.no_controls ? std::vector<std::string>{} : c.controls;
  o.adapter_rank = c.adapter_rank;
  ProgressBar bar;
  InterruptScope interrupt;
  analysis.observer = &bar;
  analysis.cancel = &interrupt.token();
  o.analysis = std::move(analysis);
  MitigationResult r;
  try {
    r = mitigate(o);
    bar.finish();
  } catch (...) {
    bar.finish();
    throw;
  }
  if (!c.quiet) std::cout << format_summary(r.analysis, o.analysis.eps.front(), o.analysis.k);
  std::printf("\n%zu matrices with intruders at eps %s scaled; wrote %zu folders:\n",
              r.records.size(), eps_key(o.analysis.eps.front()).c_str(), r.variant_dirs.size());
  for (const auto& d : r.variant_dirs) std::printf("  %s\n", d.c_str());
  std::printf("and %s, %s%s%s\n", r.mitigation_json.c_str(), r.analysis.report_json.c_str(),
              r.analysis.report_html.empty() ? "" : ", ", r.analysis.report_html.c_str());
  return 0;
}

}  // namespace indim::cli
