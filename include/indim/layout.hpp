// How a model stores its weights: decided from config.json where present, else from tensor
// names (said so in `indim inspect`), never silently.
#pragma once

#include <string>
#include <vector>

#include "indim/checkpoint.hpp"

namespace indim {

/// @brief A piece of a weight analysed on its own: one expert of a 3-D stack (`slice`), and/or
/// some rows of the [out, in] matrix (one of Q, K, V or gate, up of a fused projection).
struct MatrixPart {
  std::string label;          ///< "q", "3", "3.up", ...
  int64_t slice = -1;         ///< index into a 3-D stack's first dimension
  std::vector<int64_t> rows;  ///< rows of the [out, in] matrix; empty: all
};

struct ModelLayout {
  std::string model_type;      ///< config.json's model_type, or "gpt2" inferred from names, or ""
  std::string source;          ///< "config.json", "tensor names" or "default"
  bool conv1d_family = false;  ///< transformers Conv1D ([in, out]) for c_attn/c_proj/c_fc
  // Attention geometry from config.json (0 when absent), needed to split fused QKV.
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  bool new_decoder_architecture = false, multi_query = false;  ///< Falcon
  /// @brief True when `name` is a Conv1D weight stored [in, out], analysed transposed.
  bool is_conv1d(const std::string& name) const;
  /// @brief One line for `inspect` and the report.
  std::string describe() const;
  /// @brief How a weight is cut for analysis: the experts of a 3-D stack ([E, out, in], as
  /// transformers stores fused experts) and, with `split_fused`, the Q/K/V rows of fused
  /// attention (Phi-3 qkv_proj, GPT-2 c_attn, GPT-NeoX and Falcon query_key_value, MPT Wqkv)
  /// and the gate/up halves of gate_up_proj. Empty: the whole matrix. Throws indim::BadInput
  /// when the split needs config.json numbers that are missing or do not fit the shape.
  std::vector<MatrixPart> parts(const std::string& name, const std::vector<uint64_t>& shape,
                                bool conv1d, bool split_fused) const;
};

/// @brief Reads config.json beside the checkpoint (its directory, or the file's) when present.
/// Throws indim::BadInput for a config.json that is not valid JSON.
ModelLayout detect_layout(const Checkpoint& checkpoint);

}  // namespace indim
