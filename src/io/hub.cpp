#include "indim/hub.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "indim/error.hpp"
#include "io/file_source.hpp"
#include "io/regular_file.hpp"
#include "plan/regex.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

// Repo names and subfolders as the hub allows them; a revision also takes "/" (refs/pr/1).
const detail::Regex& id_pattern() {
  static const detail::Regex re(
      R"(([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)((?:/[A-Za-z0-9._-]+)*)(?:@([A-Za-z0-9._/-]+))?)");
  return re;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

bool is_commit(const std::string& s) {
  return s.size() == 40 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

bool has_dot_component(const std::string& s) {
  for (size_t at = 0; at <= s.size();) {
    const size_t end = std::min(s.find('/', at), s.size());
    const std::string part = s.substr(at, end - at);
    if (part == "." || part == "..") return true;
    at = end + 1;
  }
  return false;
}

std::string download_hint(const HubModel& m) {
  return "; download it first, e.g. `huggingface-cli download " + m.repo +
         (m.revision == "main" ? "" : " --revision " + m.revision) +
         "` (indim reads the cache only and never downloads)";
}

// The commit `revision` names in `repo_dir`: itself when it is one, else refs/<revision>.
std::string commit_of(const detail::FileSource& src, const std::string& repo_dir,
                      const HubModel& m) {
  const std::string ref = (fs::path(repo_dir) / "refs" / m.revision).string();
  if (src.kind(ref) == detail::PathKind::File) {
    std::string text = detail::read_file(src, ref, 4096);
    text.erase(std::find_if(text.rbegin(), text.rend(),
                            [](char c) { return !std::isspace(static_cast<unsigned char>(c)); })
                   .base(),
               text.end());
    if (!is_commit(text)) throw BadInput(InputProblem::Malformed, ref + ": not a commit hash");
    return text;
  }
  if (is_commit(m.revision)) return m.revision;
  throw BadInput(InputProblem::NotFound, m.id + ": revision \"" + m.revision +
                                             "\" is not in the hub cache (no " + ref + ")" +
                                             download_hint(m));
}

std::vector<std::string> entries(const detail::FileSource& src, const std::string& dir) {
  std::vector<std::string> out = src.list(dir, 100000);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string hub_cache_dir() {
  if (!env("HF_HUB_CACHE").empty()) return env("HF_HUB_CACHE");
  if (!env("HUGGINGFACE_HUB_CACHE").empty()) return env("HUGGINGFACE_HUB_CACHE");
  if (!env("HF_HOME").empty()) return (fs::path(env("HF_HOME")) / "hub").string();
  if (!env("XDG_CACHE_HOME").empty())
    return (fs::path(env("XDG_CACHE_HOME")) / "huggingface" / "hub").string();
  return (fs::path(env("HOME")) / ".cache" / "huggingface" / "hub").string();
}

bool looks_like_hub_id(const std::string& arg) {
  return arg.size() < 1024 && id_pattern().full_match(arg) && !has_dot_component(arg);
}

HubModel resolve_hub_id(const std::string& id, const std::vector<std::string>& caches,
                        const detail::FileSource* files) {
  const detail::FileSource& src = detail::files_or_plain(files);
  HubModel m;
  m.id = id;
  std::string org, name, sub, rev;
  if (id.size() >= 1024 || has_dot_component(id) ||
      !id_pattern().full_match(id, {&org, &name, &sub, &rev}))
    throw BadInput(InputProblem::Malformed,
                   id.substr(0, 200) + ": not a hub id (ORG/NAME[/SUBFOLDER][@REVISION])");
  if (has_dot_component(rev) || (!rev.empty() && (rev.front() == '/' || rev.back() == '/')))
    throw BadInput(InputProblem::Malformed, id.substr(0, 200) + ": not a revision a hub repo has");
  m.repo = org + "/" + name;
  m.subfolder = sub.empty() ? "" : sub.substr(1);
  m.revision = rev.empty() ? "main" : rev;
  const std::vector<std::string> roots =
      caches.empty() ? std::vector<std::string>{hub_cache_dir()} : caches;
  std::string looked;
  for (const auto& root : roots) {
    const std::string repo_dir = (fs::path(root) / ("models--" + org + "--" + name)).string();
    looked += (looked.empty() ? "" : ", ") + repo_dir;
    if (src.kind(repo_dir) != detail::PathKind::Directory) continue;
    m.commit = commit_of(src, repo_dir, m);
    fs::path snap = fs::path(repo_dir) / "snapshots" / m.commit;
    if (!m.subfolder.empty()) snap /= m.subfolder;
    m.path = snap.string();
    const detail::PathKind kind = src.kind(m.path);
    if (kind == detail::PathKind::Missing)
      throw BadInput(InputProblem::NotFound, id + ": revision " + m.revision + " is commit " +
                                                 m.commit + ", but " + m.path +
                                                 " is not in the cache" + download_hint(m));
    if (kind == detail::PathKind::Directory) m.files = entries(src, m.path);
    return m;
  }
  throw BadInput(InputProblem::NotFound,
                 id + ": neither a local path nor in the Hugging Face hub cache (looked for " +
                     looked + ", revision " + m.revision + ")" + download_hint(m));
}

InputPath resolve_input(const std::string& arg, const std::vector<std::string>& caches,
                        const detail::FileSource* files) {
  InputPath in;
  in.path = arg;
  if (detail::files_or_plain(files).kind(arg) != detail::PathKind::Missing ||
      !looks_like_hub_id(arg))
    return in;
  in.hub = resolve_hub_id(arg, caches, files);
  in.path = in.hub->path;
  return in;
}

}  // namespace indim
