// An exclusive lock on a folder a run owns (analyze's --out, the service's --state): two runs
// writing one folder would leave the report of one beside the journal of the other.
#pragma once

#include <string>

#include "io/regular_file.hpp"

namespace indim::detail {

class DirLock {
 public:
  /// Takes an flock on "<dir>/.indim.lock" at once, writing this process's pid and `what` into
  /// it. Throws indim::Error naming the holder when another process has it. Released when
  /// destroyed (or when the process ends, however it ends).
  DirLock(const std::string& dir, const std::string& what);

  static constexpr const char* kFileName = ".indim.lock";

 private:
  Fd fd_;
};

}  // namespace indim::detail
