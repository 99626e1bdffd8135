// How a model stores its weights: decided from config.json where present, else from tensor
// names (said so in `indim inspect`), never silently.
#pragma once

#include <string>

#include "indim/checkpoint.hpp"

namespace indim {

struct ModelLayout {
  std::string model_type;      ///< config.json's model_type, or "gpt2" inferred from names, or ""
  std::string source;          ///< "config.json", "tensor names" or "default"
  bool conv1d_family = false;  ///< transformers Conv1D ([in, out]) for c_attn/c_proj/c_fc
  /// @brief True when `name` is a Conv1D weight stored [in, out], analysed transposed.
  bool is_conv1d(const std::string& name) const;
  /// @brief One line for `inspect` and the report.
  std::string describe() const;
};

/// @brief Reads config.json beside the checkpoint (its directory, or the file's) when present.
/// Throws indim::BadInput for a config.json that is not valid JSON.
ModelLayout detect_layout(const Checkpoint& checkpoint);

}  // namespace indim
