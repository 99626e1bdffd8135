#include "pipeline/steps.hpp"

#include <set>

namespace indim::detail {

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The last run of digits of `name` (at most 18 of them, so that it fits), -1 when none.
int64_t last_number(const std::string& name) {
  size_t end = name.find_last_of("0123456789");
  if (end == std::string::npos) return -1;
  size_t begin = end;
  while (begin > 0 && name[begin - 1] >= '0' && name[begin - 1] <= '9') --begin;
  if (end - begin + 1 > 18) return -1;
  return std::stoll(name.substr(begin, end - begin + 1));
}

std::string stem(std::string name) {
  for (const char* tail : {".safetensors.index.json", ".safetensors", ".json"})
    if (ends_with(name, tail)) return name.substr(0, name.size() - std::string(tail).size());
  return name;
}

}  // namespace

int64_t step_in_name(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  const std::string last = slash == std::string::npos ? p : p.substr(slash + 1);
  const bool file = stem(last) != last;
  const int64_t own = last_number(stem(last));
  if (own >= 0 || !file || slash == std::string::npos || slash == 0) return own;
  return step_in_name(p.substr(0, slash));
}

std::vector<int64_t> fine_tune_steps(const std::vector<std::string>& paths, std::string* from) {
  std::vector<int64_t> steps;
  std::set<int64_t> seen;
  for (const std::string& p : paths) {
    const int64_t s = step_in_name(p);
    if (s < 0 || !seen.insert(s).second) break;
    steps.push_back(s);
  }
  if (steps.size() == paths.size()) {
    *from = "names";
    return steps;
  }
  steps.clear();
  for (size_t i = 0; i < paths.size(); ++i) steps.push_back(static_cast<int64_t>(i));
  *from = "order";
  return steps;
}

}  // namespace indim::detail
