// Pairing base and tuned tensors by name, and choosing which pairs to analyse.
#pragma once

#include <string>
#include <vector>

#include "indim/checkpoint.hpp"

namespace indim {

/// @brief Which tensors to analyse. Empty `include` means the default selection: 2-D weights
/// whose name has a layer index, excluding embeddings, lm_head and norms. `include` regexes
/// (searched anywhere in the base name) replace that rule; `exclude` regexes then remove.
struct SelectOptions {
  std::vector<std::string> include;
  std::vector<std::string> exclude;
};

/// @brief A base tensor and its tuned counterpart.
struct MatchedPair {
  std::string base_name;
  std::string tuned_name;
  TensorRef base;
  TensorRef tuned;
  bool shapes_equal = true;
  bool selected = false;
  std::string reason;  ///< why it is or is not selected
};

/// @brief The outcome of matching one tuned checkpoint against the base.
struct MatchTable {
  std::vector<MatchedPair> pairs;  ///< in the base's name order
  std::vector<std::string> base_only;
  std::vector<std::string> tuned_only;
};

/// @brief Strips a PEFT `base_model.model.` prefix.
std::string strip_peft_prefix(const std::string& name);
/// @brief Layer index of a name (its first all-digit segment), or -1.
int layer_index(const std::string& name);
/// @brief Matrix type: the segments after the layer index, without a trailing `.weight`
/// (e.g. `self_attn.q_proj`); the whole name minus `.weight` when there is no layer index.
std::string matrix_type(const std::string& name);

/// @brief Pairs tensors: exact name after stripping the PEFT prefix, else with one leading
/// segment added or dropped on either side. Applies `select`. Throws indim::UsageError for an
/// invalid regex.
MatchTable match_checkpoints(const Checkpoint& base, const Checkpoint& tuned,
                             const SelectOptions& select);

}  // namespace indim
