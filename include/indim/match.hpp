// Pairing base and tuned tensors by name, and choosing which pairs to analyse.
#pragma once

#include <string>
#include <vector>

#include "indim/checkpoint.hpp"
#include "indim/layout.hpp"

namespace indim {

struct LoraModule;

/// @brief Which tensors to analyse. Empty `include` means the default selection: 2-D weights
/// whose name has a layer index, excluding embeddings, lm_head and norms. `include` regexes
/// (searched anywhere in the base name) replace that rule; `exclude` regexes then remove.
struct SelectOptions {
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool split_fused = false;  ///< analyse Q/K/V and gate/up of fused projections apart
};

/// @brief A base tensor and its tuned counterpart.
struct MatchedPair {
  std::string base_name;
  std::string tuned_name;
  TensorRef base;
  TensorRef tuned;
  bool shapes_equal = true;
  bool selected = false;
  /// Set for a PEFT adapter: the tuned matrix is the base merged with this update, and `tuned`
  /// refers to its lora_B tensor. `transposed`: the base stores [in, out] (Conv1D).
  const LoraModule* lora = nullptr;
  bool transposed = false;
  /// The weight is a Conv1D stored [in, out]: both sides are transposed before analysis.
  bool conv1d = false;
  /// Pieces analysed on their own (experts of a stack, fused Q/K/V); empty: the whole matrix.
  std::vector<MatrixPart> parts;
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
/// @brief The expert index of a separately stored expert's name (the N of `experts.N.`, as
/// DeepSeek, Qwen-MoE and Mixtral's `block_sparse_moe.experts.N.` store them), or -1.
int expert_index(const std::string& name);
/// @brief Matrix type: the segments after the layer index, without a trailing `.weight`
/// (e.g. `self_attn.q_proj`); the whole name minus `.weight` when there is no layer index.
std::string matrix_type(const std::string& name);

/// @brief Pairs tensors: exact name after stripping the PEFT prefix, else with one leading
/// segment added or dropped on either side. Applies `select`. Throws indim::UsageError for an
/// invalid regex.
MatchTable match_checkpoints(const Checkpoint& base, const Checkpoint& tuned,
                             const SelectOptions& select, const ModelLayout& layout = {});

class Adapter;

/// @brief Pairs each adapted module (`<module>.weight`) and each full replacement tensor of a
/// PEFT adapter with its base tensor, by the same name rules. Throws indim::BadInput for an
/// update without a base weight, or factors that fit the base in neither orientation.
/// A square weight fits LoRA factors both ways; the layout (Conv1D or not) decides then.
MatchTable match_adapter(const Checkpoint& base, const Adapter& adapter,
                         const SelectOptions& select, const ModelLayout& layout = {});

}  // namespace indim
