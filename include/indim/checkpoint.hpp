// A checkpoint: one safetensors file, or a sharded set behind a `*.safetensors.index.json`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "indim/safetensors.hpp"

namespace indim {

struct QuantRef;
namespace detail {
struct QuantStore;
class FileSource;
}  // namespace detail

/// @brief A tensor of a checkpoint: the file that holds it and its header entry; for a
/// quantised weight, its scales (indim/quant.hpp), and an entry that may be the logical one
/// (an MXFP4 weight: dtype F4, shape [..., rows, cols] over its `_blocks` bytes).
struct TensorRef {
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;
  const QuantRef* quant = nullptr;
};

/// @brief An opened, validated checkpoint.
class Checkpoint {
 public:
  /// @brief Opens a `.safetensors` file, a `*.safetensors.index.json`, or a directory holding
  /// either (an index is preferred; several loose files without an index are an error), every
  /// file through `files` (nullptr: as the path says; the source must outlive the checkpoint).
  /// Throws indim::BadInput naming the file and the problem.
  static Checkpoint open(const std::string& path, const detail::FileSource* files = nullptr);

  const std::string& path() const { return path_; }
  /// @brief Where its files were opened from (nullptr: as their paths say); files read beside
  /// it (config.json) come from there too.
  const detail::FileSource* source() const { return source_; }
  /// "safetensors" or "sharded".
  const std::string& kind() const { return kind_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  /// @brief Tensors by name, as the analysis sees them: a quantised weight carries its scales,
  /// and the scale tensors themselves are set aside (scale_tensors()).
  const std::map<std::string, TensorRef>& tensors() const { return tensors_; }
  /// @brief The scale tensors paired with weights or set aside (`*_scale_inv`, `*_scale`,
  /// `*_scales`), by name: never analysed.
  const std::map<std::string, TensorRef>& scale_tensors() const;
  const TensorRef* find(const std::string& name) const;
  uint64_t total_bytes() const;
  std::vector<std::string> warnings() const;

 private:
  /// Pairs quantised weights with their scales (io/quant_pairing.cpp).
  void pair_scales();

  std::string path_, kind_;
  const detail::FileSource* source_ = nullptr;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorRef> tensors_;
  std::shared_ptr<const detail::QuantStore> quant_;
};

/// @brief Validates a shard index's text: a `weight_map` object of tensor -> shard file name,
/// each a plain name in the index's directory. Throws indim::BadInput naming `path`.
std::map<std::string, std::string> parse_shard_index(std::string_view text,
                                                     const std::string& path);

/// @brief Writes a shard index (`weight_map` tensor -> shard file name) atomically.
void write_shard_index(const std::string& path,
                       const std::map<std::string, std::string>& weight_map, uint64_t total_size);

}  // namespace indim
