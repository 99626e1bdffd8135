#include "indim/checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "io/file_source.hpp"
#include "io/json_strict.hpp"
#include "io/names.hpp"
#include "io/quant_store.hpp"
#include "io/regular_file.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

constexpr size_t kMaxDirectoryEntries = 1000000;  // entries of a checkpoint folder read at most

bool present(const detail::FileSource& src, const fs::path& p) {
  return src.kind(p.string()) != detail::PathKind::Missing;
}

// Beside a shard index, a .safetensors file the index does not name would be silently ignored:
// refuse the directory as ambiguous (checked once the index itself has been read and validated).
void refuse_unlisted(const detail::FileSource& src, const std::string& dir,
                     const std::string& index,
                     const std::map<std::string, std::string>& weight_map) {
  std::set<std::string> listed;
  for (const auto& [tensor, shard] : weight_map) listed.insert(shard);
  std::vector<std::string> extra;
  for (const auto& name : src.list(dir, kMaxDirectoryEntries))
    if (detail::ends_with(name, ".safetensors") && !listed.count(name))
      extra.push_back((fs::path(dir) / name).string());
  std::sort(extra.begin(), extra.end());
  if (!extra.empty())
    throw BadInput(InputProblem::Ambiguous,
                   dir + ": ambiguous: holds the shard index " + index + " and " +
                       detail::shown_name(extra[0]) + ", which the index does not list" +
                       (extra.size() > 1 ? " (and " + std::to_string(extra.size() - 1) + " more)"
                                         : std::string()) +
                       "; name the index or the file to analyse");
}

// A file the reader would take must have a name report.json can hold.
void check_utf8(const std::string& dir, const std::string& name) {
  if (!detail::is_utf8(name))
    throw BadInput(
        InputProblem::Malformed,
        dir + "/" + detail::shown_name(name) +
            ": the file name is not UTF-8, which indim's reports cannot hold; rename it");
}

