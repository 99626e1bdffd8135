#include "cli/registry_help.hpp"

#include "indim/backend.hpp"

namespace indim::cli {

std::string backends_help() {
  std::string s;
  for (const auto& b : backend_registry())
    s += (s.empty() ? "" : ", ") + b.name + " (" + b.library + ")";
  return s + "; auto: the first of them that is available";
}

std::string algos_help() {
  std::string s;
  for (const std::string& a : algo_choices()) {
    if (a == "auto") continue;
    std::string on;
    bool default_somewhere = false;
    for (const auto& b : backend_registry())
      for (size_t i = 0; i < b.algos.size(); ++i)
        if (b.algos[i] == a) on += (on.empty() ? "" : ", ") + b.name, default_somewhere |= i == 0;
    s += (s.empty() ? "" : ", ") + a + " (" + on + (default_somewhere ? "; the default" : "") + ")";
  }
  return s;
}

}  // namespace indim::cli
