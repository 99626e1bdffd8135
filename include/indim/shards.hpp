// Runs past one node: a run split into shards (AnalyzeOptions::shard), each a complete output
// folder, and the merge of those folders into the report one unsharded run writes.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "indim/analyze.hpp"

namespace indim {

/// @brief Parses "I/N" (I from 0, 1 <= N <= 4096, I < N). Throws indim::UsageError.
ShardSpec parse_shard(const std::string& text);

struct MergeOptions {
  std::vector<std::string> dirs;  ///< the shards' output folders, in any order
  std::string out_dir;
  bool html = false;                       ///< also write report.html
  std::vector<std::string> plot_matrices;  ///< as AnalyzeOptions
  int plot_top = 4;
};

/// @brief Combines the outputs of every shard of one run into `out_dir`: the journal,
/// report.json, CSVs and HTML an unsharded run writes (the same records in the same order, the
/// same totals), with the timings summed and each shard's listed. Throws indim::BadInput naming
/// the folder for a missing or repeated shard, shards of different inputs or settings (plan
/// hashes differ), an unfinished or damaged shard output; indim::UsageError when `out_dir` is
/// one of the shards.
AnalyzeResult merge_shards(const MergeOptions& options);

}  // namespace indim
