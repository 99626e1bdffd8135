// The results stage: records in plan order with per fine-tune totals, and the files a finished
// run leaves (written to temporary names, renamed together, report.json last).
#include "pipeline/outputs.hpp"

#include <filesystem>

#include "indim/report.hpp"
#include "io/atomic_file.hpp"
#include "io/dir_lock.hpp"
#include "pipeline/steps.hpp"
#include "report/report.hpp"
#include "report/totals.hpp"

namespace fs = std::filesystem;

namespace indim::detail {

void collect_records(AnalyzeResult& res, const std::vector<std::string>& tuned_paths,
                     const std::vector<std::string>& entries, const std::vector<Side>& sides,
                     const std::map<RecordKey, MatrixResult>& records) {
  const std::vector<int64_t> steps = fine_tune_steps(tuned_paths, &res.steps_from);
  for (size_t t = 0; t < tuned_paths.size(); ++t) {
    TunedSummary sum;
    sum.path = tuned_paths[t];
    sum.step = steps[t];
    sum.eps = res.eps;
    std::vector<GroupTotals> per_eps(res.eps.size());
    for (const std::string& name : entries)
      for (Side s : sides) {
        auto it = records.find({static_cast<int>(t), name, side_name(s)});
        if (it == records.end()) continue;
        res.records.push_back(it->second);
        for (size_t i = 0; i < res.eps.size(); ++i) per_eps[i].add(it->second, res.eps[i]);
      }
    for (GroupTotals& g : per_eps) {
      g.finish();
      sum.totals.push_back(g.intruders);
      sum.sigma_share.push_back(g.sigma_share);
      sum.update_share.push_back(g.update_share);
    }
    if (!per_eps.empty()) {
      const GroupTotals& g = per_eps.front();
      sum.matrices = g.matrices;
      sum.null_directions = g.null_directions;
      sum.subspace_overlap = g.subspace_overlap;
      sum.null_maxcos = g.null_maxcos;
    }
    res.tuned.push_back(sum);
  }
}

void collect_results(AnalyzeResult& res, const AnalyzeOptions& o, const Plan& plan,
                     const RunState& state) {
  std::vector<std::string> entries;
  for (const PlanEntry& e : plan.entries) entries.push_back(e.name);
  collect_records(res, o.tuned, entries, state.sides(), state.records());
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
    HtmlOptions h{o.eps.front(), o.k, o.plot_matrices, o.plot_top, o.html_appendix};
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
