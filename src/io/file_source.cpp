#include "io/file_source.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

class PlainFiles final : public FileSource {
 public:
  PathKind kind(const std::string& path) const override { return path_kind(path); }
  Fd open_file(const std::string& path, uint64_t* size) const override {
    return open_regular(path, size);
  }
  std::vector<std::string> list(const std::string& dir, size_t max) const override {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK));
    if (d.get() < 0)
      throw BadInput(InputProblem::NotFound,
                     dir + ": cannot list the directory: " + std::strerror(errno));
    return list_directory(std::move(d), dir, max);
  }
};

}  // namespace

const FileSource& plain_files() {
  static const PlainFiles files;
  return files;
}

std::vector<std::string> list_directory(Fd dir, const std::string& shown, size_t max) {
  DIR* d = ::fdopendir(dir.get());
  if (d == nullptr)
    throw BadInput(InputProblem::NotFound,
                   shown + ": cannot list the directory: " + std::strerror(errno));
  (void)dir.release();  // closedir closes it
  std::vector<std::string> names;
  while (names.size() < max) {
    const dirent* e = ::readdir(d);
    if (e == nullptr) break;
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

std::string read_file(const FileSource& files, const std::string& path, uint64_t max_bytes) {
  uint64_t size = 0;
  const Fd f = files.open_file(path, &size);
  return read_open_file(f, path, size, max_bytes);
}

}  // namespace indim::detail
