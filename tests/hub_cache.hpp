// A Hugging Face hub cache laid out by a test as huggingface_hub lays it out: models--ORG--NAME
// with refs/<revision> naming a commit and snapshots/<commit>/ holding relative symbolic links
// into blobs/ (or plain copies).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "test_util.hpp"

namespace indim::test {

// Puts every file of `src` into the snapshot `commit` of `repo` under `cache`: as a blob and a
// relative link to it (`links`), or as a plain copy.
inline std::string add_hub_snapshot(const std::string& cache, const std::string& repo,
                                    const std::string& commit, const std::string& src, bool links,
                                    const std::string& sub = "") {
  std::string folder = "models--" + repo;
  folder.replace(folder.find('/'), 1, "--");
  const std::filesystem::path repo_dir = std::filesystem::path(cache) / folder;
  const std::filesystem::path snap = repo_dir / "snapshots" / commit / sub;
  std::filesystem::create_directories(snap);
  std::filesystem::create_directories(repo_dir / "blobs");
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(src)) {
    const std::string name = e.path().filename().string();
    if (!links) {
      std::filesystem::copy_file(e.path(), snap / name);
      continue;
    }
    const std::string blob = commit.substr(0, 8) + std::to_string(n++);
    std::filesystem::copy_file(e.path(), repo_dir / "blobs" / blob);
    std::filesystem::path up;
    for (size_t d = 0; d < 2 + (sub.empty() ? 0 : std::count(sub.begin(), sub.end(), '/') + 1); ++d)
      up /= "..";
    std::filesystem::create_symlink(up / "blobs" / blob, snap / name);
  }
  return repo_dir.string();
}

inline void set_hub_ref(const std::string& repo_dir, const std::string& ref,
                        const std::string& commit) {
  std::filesystem::create_directories(std::filesystem::path(repo_dir) / "refs");
  test::write_text((std::filesystem::path(repo_dir) / "refs" / ref).string(), commit + "\n");
}

}  // namespace indim::test
