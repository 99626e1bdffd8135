// Small tests on file and tensor names shared by the readers and the planner.
#pragma once

#include <string>

namespace indim::detail {

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace indim::detail
