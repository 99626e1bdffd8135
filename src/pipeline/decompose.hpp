// The decomposition stage: one side of a unit handed to the backend the way the plan decided
// (stored bytes, a merge on the backend, or a host matrix), and the update W - W0 (--delta).
#pragma once

#include "indim/backend.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// The base (tuned = false) or tuned side of `u`, keeping `keep` vectors (0: all). Throws
/// indim::BadInput naming the tensor for a non-finite input, or a decomposition that overflows.
Decomposition decompose_side(Backend& b, const WorkUnit& u, bool tuned, Side side, int64_t keep);

/// The tuned side of `u` against its base's decomposition `base`: for a PEFT LoRA unit the
/// exact low-rank route where it applies (options.lowrank, a whole matrix, r at most
/// lowrank_max_rank) and its certificate holds, else the full route, whose `route` then says
/// "(full route: <why>)"; any other unit as decompose_side.
Decomposition decompose_tuned(Backend& b, const WorkUnit& u, const Decomposition& base, Side side,
                              int64_t keep, const AnalyzeOptions& options);

/// A side of a unit as a host matrix [out, in] in T: as stored, or the base merged with the
/// pair's LoRA update; transposed for a Conv1D; then the part's expert and rows.
template <typename T>
Dense<T> load_side(const WorkUnit& u, bool tuned);

/// The update W - W0 of a unit: its norms, spectral norm, rank and effective rank.
MatrixResult::Delta describe_delta(Backend& b, const WorkUnit& u);

}  // namespace indim::detail
