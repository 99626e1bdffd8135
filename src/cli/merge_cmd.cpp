#include "cli/merge_cmd.hpp"

#include <iostream>

#include "indim/report.hpp"

namespace indim::cli {

void add_merge_command(CLI::App& app, MergeCommand& c) {
  c.cmd = app.add_subcommand(
      "merge", "Combine the outputs of `analyze --shard I/N` into the unsharded run's report");
  c.cmd->add_option("dirs", c.options.dirs, "Every shard's output folder, in any order")
      ->required();
  c.cmd->add_option("--out", c.options.out_dir, "Output directory of the merged run")->required();
  c.cmd->add_flag("--html", c.options.html, "Also write report.html");
  c.cmd->add_option("--plot-matrices", c.options.plot_matrices,
                    "Regexes of matrices to draw in detail in the HTML report");
  c.cmd
      ->add_option("--plot-top", c.options.plot_top,
                   "Else the N matrices with most intruders per fine-tune")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  c.cmd->add_flag("-q,--quiet", c.quiet, "No summary table");
}

int run_merge(const MergeCommand& c) {
  const AnalyzeResult r = merge_shards(c.options);
  if (!c.quiet) std::cout << format_summary(r, r.header.eps.front(), r.header.k);
  const AnalyzeResult::ShardTime* slowest = &r.shard_times.front();
  for (const auto& s : r.shard_times)
    if (s.seconds > slowest->seconds) slowest = &s;
  std::cout << "\nmerged " << r.shard_times.size() << " shards (" << r.seconds
            << " s of work; the slowest, shard " << slowest->index << ", took " << slowest->seconds
            << " s)\nwrote " << r.report_json << ", " << r.matrices_csv << ", " << r.journal;
  if (!r.report_html.empty()) std::cout << ", " << r.report_html;
  std::cout << "\n";
  return 0;
}

}  // namespace indim::cli
