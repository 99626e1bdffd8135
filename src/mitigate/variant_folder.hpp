// A variant's output folder, built under a hidden temporary name beside its final one and
// renamed into place when complete; the files a loader needs beside the weights are copied in.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace indim::detail {

class FileSource;

class VariantFolder {
 public:
  /// Creates "<out_dir>/.<name>.tmp.<pid>" (removing a stale one first).
  VariantFolder(const std::string& out_dir, const std::string& name);
  /// Removes the temporary folder unless publish() succeeded.
  ~VariantFolder();
  VariantFolder(VariantFolder&&) = default;
  VariantFolder(const VariantFolder&) = delete;
  VariantFolder& operator=(const VariantFolder&) = delete;

  /// The temporary folder the files go into.
  const std::string& path() const { return tmp_; }
  /// The folder it becomes.
  const std::string& final_path() const { return final_; }
  /// Copies the regular file `path`, opened through `files` (where the fine-tune's own files
  /// came from: beneath a service's root, links leaving it refused), to path()/`name`. Throws
  /// indim::BadInput when it is no regular file there, indim::Error on an I/O failure.
  void copy_in(const FileSource& files, const std::string& path, const std::string& name) const;
  /// Replaces the folder's previous contents (a former run's) by this one.
  void publish();

 private:
  std::string tmp_, final_;
  bool published_ = false;
};

/// Removes the folders a killed run left in `out_dir`, each a whole checkpoint's copy: a variant
/// not yet published (".<variant>.tmp.<pid>") or one moved aside while publishing
/// ("<variant>.old.<pid>"), variants being <kind>-<lambda>. The caller holds the folder's lock,
/// so no run writes there.
void remove_unpublished_folders(const std::string& out_dir);

/// The files beside a checkpoint or adapter in `dir` that a loader reads with it (config.json,
/// tokenizer files, generation_config.json, README.md, ...), listed and checked through `files`:
/// regular files, not hidden, not weights of any format (safetensors, PyTorch, TensorFlow,
/// Flax, GGUF, ONNX, optimizer and trainer state), not in `skip` (names), at most 256 MiB each.
std::vector<std::string> companion_files(const FileSource& files, const std::string& dir,
                                         const std::set<std::string>& skip);

/// Overwrites `n` bytes of `path` at `offset`, and reads them. Throw indim::Error on failure.
void write_at(const std::string& path, uint64_t offset, const uint8_t* data, size_t n);
std::vector<uint8_t> read_at(const std::string& path, uint64_t offset, size_t n);

}  // namespace indim::detail
