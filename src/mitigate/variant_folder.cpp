#include "mitigate/variant_folder.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "indim/error.hpp"

namespace fs = std::filesystem;

namespace indim::detail {

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Weights of any format and trainer state: a stale copy beside the new weights would be loaded
// in their place, or is useless to a loader.
bool is_weights(const std::string& name) {
  for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack",
                          ".gguf", ".onnx", ".tflite", ".npz", ".pkl"})
    if (ends_with(name, ext)) return true;
  return false;
}

constexpr uint64_t kMaxCompanionBytes = 256ull << 20;

}  // namespace

VariantFolder::VariantFolder(const std::string& out_dir, const std::string& name)
    : tmp_((fs::path(out_dir) / ("." + name + ".tmp." + std::to_string(::getpid()))).string()),
      final_((fs::path(out_dir) / name).string()) {
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  if (!fs::create_directories(tmp_, ec) || ec)
    throw Error(tmp_ + ": cannot create the folder" + (ec ? ": " + ec.message() : std::string()));
}

VariantFolder::~VariantFolder() {
  if (published_ || tmp_.empty()) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void VariantFolder::copy_in(const std::string& src, const std::string& name) const {
  std::error_code ec;
  fs::copy_file(src, fs::path(tmp_) / name, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error(src + ": cannot copy it into " + tmp_ + ": " + ec.message());
}

void VariantFolder::publish() {
  std::error_code ec;
  const std::string old = final_ + ".old." + std::to_string(::getpid());
  const bool had = fs::exists(final_, ec);
  if (had) {
    fs::remove_all(old, ec);
    fs::rename(final_, old, ec);
    if (ec) throw Error(final_ + ": cannot move the previous folder aside: " + ec.message());
  }
  fs::rename(tmp_, final_, ec);
  if (ec) throw Error(final_ + ": cannot rename " + tmp_ + " to it: " + ec.message());
  published_ = true;
  if (had) fs::remove_all(old, ec);
}

std::vector<std::string> companion_files(const std::string& dir,
                                         const std::set<std::string>& skip) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || skip.count(name) != 0 || is_weights(name)) continue;
    std::error_code e2;
    if (!fs::is_regular_file(it->path(), e2) || fs::file_size(it->path(), e2) > kMaxCompanionBytes)
      continue;
    out.push_back(name);
  }
  return out;
}

void write_at(const std::string& path, uint64_t offset, const uint8_t* data, size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
  f.flush();
  if (!f)
    throw Error(path + ": cannot write " + std::to_string(n) + " bytes at " +
                std::to_string(offset));
}

std::vector<uint8_t> read_at(const std::string& path, uint64_t offset, size_t n) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  std::vector<uint8_t> out(n);
  f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n));
  if (!f)
    throw Error(path + ": cannot read " + std::to_string(n) + " bytes at " +
                std::to_string(offset));
  return out;
}

}  // namespace indim::detail
