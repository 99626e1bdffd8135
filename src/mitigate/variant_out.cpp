#include "mitigate/variant_out.hpp"

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "io/file_source.hpp"
#include "io/regular_file.hpp"
#include "mitigate/encode.hpp"
#include "mitigate/variant_folder.hpp"

namespace fs = std::filesystem;

namespace indim::detail {

namespace {

std::string base_name(const std::string& path) { return fs::path(path).filename().string(); }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

uint64_t absolute(const TensorRef& t, uint64_t offset) {
  return t.file->header().data_start() + t.info->begin + offset;
}

// A full checkpoint: its files copied, then the changed bytes written over the copies.
class CheckpointOut final : public VariantOut {
 public:
  CheckpointOut(const std::string& out_dir, const VariantSpec& v, const Checkpoint& c)
      : folder_(out_dir, v.folder()) {
    // Every file is read where the checkpoint's came from (a service's job: beneath its root).
    const FileSource& files = files_or_plain(c.source());
    std::set<std::string> own;
    for (const auto& f : c.files()) {
      const std::string name = base_name(f->path());
      folder_.copy_in(files, f->path(), name);
      copies_[f.get()] = (fs::path(folder_.path()) / name).string();
      own.insert(name);
    }
    std::string dir = fs::path(c.files().front()->path()).parent_path().string();
    if (dir.empty()) dir = ".";
    for (const std::string& name : companion_files(files, dir, own))
      if (c.kind() == "sharded" || !ends_with(name, ".index.json"))  // another checkpoint's index
        folder_.copy_in(files, (fs::path(dir) / name).string(), name);
  }

  std::vector<uint8_t> read(const TensorRef& t, uint64_t offset, size_t n) override {
    return read_at(copies_.at(t.file), absolute(t, offset), n);
  }
  void write(const TensorRef& t, uint64_t offset, const std::vector<uint8_t>& bytes) override {
    write_at(copies_.at(t.file), absolute(t, offset), bytes.data(), bytes.size());
  }
  void set_module(const LoraModule& m, const Dense<double>*, const Dense<double>*, int64_t,
                  double) override {
    throw Error("module '" + m.module + "': a full checkpoint has no adapter modules");
  }
  void publish() override { folder_.publish(); }
  const std::string& final_path() const override { return folder_.final_path(); }

 private:
  VariantFolder folder_;
  std::map<const SafetensorsFile*, std::string> copies_;
};

// A PEFT adapter: tensors replaced in memory, then the weights and adapter_config.json written
// (or copied as they are when nothing changed).
class AdapterOut final : public VariantOut {
 public:
  AdapterOut(const std::string& out_dir, const VariantSpec& v, const Adapter& a)
      : folder_(out_dir, v.folder()), adapter_(a) {
    std::set<std::string> skip{"adapter_config.json"};
    for (const std::string& name : companion_files(files(), a.path(), skip))
      folder_.copy_in(files(), (fs::path(a.path()) / name).string(), name);
  }

  std::vector<uint8_t> read(const TensorRef& t, uint64_t offset, size_t n) override {
    auto it = replaced_.find(t.info->name);
    const uint8_t* p = it != replaced_.end() ? it->second.bytes.data() : t.file->data(*t.info);
    return std::vector<uint8_t>(p + offset, p + offset + n);
  }
  void write(const TensorRef& t, uint64_t offset, const std::vector<uint8_t>& bytes) override {
    auto it = replaced_.find(t.info->name);
    if (it == replaced_.end()) {
      const uint8_t* p = t.file->data(*t.info);
      it = replaced_
               .emplace(t.info->name,
                        TensorData{
                            t.info->name, t.info->dtype, t.info->shape, {p, p + t.info->nbytes()}})
               .first;
    }
    std::memcpy(it->second.bytes.data() + offset, bytes.data(), bytes.size());
  }
  void set_module(const LoraModule& m, const Dense<double>* a, const Dense<double>* b, int64_t rank,
                  double alpha) override {
    if (a != nullptr && b != nullptr) {
      put(m.a, *a);
      put(m.b, *b);
      ranks_.emplace_back(m.module, rank);
    }
    alphas_.emplace_back(m.module, alpha);
  }
  void publish() override {
    const bool changed = !replaced_.empty() || !alphas_.empty();
    for (const auto& f : adapter_.weights().files()) write_weights(*f, changed);
    const std::string config = (fs::path(adapter_.path()) / "adapter_config.json").string();
    if (!changed)
      folder_.copy_in(files(), config, "adapter_config.json");
    else
      write_file_atomic((fs::path(folder_.path()) / "adapter_config.json").string(),
                        patched_config(read_file(files(), config, kMaxConfigBytes)));
    folder_.publish();
  }
  const std::string& final_path() const override { return folder_.final_path(); }

 private:
  // Where the adapter's files came from (a service's job: beneath its root).
  const FileSource& files() const { return files_or_plain(adapter_.weights().source()); }

  // New factors in fp32 (fp64 when the adapter holds fp64): the update is exact in them, and
  // PEFT loads adapter weights in fp32 by default whatever their stored type.
  void put(const TensorRef& t, const Dense<double>& m) {
    const DType d = t.info->dtype == DType::F64 ? DType::F64 : DType::F32;
    replaced_[t.info->name] =
        TensorData{t.info->name,
                   d,
                   {static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols)},
                   encode_values(m.data, d)};
  }

  void write_weights(const SafetensorsFile& f, bool changed) {
    const std::string name = base_name(f.path());
    if (!changed) return folder_.copy_in(files(), f.path(), name);
    std::vector<TensorData> tensors;
    for (const TensorInfo& t : f.tensors()) {
      auto it = replaced_.find(t.name);
      if (it != replaced_.end()) {
        tensors.push_back(it->second);
      } else {
        const uint8_t* p = f.data(t);
        tensors.push_back({t.name, t.dtype, t.shape, {p, p + t.nbytes()}});
      }
    }
    write_safetensors((fs::path(folder_.path()) / name).string(), tensors, f.header().metadata);
  }

  // The module's entries first in rank_pattern and alpha_pattern: PEFT and indim take the first
  // key that matches a module, so they win over the adapter's own patterns.
  std::string patched_config(const std::string& text) const {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(text);
    auto patch = [&](const char* key, const auto& entries) {
      nlohmann::ordered_json next = nlohmann::ordered_json::object();
      for (const auto& [module, value] : entries) next[module] = value;
      if (j.contains(key) && j[key].is_object())
        for (const auto& [k, v] : j[key].items())
          if (!next.contains(k)) next[k] = v;
      j[key] = next;
    };
    patch("rank_pattern", ranks_);
    patch("alpha_pattern", alphas_);
    return j.dump(2) + "\n";
  }

  VariantFolder folder_;
  const Adapter& adapter_;
  std::map<std::string, TensorData> replaced_;
  std::vector<std::pair<std::string, int64_t>> ranks_;
  std::vector<std::pair<std::string, double>> alphas_;
};

}  // namespace

std::unique_ptr<VariantOut> make_variant_out(const std::string& out_dir, const VariantSpec& v,
                                             const TunedInput& tuned) {
  if (const Adapter* a = tuned.adapter()) return std::make_unique<AdapterOut>(out_dir, v, *a);
  return std::make_unique<CheckpointOut>(out_dir, v, tuned.checkpoint());
}

}  // namespace indim::detail
