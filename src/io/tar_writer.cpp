#include "io/tar_writer.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"

namespace fs = std::filesystem;

namespace indim::detail {

namespace {

using Block = std::array<char, 512>;

void octal(char* field, size_t width, uint64_t value) {  // width includes the NUL
  std::snprintf(field, width, "%0*llo", static_cast<int>(width - 1),
                static_cast<unsigned long long>(value));
}

// A ustar header: names over 100 bytes split at a '/' into prefix (155) and name (100).
Block header(const std::string& path, uint64_t size, bool dir) {
  Block b{};
  std::string prefix, name = path;
  if (name.size() > 100) {
    const size_t cut = path.rfind('/', 155);
    if (cut == std::string::npos || path.size() - cut - 1 > 100 || cut == 0)
      throw Error(path + ": too long a name for a tar archive");
    prefix = path.substr(0, cut), name = path.substr(cut + 1);
  }
  std::memcpy(b.data(), name.data(), name.size());
  octal(b.data() + 100, 8, dir ? 0755 : 0644);
  octal(b.data() + 108, 8, 0);
  octal(b.data() + 116, 8, 0);
  octal(b.data() + 124, 12, size);
  octal(b.data() + 136, 12, 0);
  std::memset(b.data() + 148, ' ', 8);
  b[156] = dir ? '5' : '0';
  std::memcpy(b.data() + 257, "ustar", 6);
  std::memcpy(b.data() + 263, "00", 2);
  std::memcpy(b.data() + 345, prefix.data(), prefix.size());
  unsigned sum = 0;
  for (char c : b) sum += static_cast<unsigned char>(c);
  std::snprintf(b.data() + 148, 8, "%06o", sum);
  return b;
}

}  // namespace

void write_tar(const std::string& archive, const std::string& root,
               const std::vector<std::string>& entries) {
  AtomicFile out(archive);
  std::set<std::string> dirs;
  std::vector<char> buf(1 << 20);
  for (const std::string& e : entries) {
    for (fs::path d = fs::path(e).parent_path(); !d.empty(); d = d.parent_path())
      if (dirs.insert(d.string()).second) {
        const Block h = header(d.string() + "/", 0, true);
        out.write(h.data(), h.size());
      }
    const fs::path src = fs::path(root) / e;
    std::error_code ec;
    const uint64_t size = fs::file_size(src, ec);
    if (ec || size >= (8ull << 30)) throw Error(src.string() + ": cannot archive it");
    const Block h = header(e, size, false);
    out.write(h.data(), h.size());
    std::ifstream in(src, std::ios::binary);
    uint64_t left = size;
    while (left > 0 && in) {
      in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(left, buf.size())));
      const auto got = static_cast<uint64_t>(in.gcount());
      out.write(buf.data(), got);
      left -= got;
    }
    if (left > 0) throw Error(src.string() + ": changed while being archived");
    const Block pad{};
    out.write(pad.data(), (512 - size % 512) % 512);
  }
  const Block end{};
  out.write(end.data(), end.size());
  out.write(end.data(), end.size());
  out.commit();
}

std::vector<std::string> files_under(const std::string& root, const std::string& folder) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(fs::path(root) / folder, ec), end; !ec && it != end;
       it.increment(ec))
    if (it->is_regular_file(ec)) out.push_back(fs::relative(it->path(), root, ec).string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace indim::detail
