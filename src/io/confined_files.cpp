#include "io/confined_files.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

constexpr int kMaxLinks = 40;  // as the kernel's own limit on links in one resolution
constexpr int kReadFlags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;

std::deque<std::string> components(const std::string& path) {
  std::deque<std::string> out;
  for (size_t at = 0; at <= path.size();) {
    const size_t end = std::min(path.find('/', at), path.size());
    if (end > at) out.push_back(path.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

bool lexically_under(const std::string& path, const std::string& root) {
  if (root == "/") return !path.empty() && path.front() == '/';
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                          path[root.size()] == '/');
}

std::string relative_to(const std::string& path, const std::string& root) {
  return root == "/"                 ? path.substr(1)
         : path.size() > root.size() ? path.substr(root.size() + 1)
                                     : "";
}

// The target of an O_PATH descriptor of a symbolic link.
int read_link(const Fd& link, std::string& target) {
  char buf[4096];
  const ssize_t n = ::readlinkat(link.get(), "", buf, sizeof buf);
  if (n < 0) return errno;
  if (n == 0 || static_cast<size_t>(n) == sizeof buf) return ENAMETOOLONG;
  target.assign(buf, static_cast<size_t>(n));
  return 0;
}

// Opens the last component `name` of the walk (a non-directory, known as `st`) with `flags`, and
// makes sure it is still that file: the walk saw it as O_PATH, and it may have been swapped.
int reopen(const Fd& dir, const std::string& name, const struct stat& st, int flags, Fd& out) {
  Fd f(::openat(dir.get(), name.c_str(), flags | O_NOFOLLOW));
  if (f.get() < 0) return errno == ELOOP ? EAGAIN : errno;  // became a link: walk again
  struct stat now {};
  if (::fstat(f.get(), &now) != 0) return errno;
  if (now.st_dev != st.st_dev || now.st_ino != st.st_ino) return EAGAIN;
  out = std::move(f);
  return 0;
}

struct Walk {
  const std::string& root;
  std::vector<Fd> dirs;  // the directories walked down, the root first
  std::deque<std::string> todo;
  int links = 0;
};

// A link met in the walk: its target's components go first; an absolute one must lie under the
// root's path and is walked from the root.
int follow_link(Walk& w, const Fd& link) {
  if (++w.links > kMaxLinks) return ELOOP;
  std::string target;
  if (const int err = read_link(link, target)) return err;
  if (target.front() == '/') {
    if (!lexically_under(target, w.root)) return EXDEV;
    target = relative_to(target, w.root);
    w.dirs.resize(1);
  }
  const std::deque<std::string> parts = components(target);
  w.todo.insert(w.todo.begin(), parts.begin(), parts.end());
  return 0;
}

// One component at a time beneath `root_fd`: ".." never above the root, every link read and
// followed by hand. 0 or an errno (EXDEV: it leaves the root; EAGAIN: it changed under us).
int walk_beneath(int root_fd, const std::string& root, const std::string& rel, int flags, Fd& out) {
  Walk w{root, {}, components(rel)};
  w.dirs.emplace_back(::fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (w.dirs.back().get() < 0) return errno;
  while (!w.todo.empty()) {
    const std::string c = w.todo.front();
    w.todo.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      if (w.dirs.size() == 1) return EXDEV;
      w.dirs.pop_back();
      continue;
    }
    Fd f(::openat(w.dirs.back().get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (f.get() < 0 || ::fstat(f.get(), &st) != 0) return errno;
    if (S_ISLNK(st.st_mode)) {
      if (const int err = follow_link(w, f)) return err;
    } else if (S_ISDIR(st.st_mode)) {
      w.dirs.push_back(std::move(f));
    } else {
      for (const auto& rest : w.todo)
        if (rest != ".") return ENOTDIR;
      return reopen(w.dirs.back(), c, st, flags, out);
    }
  }
  Fd d(::openat(w.dirs.back().get(), ".", flags));
  if (d.get() < 0) return errno;
  out = std::move(d);
  return 0;
}

// openat2 beneath the root where the kernel has it; the walk where it has not, and for what
// openat2 refuses that the walk may allow (an absolute link that stays inside).
int open_beneath_errno(int root_fd, const std::string& root, const std::string& rel, int flags,
                       bool walk_only, Fd& out) {
#ifdef SYS_openat2
  if (!walk_only) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (int tries = 0; tries < 3; ++tries) {
      const long fd =
          ::syscall(SYS_openat2, root_fd, rel.empty() ? "." : rel.c_str(), &how, sizeof how);
      if (fd >= 0) {
        out = Fd(static_cast<int>(fd));
        return 0;
      }
      if (errno == EAGAIN || errno == EINTR) continue;  // a rename raced the lookup
      if (errno == ENOSYS || errno == EINVAL || errno == E2BIG || errno == EPERM || errno == EXDEV)
        break;
      return errno;
    }
  }
#endif
  int err = EAGAIN;
  for (int tries = 0; tries < 3 && err == EAGAIN; ++tries)
    err = walk_beneath(root_fd, root, rel, flags, out);
  return err;
}

[[noreturn]] void refuse(const std::string& path, int err) {
  if (err == EXDEV)
    throw BadInput(InputProblem::Forbidden,
                   path + ": outside the folders this service may read (its --root folders)");
  if (err == ENOENT || err == ENOTDIR)
    throw BadInput(InputProblem::NotFound, path + ": no such file or directory");
  if (err == ELOOP) throw BadInput(InputProblem::NotAFile, path + ": a loop of symbolic links");
  if (err == EAGAIN)
    throw BadInput(InputProblem::Changed, path + ": changed while being opened; try again");
  if (err == ENAMETOOLONG) throw BadInput(InputProblem::Malformed, path + ": a name too long");
  throw BadInput(path + ": cannot open: " + std::strerror(err));
}

}  // namespace

ConfinedFiles::ConfinedFiles(const std::vector<std::string>& roots) {
  for (const auto& r : roots) {
    Fd fd(::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) throw UsageError("--root " + r + ": not a directory");
    std::string root = r;
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    roots_.push_back(root);
    fds_.push_back(std::move(fd));
  }
}

int ConfinedFiles::root_of(const std::string& path) const {
  int best = -1;
  for (size_t i = 0; i < roots_.size(); ++i)
    if (lexically_under(path, roots_[i]) && (best < 0 || roots_[i].size() > roots_[best].size()))
      best = static_cast<int>(i);
  return best;
}

Fd ConfinedFiles::open_beneath(const std::string& path, int flags) const {
  if (path.empty() || path.front() != '/') refuse(path, ENOENT);
  const int root = root_of(path);
  if (root < 0) refuse(path, EXDEV);
  Fd out;
  const int err = open_beneath_errno(fds_[root].get(), roots_[root],
                                     relative_to(path, roots_[root]), flags, walk_only_, out);
  if (err != 0) refuse(path, err);
  return out;
}

ConfinedFiles::Identity ConfinedFiles::identify(const std::string& path) const {
  const Fd f = open_beneath(path, O_PATH | O_CLOEXEC);
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) refuse(path, errno);
  Identity id;
  id.kind = S_ISREG(st.st_mode)   ? PathKind::File
            : S_ISDIR(st.st_mode) ? PathKind::Directory
                                  : PathKind::Other;
  id.device = static_cast<uint64_t>(st.st_dev);
  id.inode = static_cast<uint64_t>(st.st_ino);
  return id;
}

PathKind ConfinedFiles::kind(const std::string& path) const {
  if (path.empty() || path.front() != '/') return PathKind::Missing;
  try {
    return identify(path).kind;
  } catch (const BadInput& e) {
    if (e.problem() == InputProblem::NotFound) return PathKind::Missing;
    throw;
  }
}

Fd ConfinedFiles::open_file(const std::string& path, uint64_t* size) const {
  Fd f = open_beneath(path, kReadFlags);
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) refuse(path, errno);
  if (!S_ISREG(st.st_mode)) throw BadInput(InputProblem::NotAFile, path + ": not a regular file");
  if (size != nullptr) *size = static_cast<uint64_t>(st.st_size);
  return f;
}

std::vector<std::string> ConfinedFiles::list(const std::string& dir, size_t max) const {
  return list_directory(open_beneath(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), dir, max);
}

}  // namespace indim::detail
