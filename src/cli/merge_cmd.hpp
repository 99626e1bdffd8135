// `indim merge`: a sharded run's output folders combined into the unsharded run's report.
#pragma once

#include <CLI/CLI.hpp>

#include "indim/shards.hpp"

namespace indim::cli {

struct MergeCommand {
  MergeOptions options;
  bool quiet = false;
  CLI::App* cmd = nullptr;
};

void add_merge_command(CLI::App& app, MergeCommand& c);
/// Merges and prints the summary; throws the library's errors, which the caller maps to exit
/// codes.
int run_merge(const MergeCommand& c);

}  // namespace indim::cli
