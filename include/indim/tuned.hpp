// A fine-tune as the user names it: a checkpoint, or a PEFT LoRA adapter folder.
#pragma once

#include <memory>
#include <string>

#include "indim/checkpoint.hpp"
#include "indim/match.hpp"
#include "indim/peft.hpp"

namespace indim {

class TunedInput {
 public:
  /// @brief Opens an adapter folder (it holds adapter_config.json) or a checkpoint, every file
  /// through `files` (nullptr: as the paths say).
  static TunedInput open(const std::string& path, const detail::FileSource* files = nullptr);

  const std::string& path() const { return path_; }
  bool is_adapter() const { return adapter_ != nullptr; }
  /// @brief The checkpoint, or the adapter's weights file.
  const Checkpoint& checkpoint() const { return is_adapter() ? adapter_->weights() : *ckpt_; }
  const Adapter* adapter() const { return adapter_.get(); }
  /// @brief match_checkpoints or match_adapter, as fits.
  MatchTable match(const Checkpoint& base, const SelectOptions& select,
                   const ModelLayout& layout = {}) const;

 private:
  std::string path_;
  std::shared_ptr<Checkpoint> ckpt_;  // shared: pairs point into it, so it never moves
  std::shared_ptr<Adapter> adapter_;
};

}  // namespace indim
