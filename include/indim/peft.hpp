// PEFT LoRA adapters: adapter_config.json plus adapter_model.safetensors, as PEFT saves them.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "indim/checkpoint.hpp"

namespace indim {

/// @brief The parts of a PEFT LoraConfig that decide the merged weights.
struct LoraConfig {
  int r = 8;
  double alpha = 8;
  bool use_rslora = false;
  bool fan_in_fan_out = false;
  bool use_dora = false;
  std::vector<std::pair<std::string, int>> rank_pattern;      ///< in file order
  std::vector<std::pair<std::string, double>> alpha_pattern;  ///< in file order
  std::vector<std::string> modules_to_save;
  std::vector<std::string> warnings;

  /// @brief Rank and alpha of a module (name without `base_model.model.`): the first pattern
  /// key k with re.match(r"(.*\.)?(k)$", name), else r / lora_alpha.
  int rank_for(const std::string& module) const;
  double alpha_for(const std::string& module) const;
  /// @brief alpha / r, or alpha / sqrt(r) with rsLoRA.
  double scale_for(const std::string& module) const;
};

/// @brief Parses adapter_config.json text. Refuses (indim::BadInput naming `path`): a peft_type
/// other than LORA, r <= 0, LoRA variants indim cannot merge (aLoRA, target_parameters,
/// layer_replication, Arrow, BD-LoRA, QALoRA and similar), and adapters trained against a
/// modified base whose conversion was not saved (init_lora_weights pissa*, olora, corda,
/// loftq, lora_ga).
LoraConfig parse_adapter_config(std::string_view text, const std::string& path);

/// @brief One adapted module: W = W0 + scale * B @ A (transposed for Conv1D, and for
/// embeddings), then DoRA's row rescaling when a magnitude vector is present.
struct LoraModule {
  std::string module;                  ///< e.g. "model.layers.0.self_attn.q_proj"
  TensorRef a;                         ///< [r, in]; embeddings: [r, vocab]
  TensorRef b;                         ///< [out, r]; embeddings: [dim, r]
  std::optional<TensorRef> magnitude;  ///< DoRA, [out]
  bool embedding = false;
  int r = 0;
  double scale = 1;
};

/// @brief An opened, validated PEFT LoRA adapter folder.
class Adapter {
 public:
  /// @brief True when `path` is a directory holding adapter_config.json (looked at through
  /// `files`; nullptr: as the path says).
  static bool is_adapter_dir(const std::string& path, const detail::FileSource* files = nullptr);
  /// @brief Opens and validates the folder, every file through `files` (nullptr: as the paths
  /// say). Throws indim::BadInput naming file, tensor, problem.
  static Adapter open(const std::string& dir, const detail::FileSource* files = nullptr);

  const std::string& path() const { return path_; }
  const LoraConfig& config() const { return config_; }
  const Checkpoint& weights() const { return weights_; }
  /// @brief Adapted modules by module name (PEFT prefix stripped).
  const std::map<std::string, LoraModule>& modules() const { return modules_; }
  /// @brief Full replacement tensors (modules_to_save, trained biases) by stripped name.
  const std::map<std::string, TensorRef>& full_tensors() const { return full_; }

 private:
  std::string path_;
  LoraConfig config_;
  Checkpoint weights_;
  std::map<std::string, LoraModule> modules_;
  std::map<std::string, TensorRef> full_;
};

}  // namespace indim
