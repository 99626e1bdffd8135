// One matrix through every variant: a full tensor (or a part of one) rewritten in its stored
// dtype and orientation, or an adapter's module given new factors and its rank and alpha.
#pragma once

#include <memory>
#include <vector>

#include "indim/match.hpp"
#include "indim/mitigate.hpp"
#include "indim/peft.hpp"
#include "mitigate/variant_out.hpp"

namespace indim::detail {

/// A matrix's intruders as the analysis found them: their j, sigma, maxcos and left vectors
/// (row-major [m, q], fp64).
struct KeptIntruders {
  std::vector<int> js;
  std::vector<double> sigma, maxcos, u;
  int64_t m = 0;
  int64_t q() const { return static_cast<int64_t>(js.size()); }
};

using VariantOuts = std::vector<std::unique_ptr<VariantOut>>;

/// A full tensor (`part`: a slice of a stack, or rows; empty label: whole), each variant read
/// from and written back to its folder's copy, untouched elements keeping their bytes.
MitigationRecord mitigate_tensor(const MatchedPair& p, const MatrixPart& part,
                                 const KeptIntruders& k, const std::vector<VariantSpec>& specs,
                                 VariantOuts& outs);

/// An adapter's module: its factors per variant, cut to `max_rank` (0: exact), in the stored
/// orientation with the alpha that gives their scale under `config` (rsLoRA: alpha / sqrt(rank)).
MitigationRecord mitigate_module(const MatchedPair& p, const KeptIntruders& k,
                                 const std::vector<VariantSpec>& specs, VariantOuts& outs,
                                 int64_t max_rank, const LoraConfig& config);

}  // namespace indim::detail
