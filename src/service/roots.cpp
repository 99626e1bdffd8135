#include "service/roots.hpp"

#include <filesystem>

#include "indim/error.hpp"
#include "indim/hub.hpp"
#include "io/json_strict.hpp"
#include "service/api_error.hpp"

namespace fs = std::filesystem;

namespace indim::service {

namespace {

constexpr uint64_t kMaxIndexBytes = 64ull << 20;  // as the checkpoint reader's index cap
constexpr size_t kMaxEntries = 100000;            // entries of one checkpoint folder looked at

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

[[noreturn]] void forbid(const std::string& shown, const std::string& why) {
  throw ApiError(403, shown + ": " + why + "; the service reads only under its --root folders");
}

}  // namespace

RootSet::RootSet(const std::vector<std::string>& roots) {
  for (const auto& r : roots) {
    std::error_code ec;
    const fs::path c = fs::canonical(r, ec);
    if (ec || !fs::is_directory(c)) throw UsageError("--root " + r + ": not a directory");
    roots_.push_back(c.string() == "/" ? "" : c.string());
    shown_.push_back(c.string());
  }
  if (roots_.empty()) throw UsageError("serve needs at least one --root folder");
}

bool RootSet::inside(const std::string& resolved) const {
  for (const auto& r : roots_)
    if (resolved.size() > r.size() && resolved.compare(0, r.size(), r) == 0 &&
        resolved[r.size()] == '/')
      return true;
  return false;
}

// A file read through a request path: it must resolve inside a root (a missing one is the
// reader's to report).
void RootSet::check_file(const std::string& shown, const std::string& file) const {
  std::error_code ec;
  const fs::path c = fs::canonical(file, ec);
  if (ec) return;
  if (!inside(c.string()))
    forbid(shown, file + " resolves to " + c.string() + ", outside the roots");
}

// Every shard a shard index lists.
void RootSet::check_index(const std::string& shown, const std::string& index) const {
  nlohmann::json j;
  try {
    j = detail::read_json_file(index, kMaxIndexBytes);
  } catch (const BadInput&) {
    return;  // the checkpoint reader reports a malformed index with its own message
  }
  if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object()) return;
  const fs::path dir = fs::path(index).parent_path();
  for (const auto& [tensor, shard] : j.at("weight_map").items())
    if (shard.is_string()) check_file(shown, (dir / shard.get<std::string>()).string());
}

bool RootSet::is_hub_id(const std::string& path) const {
  if (fs::path(path).is_absolute() || !looks_like_hub_id(path)) return false;
  std::error_code ec;
  return !fs::exists(fs::path(shown_.front()) / path, ec);
}

std::string RootSet::analyze_arg(const std::string& path) const {
  const std::string confined = confine(path);
  return is_hub_id(path) ? path : confined;
}

std::string RootSet::confine(const std::string& path) const {
  if (is_hub_id(path)) {
    try {
      return confine(resolve_hub_id(path, shown_).path);
    } catch (const BadInput& e) {
      throw ApiError(400, e.what());
    }
  }
  const fs::path given =
      fs::path(path).is_absolute() ? fs::path(path) : fs::path(shown_.front()) / path;
  std::error_code ec;
  const fs::path c = fs::canonical(given, ec);
  if (ec) {
    if (!inside(fs::weakly_canonical(given, ec).string())) forbid(path, "outside the roots");
    throw ApiError(400, path + ": no such file or directory");
  }
  if (!inside(c.string())) forbid(path, "resolves to " + c.string() + ", outside the roots");
  if (!fs::is_directory(c, ec)) {
    if (ends_with(c.string(), ".json")) check_index(path, c.string());
    return c.string();
  }
  size_t seen = 0;
  for (fs::directory_iterator it(c, ec), end; !ec && it != end; it.increment(ec)) {
    if (++seen > kMaxEntries) throw ApiError(400, path + ": more than 100000 entries");
    const std::string entry = it->path().string();
    check_file(path, entry);
    if (ends_with(entry, ".index.json")) check_index(path, entry);
  }
  return c.string();
}

}  // namespace indim::service
