#include "io/atomic_file.hpp"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>

#include "indim/error.hpp"

namespace indim::detail {

namespace {
// Unique among every process that writes into a folder, also across the nodes of a cluster that
// share it (shards writing one cache): host, pid, a counter and a random part.
std::string temporary_name(const std::string& path) {
  static std::atomic<unsigned long> counter{0};
  static const std::string host = [] {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return std::string("host");
    std::string h(name);
    for (char& c : h)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') c = '_';
    return h.substr(0, 64);
  }();
  static const unsigned salt = std::random_device{}();
  return path + ".tmp." + host + "." + std::to_string(::getpid()) + "." +
         std::to_string(counter++) + "." + std::to_string(salt);
}
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(temporary_name(path_)) {
  f_ = std::fopen(tmp_.c_str(), "wbx");  // x: never follow or reuse a name someone else made
  if (f_ == nullptr) throw Error(path_ + ": cannot write: " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (f_ != nullptr) std::fclose(f_);
  if (!done_) std::remove(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  if (n != 0 && std::fwrite(data, 1, n, f_) != n)
    throw Error(path_ + ": write failed: " + std::strerror(errno));
}

void AtomicFile::finish() {
  if (f_ == nullptr) return;
  if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
    throw Error(path_ + ": write failed: " + std::strerror(errno));
  int rc = std::fclose(f_);
  f_ = nullptr;
  if (rc != 0) throw Error(path_ + ": close failed: " + std::strerror(errno));
}

void AtomicFile::publish() {
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error(path_ + ": rename failed: " + std::strerror(errno));
  done_ = true;
}

void AtomicFile::commit() {
  finish();
  publish();
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::unique_ptr<AtomicFile>> out;
  for (const auto& [path, content] : files) {
    out.push_back(std::make_unique<AtomicFile>(path));
    out.back()->write(content);
    out.back()->finish();
  }
  for (auto& f : out) f->publish();
}

}  // namespace indim::detail
