// A POSIX ustar archive of files on disk, written through a temporary name and renamed: how the
// service hands back a folder tree (indim mitigate's variant folders) as one download.
#pragma once

#include <string>
#include <vector>

namespace indim::detail {

/// Writes `archive` holding each of `entries` (paths relative to `root`, regular files, each
/// under 8 GiB, names of at most 255 bytes), with their folders, in the order given. Throws
/// indim::Error on an I/O failure or an entry it cannot hold.
void write_tar(const std::string& archive, const std::string& root,
               const std::vector<std::string>& entries);

/// The regular files under root/`folder`, as paths relative to root, sorted.
std::vector<std::string> files_under(const std::string& root, const std::string& folder);

}  // namespace indim::detail
