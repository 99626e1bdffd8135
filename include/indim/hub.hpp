// Hugging Face model ids (ORG/NAME[/SUBFOLDER][@REVISION]) resolved offline in the local hub
// cache, wherever a checkpoint or adapter path is accepted. indim never downloads.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace indim {

namespace detail {
class FileSource;
}  // namespace detail

/// @brief What an id resolved to.
struct HubModel {
  std::string id;                  ///< as given: "meta-llama/Llama-3.1-8B@main"
  std::string repo;                ///< "meta-llama/Llama-3.1-8B"
  std::string revision;            ///< "main", a tag, or the commit as given
  std::string commit;              ///< the 40-hex snapshot
  std::string subfolder;           ///< "" or "adapters/r16"
  std::string path;                ///< snapshots/<commit>[/subfolder] in the cache
  std::vector<std::string> files;  ///< the entries of `path`, sorted
};

/// @brief The hub cache: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its older name), else
/// $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::string hub_cache_dir();

/// @brief True when `arg` has the form ORG/NAME[/SUB...][@REV] (it may still be a local path).
bool looks_like_hub_id(const std::string& arg);

/// @brief Resolves `id` in the first of `caches` that holds its repo (empty: hub_cache_dir()),
/// reading refs and listing the snapshot through `files` (nullptr: as the paths say). Throws
/// indim::BadInput (not-found) naming the folders looked in and the revision, with how to
/// download it; (malformed) for an id with characters no hub repo has.
HubModel resolve_hub_id(const std::string& id, const std::vector<std::string>& caches = {},
                        const detail::FileSource* files = nullptr);

/// @brief A checkpoint argument: a path that exists is a path; otherwise, when it looks like an
/// id, the id resolved; else the path as given (for the reader to report).
struct InputPath {
  std::string path;
  std::optional<HubModel> hub;
};
InputPath resolve_input(const std::string& arg, const std::vector<std::string>& caches = {},
                        const detail::FileSource* files = nullptr);

}  // namespace indim
