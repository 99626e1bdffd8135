// `indim bench`: backends and algorithms side by side on generated matrices.
#pragma once

#include <string>
#include <vector>

namespace indim::cli {

struct BenchArgs {
  std::vector<std::string> shapes{"4096x4096", "11008x4096", "4096x11008"};
  std::vector<std::string> runs{"cpu:gesdd", "cuda:gram64", "cuda:gesvd"};
  std::string precision = "fp32";
  std::string reference = "cpu";  ///< cpu (fp64 gesdd), cuda (fp64 gram64) or none
  int k = 10;
  int reps = 1;
  std::string json;  ///< also write the rows here
};

/// Runs the benchmark and prints a table; returns the exit code.
int run_bench(const BenchArgs& args);

}  // namespace indim::cli
