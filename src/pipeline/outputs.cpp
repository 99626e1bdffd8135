// The results stage: records in plan order with per fine-tune totals, and the files a finished
// run leaves (written to temporary names, renamed together, report.json last).
#include "pipeline/outputs.hpp"

#include <filesystem>

#include "indim/report.hpp"
#include "io/atomic_file.hpp"
#include "io/dir_lock.hpp"
#include "report/report.hpp"

namespace fs = std::filesystem;

namespace indim::detail {

void collect_results(AnalyzeResult& res, const AnalyzeOptions& o, const Plan& plan,
                     const RunState& state) {
  for (size_t t = 0; t < o.tuned.size(); ++t) {
    TunedSummary sum;
    sum.path = o.tuned[t];
    sum.eps = res.eps;
    sum.totals.assign(res.eps.size(), 0);
    for (const PlanEntry& e : plan.entries)
      for (Side s : state.sides()) {
        auto it = state.records().find({static_cast<int>(t), e.name, side_name(s)});
        if (it == state.records().end()) continue;
        res.records.push_back(it->second);
        ++sum.matrices;
        sum.null_directions += it->second.null_directions;
        for (size_t i = 0; i < res.eps.size(); ++i)
          sum.totals[i] += it->second.count_at(res.eps[i]);
      }
    res.tuned.push_back(sum);
  }
  res.resumed = state.resumed();
}

void output_paths(AnalyzeResult& res, const AnalyzeOptions& o) {
  const fs::path out(o.out_dir);
  res.journal = (out / "journal.jsonl").string();
  res.report_json = (out / "report.json").string();
  res.matrices_csv = (out / "matrices.csv").string();
  res.vectors_csv = (out / "vectors.csv").string();
  if (o.html) res.report_html = (out / "report.html").string();
}

void write_outputs_locked(AnalyzeResult& res, const AnalyzeOptions& o) {
  output_paths(res, o);
  std::vector<std::pair<std::string, std::string>> outputs;
  outputs.emplace_back(res.matrices_csv, build_matrices_csv(res));
  outputs.emplace_back(res.vectors_csv, build_vectors_csv(res, o.eps.front()));
  if (o.html) {
    HtmlOptions h{o.eps.front(), o.k, o.plot_matrices, o.plot_top};
    outputs.emplace_back(res.report_html, format_html(res, h));
  }
  outputs.emplace_back(res.report_json, build_report(res, o.eps.front()).dump(2) + "\n");
  write_files_atomic(outputs);
}

}  // namespace indim::detail

namespace indim {

void write_outputs(AnalyzeResult& result, const AnalyzeOptions& options) {
  const detail::DirLock lock(options.out_dir, "indim analyze");
  detail::write_outputs_locked(result, options);
}

}  // namespace indim