// Finds the checkpoint file inside a directory: the one index, else the one safetensors file.
std::string resolve_directory(const detail::FileSource& src, const std::string& dir) {
  std::vector<std::string> indexes, files;
  for (const auto& name : src.list(dir, kMaxDirectoryEntries)) {
    const bool index = detail::ends_with(name, ".safetensors.index.json");
    if (!index && !detail::ends_with(name, ".safetensors")) continue;
    check_utf8(dir, name);
    (index ? indexes : files).push_back((fs::path(dir) / name).string());
  }
  std::sort(indexes.begin(), indexes.end());
  std::sort(files.begin(), files.end());
  if (present(src, fs::path(dir) / "adapter_config.json"))
    throw BadInput(InputProblem::Ambiguous,
                   dir +
                       ": this is a PEFT adapter folder (adapter_config.json); an adapter is a "
                       "fine-tune: give it as TUNED, after the base checkpoint it was trained on");
  if (indexes.size() > 1)
    throw BadInput(InputProblem::Ambiguous, dir + ": holds " + std::to_string(indexes.size()) +
                                                " shard indexes; name the one to use");
  if (indexes.size() == 1) return indexes[0];
  if (files.size() == 1) return files[0];
  if (files.empty()) {
    for (const char* legacy : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
      if (present(src, fs::path(dir) / legacy))
        throw BadInput(
            InputProblem::Ambiguous,
            dir + ": holds " + legacy +
                " (PyTorch pickle), which indim does not read; convert it to safetensors");
    throw BadInput(InputProblem::Ambiguous, dir + ": no .safetensors file or shard index found");
  }
  throw BadInput(InputProblem::Ambiguous,
                 dir + ": holds " + std::to_string(files.size()) +
                     " .safetensors files but no *.safetensors.index.json; name the file to use");
}

void check_shard_name(const std::string& index, const std::string& tensor,
                      const std::string& shard) {
  if (shard.empty() || shard.find('/') != std::string::npos ||
      shard.find('\\') != std::string::npos || shard == "." || shard == "..")
    throw BadInput(InputProblem::Malformed,
                   index + ": tensor '" + tensor + "': shard path \"" + shard +
                       "\" must be a plain file name in the index's directory");
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& path, const detail::FileSource* files) {
  const detail::FileSource& src = detail::files_or_plain(files);
  const detail::PathKind kind = src.kind(path);
  if (kind == detail::PathKind::Missing)
    throw BadInput(InputProblem::NotFound, path + ": no such file or directory");
  std::string file = kind == detail::PathKind::Directory ? resolve_directory(src, path) : path;
  Checkpoint c;
  c.path_ = path;
  c.source_ = files;
  if (!detail::ends_with(file, ".index.json")) {
    c.kind_ = "safetensors";
    c.files_.push_back(SafetensorsFile::open(file, files));
    for (const auto& t : c.files_[0]->tensors()) c.tensors_[t.name] = {c.files_[0].get(), &t};
    c.pair_scales();
    return c;
  }

  c.kind_ = "sharded";
  const auto weight_map =
      parse_shard_index(detail::read_file(src, file, detail::kMaxShardIndexBytes), file);
  const fs::path dir = fs::path(file).parent_path();
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [tensor, shard] : weight_map) {
    auto it = shard_of_file.find(shard);
    if (it == shard_of_file.end()) {
      const fs::path sp = dir / shard;
      if (!present(src, sp))
        throw BadInput(InputProblem::Malformed,
                       file + ": tensor '" + tensor + "': shard " + shard + " does not exist");
      c.files_.push_back(SafetensorsFile::open(sp.string(), files));
      it = shard_of_file.emplace(shard, c.files_.size() - 1).first;
    }
    const SafetensorsFile* sf = c.files_[it->second].get();
    const TensorInfo* info = sf->find(tensor);
    if (info == nullptr)
      throw BadInput(InputProblem::Malformed, file + ": tensor '" + tensor + "' is listed in " +
                                                  shard + ", which does not contain it");
    c.tensors_[tensor] = {sf, info, nullptr};
  }
  if (kind == detail::PathKind::Directory) refuse_unlisted(src, path, file, weight_map);
  // A tensor stored in two shards is ambiguous even if the index names only one of them.
  std::map<std::string, std::string> seen;
  for (const auto& f : c.files_)
    for (const auto& t : f->tensors()) {
      auto [it, fresh] = seen.emplace(t.name, f->path());
      if (!fresh)
        throw BadInput(InputProblem::Malformed, file + ": tensor '" + t.name +
                                                    "' is stored in two shards: " + it->second +
                                                    " and " + f->path());
    }
  c.pair_scales();
  return c;
}

std::map<std::string, std::string> parse_shard_index(std::string_view text,
                                                     const std::string& path) {
  nlohmann::json j = detail::parse_json_strict(text, path);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw BadInput(InputProblem::Malformed, path + ": no \"weight_map\" object");
  std::map<std::string, std::string> out;
  for (const auto& [tensor, shard_v] : j["weight_map"].items()) {
    if (!shard_v.is_string())
      throw BadInput(InputProblem::Malformed,
                     path + ": tensor '" + tensor + "': weight_map value is not a string");
    const std::string shard = shard_v.get<std::string>();
    check_shard_name(path, tensor, shard);
    out[tensor] = shard;
  }
  return out;
}

const TensorRef* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->file_size();
  return n;
}

std::vector<std::string> Checkpoint::warnings() const {
  std::vector<std::string> w;
  for (const auto& f : files_)
    w.insert(w.end(), f->header().warnings.begin(), f->header().warnings.end());
  if (quant_) w.insert(w.end(), quant_->warnings.begin(), quant_->warnings.end());
  return w;
}

void write_shard_index(const std::string& path,
                       const std::map<std::string, std::string>& weight_map, uint64_t total_size) {
  nlohmann::json j = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  detail::write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace indim
