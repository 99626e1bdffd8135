// Loading the tuned matrix of a pair: as stored, or the base merged with a LoRA update.
#pragma once

#include "indim/backend.hpp"
#include "indim/match.hpp"

namespace indim::detail {

/// A tensor as T [rows, cols] (its stored orientation). Throws BadInput on a non-finite value.
template <typename T>
Dense<T> load_matrix(const TensorRef& r);

/// Slice `index` of a 3-D tensor [E, rows, cols] as T [rows, cols], converting only its bytes.
template <typename T>
Dense<T> load_slice(const TensorRef& r, int64_t index);

/// The pair's LoRA factors (and DoRA magnitude) loaded for merging.
LowRankUpdate lora_update(const MatchedPair& p);
/// What names a merge in errors: "<adapter file>: module '<name>'".
std::string lora_label(const MatchedPair& p);

/// The base merged with the pair's LoRA update on the host, in its stored orientation, as
/// PEFT merges it (see LowRankUpdate). Kept in the working precision, not rounded to the
/// checkpoint's dtype.
template <typename T>
Dense<T> merge_lora(const MatchedPair& p);

}  // namespace indim::detail
