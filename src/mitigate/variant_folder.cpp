#include "mitigate/variant_folder.hpp"

#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <regex>

#include "indim/error.hpp"
#include "io/file_source.hpp"

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
constexpr size_t kMaxCompanions = 10000;  // names listed in a checkpoint's folder

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

void VariantFolder::copy_in(const FileSource& files, const std::string& path,
                            const std::string& name) const {
  uint64_t size = 0;
  const Fd in = files.open_file(path, &size);
  const std::string to = (fs::path(tmp_) / name).string();
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  std::vector<char> buf(1 << 20);
  for (uint64_t done = 0; done < size;) {
    const ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(path + ": cannot read it to copy into " + tmp_);
    out.write(buf.data(), n);
    done += static_cast<uint64_t>(n);
  }
  out.flush();
  if (!out) throw Error(to + ": cannot write the copy of " + path);
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

void remove_unpublished_folders(const std::string& out_dir) {
  // Only the names VariantFolder gives (a variant's folder is <kind>-<lambda>): the temporary
  // one, and a previous folder moved aside by publish().
  static const std::regex ours(
      R"((\.(intruders|shrink|rescale)-[0-9.e+-]+\.tmp|(intruders|shrink|rescale)-[0-9.e+-]+\.old)\.[0-9]+)");
  std::error_code ec;
  for (fs::directory_iterator it(out_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!std::regex_match(name, ours) || it->is_symlink(ec) || !it->is_directory(ec)) continue;
    std::error_code gone;
    fs::remove_all(it->path(), gone);
  }
}

std::vector<std::string> companion_files(const FileSource& files, const std::string& dir,
                                         const std::set<std::string>& skip) {
  std::vector<std::string> out;
  for (const std::string& name : files.list(dir, kMaxCompanions)) {
    if (name.empty() || name[0] == '.' || skip.count(name) != 0 || is_weights(name)) continue;
    const std::string path = (fs::path(dir) / name).string();
    try {  // what is not a regular file there (a link leaving a root, a FIFO) is left behind
      if (files.kind(path) != PathKind::File) continue;
      uint64_t size = 0;
      files.open_file(path, &size);
      if (size <= kMaxCompanionBytes) out.push_back(name);
    } catch (const BadInput&) {
    }
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
