// indim mitigate: the paper's intervention on intruder dimensions and its controls, written as
// checkpoints (or exact PEFT adapters) a user loads as they loaded the fine-tune.
#pragma once

#include <string>
#include <vector>

#include "indim/analyze.hpp"

namespace indim {

/// @brief What `indim mitigate BASE TUNED --out DIR` does. For each selected matrix W = W0 + dW
/// (left singular vectors, as analysed) with intruders I among its top k at eps:
/// - `intruders-L`: W_L = W + (L - 1) sum_{i in I} sigma_i u_i v_i^T (L is the fraction kept);
/// - `shrink-L`: W0 + c dW with c = ||W_L - W0||_F / ||dW||_F (a magnitude-matched uniform
///   shrink of the whole update);
/// - `rescale-L`: W_L's update scaled back to ||dW||_F.
struct MitigateOptions {
  /// The analysis: base, tuned (exactly one), k, eps (the first is used), selection, precision
  /// and compute options as `indim analyze` takes them. Its out_dir is ignored: the analysis is
  /// written to out_dir/analysis.
  AnalyzeOptions analysis;
  std::string out_dir;
  std::vector<double> lambdas{0.75};                       ///< each in [0, 1]
  std::vector<std::string> controls{"shrink", "rescale"};  ///< any of those two; empty: none
  /// PEFT adapters: "exact" (rank r plus the intruders per module), "r" (each module truncated
  /// to its own rank, as PEFT's reduce_intruder_dimension does), or a number R (truncated to R).
  std::string adapter_rank = "exact";
};

/// @brief One variant of one matrix.
struct MitigatedMatrix {
  std::string variant;  ///< "intruders", "shrink", "rescale"
  double lambda = 1;
  double factor = 1;                ///< shrink: c; rescale: ||dW|| / ||dW_L||; intruders: 1
  std::vector<double> sigma_after;  ///< ||u_i^T W_new|| for each scaled intruder i
  double update_fro = 0;            ///< ||W_new - W0||_F
  double rel_change = 0;            ///< ||W_new - W||_F / ||W||_F
  int64_t rank = 0;                 ///< adapters: the module's rank as written
  double truncation_error = 0;      ///< adapters with --adapter-rank: ||lost||_F / ||update||_F
};

/// @brief A matrix the intervention changed (it has intruders), and what each variant made of it.
struct MitigationRecord {
  std::string name, tuned_name, type;
  int layer = -1;
  std::vector<int64_t> shape;
  bool conv1d = false, embedding = false, adapter = false;
  std::vector<int> intruders;             ///< j of each scaled direction
  std::vector<double> sigma, maxcos;      ///< theirs, before
  double update_fro = 0, weight_fro = 0;  ///< ||dW||_F and ||W||_F
  int64_t rank = 0;                       ///< adapters: the module's rank before
  std::vector<MitigatedMatrix> variants;
};

struct MitigationResult {
  AnalyzeResult analysis;
  std::vector<MitigationRecord> records;
  std::vector<std::string> variant_dirs;  ///< in the order written
  std::string mitigation_json;            ///< its path
  double seconds = 0;
};

/// @brief Runs the analysis, then writes every variant folder, mitigation.json and the analysis'
/// outputs (with a mitigation section in report.html when html is asked) under out_dir, each
/// folder built under a temporary name and renamed. Throws as analyze() does.
MitigationResult mitigate(const MitigateOptions& options);

}  // namespace indim
