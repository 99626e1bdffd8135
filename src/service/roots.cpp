#include "service/roots.hpp"

#include <filesystem>
#include <set>

#include "indim/error.hpp"
#include "indim/hub.hpp"
#include "io/json_strict.hpp"
#include "io/names.hpp"
#include "service/api_error.hpp"

namespace fs = std::filesystem;

namespace indim::service {

namespace {

constexpr size_t kNameMax = 255;  // NAME_MAX: longer components no file system holds

std::vector<std::string> canonical_roots(const std::vector<std::string>& roots) {
  std::vector<std::string> out;
  for (const auto& r : roots) {
    std::error_code ec;
    const fs::path c = fs::canonical(r, ec);
    if (ec || !fs::is_directory(c, ec)) throw UsageError("--root " + r + ": not a directory");
    out.push_back(c.string());
  }
  if (out.empty()) throw UsageError("serve needs at least one --root folder");
  return out;
}

[[noreturn]] void forbid(const std::string& shown) {
  throw ApiError(403, shown + ": outside the folders this service may read (its --root folders)");
}

// What a reader error means for the request: outside (403), or a problem of the input (400).
[[noreturn]] void refuse(const std::string& shown, const BadInput& e) {
  if (e.problem() == InputProblem::Forbidden) forbid(shown);
  throw ApiError(400, e.what());
}

// A request path the file system could never hold, refused before anything is opened.
void check_request_path(const std::string& path) {
  if (path.find('\0') != std::string::npos)
    throw ApiError(400, detail::shown_name(path).substr(0, 200) + ": a path holds no NUL byte");
  for (size_t at = 0; at <= path.size();) {
    const size_t end = std::min(path.find('/', at), path.size());
    if (end - at > kNameMax)
      throw ApiError(400, path.substr(0, 200) + "...: a name of more than 255 bytes");
    at = end + 1;
  }
}

bool reader_opens(const std::string& name) {
  return detail::ends_with(name, ".safetensors") || detail::ends_with(name, ".json");
}

void spend_entry(const std::string& path, InspectBudget& budget) {
  if (budget.entries == 0)
    throw ApiError(413, path + ": checking this request would look at more than " +
                            std::to_string(InspectBudget::kEntries) +
                            " folder entries or shards, the limit of one request");
  --budget.entries;
  if (std::chrono::steady_clock::now() > budget.deadline)
    throw ApiError(413, path + ": checking this request takes more than " +
                            std::to_string(InspectBudget::kTime.count()) +
                            " s, the limit of one request");
}

}  // namespace

RootSet::RootSet(const std::vector<std::string>& roots) : files_(canonical_roots(roots)) {}

bool RootSet::is_hub_id(const std::string& path) const {
  if (fs::path(path).is_absolute() || !looks_like_hub_id(path)) return false;
  try {
    return files_.kind(roots().front() + "/" + path) == detail::PathKind::Missing;
  } catch (const BadInput& e) {
    refuse(path, e);
  }
}

std::string RootSet::analyze_arg(const std::string& path) const {
  check_request_path(path);
  if (is_hub_id(path)) return path;
  const std::string under = fs::path(path).is_absolute() ? path : roots().front() + "/" + path;
  if (files_.root_of(under) < 0) forbid(path);
  return under;
}

RootSet::Located RootSet::locate(const std::string& path) const {
  const std::string arg = analyze_arg(path);
  Located at;
  try {
    at.path = arg == path && is_hub_id(path) ? resolve_hub_id(path, roots(), &files_).path : arg;
    const detail::ConfinedFiles::Identity id = files_.identify(at.path);
    at.device = id.device, at.inode = id.inode;
    at.directory = id.kind == detail::PathKind::Directory;
  } catch (const BadInput& e) {
    if (e.problem() == InputProblem::NotFound && arg != path)
      throw ApiError(400, path + ": no such file or directory");
    refuse(path, e);
  }
  return at;
}

void RootSet::inspect(const std::string& path, const Located& where, InspectBudget& budget) const {
  try {
    if (!where.directory) {
      const std::string dir = fs::path(where.path).parent_path().string();
      inspect_entry(path, dir, "config.json", budget);  // read beside the file
      if (detail::ends_with(where.path, ".json")) inspect_index(path, where.path, budget);
      return;
    }
    for (const auto& name : files_.list(where.path, budget.entries + 1)) {
      inspect_entry(path, where.path, name, budget);
      if (detail::ends_with(name, ".index.json"))
        inspect_index(path, where.path + "/" + name, budget);
    }
  } catch (const BadInput& e) {
    refuse(path, e);
  }
}

// One file the reader may open: it must stay beneath the root, and have a name a report holds.
void RootSet::inspect_entry(const std::string& path, const std::string& dir,
                            const std::string& name, InspectBudget& budget) const {
  spend_entry(path, budget);
  if (reader_opens(name) && !detail::is_utf8(name))
    throw ApiError(400, path + ": " + dir + "/" + detail::shown_name(name) +
                            ": the file name is not UTF-8, which indim's reports cannot hold");
  try {
    files_.identify(dir + "/" + name);
  } catch (const BadInput& e) {
    if (e.problem() == InputProblem::Forbidden)
      throw ApiError(403, path + ": " + detail::shown_name(name) +
                              " leads outside the folders this service may read");
    // a dangling link or a file gone: the reader reports it when it matters
  }
}

// Every shard an index lists, as the reader will open it (a malformed index is the reader's to
// report, with its own message).
void RootSet::inspect_index(const std::string& path, const std::string& index,
                            InspectBudget& budget) const {
  nlohmann::json j;
  try {
    const std::string text = detail::read_file(files_, index, budget.bytes);
    budget.bytes -= text.size();
    j = detail::parse_json_strict(text, index);
  } catch (const BadInput& e) {
    if (e.problem() == InputProblem::TooLarge)
      throw ApiError(413, path + ": checking this request would read more than " +
                              std::to_string(InspectBudget::kBytes >> 20) +
                              " MiB of shard indexes, the limit of one request");
    if (e.problem() == InputProblem::Forbidden) throw;
    return;
  }
  if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object()) return;
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : j.at("weight_map").items())
    if (shard.is_string()) shards.insert(shard.get<std::string>());
  const std::string dir = fs::path(index).parent_path().string();
  for (const auto& shard : shards) inspect_entry(path, dir, shard, budget);
}

}  // namespace indim::service
