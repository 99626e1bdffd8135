#include "indim/match.hpp"

#include <map>
#include <regex>
#include <set>

#include "indim/error.hpp"

namespace indim {

namespace {

const std::string kPeftPrefix = "base_model.model.";

std::string drop_first_segment(const std::string& name) {
  auto dot = name.find('.');
  return dot == std::string::npos ? std::string() : name.substr(dot + 1);
}

std::vector<std::regex> compile(const std::vector<std::string>& patterns, const char* flag) {
  std::vector<std::regex> out;
  for (const auto& p : patterns) {
    try {
      out.emplace_back(p, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw UsageError(std::string(flag) + " \"" + p + "\" is not a valid regex: " + e.what());
    }
  }
  return out;
}

bool any_match(const std::vector<std::regex>& rs, const std::string& s) {
  for (const auto& r : rs)
    if (std::regex_search(s, r)) return true;
  return false;
}

const std::regex& default_excluded() {
  static const std::regex r(
      R"((^|\.)(embed_tokens|embed_positions|embeddings|wte|wpe|lm_head|shared)(\.|$)|norm|(^|\.)ln_)",
      std::regex::ECMAScript | std::regex::icase);
  return r;
}

void select_pair(MatchedPair& p, const std::vector<std::regex>& inc,
                 const std::vector<std::regex>& exc) {
  const TensorInfo& info = *p.base.info;
  if (info.shape.size() != 2) {
    p.reason = std::to_string(info.shape.size()) + "-D tensor";
  } else if (!inc.empty()) {
    p.selected = any_match(inc, p.base_name);
    p.reason = p.selected ? "matches --include" : "no --include matches";
  } else if (std::regex_search(p.base_name, default_excluded())) {
    p.reason = "embedding, head or norm";
  } else if (layer_index(p.base_name) < 0) {
    p.reason = "outside the layer blocks";
  } else {
    p.selected = true;
    p.reason = "2-D layer weight";
  }
  if (p.selected && any_match(exc, p.base_name)) {
    p.selected = false;
    p.reason = "matches --exclude";
  }
}

}  // namespace

std::string strip_peft_prefix(const std::string& name) {
  return name.rfind(kPeftPrefix, 0) == 0 ? name.substr(kPeftPrefix.size()) : name;
}

int layer_index(const std::string& name) {
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    const std::string seg = name.substr(start, dot - start);
    if (!seg.empty() && seg.size() < 9 && seg.find_first_not_of("0123456789") == std::string::npos)
      return std::stoi(seg);
    start = dot + 1;
  }
  return -1;
}

std::string matrix_type(const std::string& name) {
  std::string n = name;
  const std::string w = ".weight";
  if (n.size() > w.size() && n.compare(n.size() - w.size(), w.size(), w) == 0)
    n.resize(n.size() - w.size());
  const int layer = layer_index(n);
  if (layer < 0) return n;
  const std::string key = "." + std::to_string(layer) + ".";
  auto at = n.find(key);
  if (at != std::string::npos) return n.substr(at + key.size());
  if (n.rfind(std::to_string(layer) + ".", 0) == 0) return n.substr(key.size() - 1);
  return n;
}

MatchTable match_checkpoints(const Checkpoint& base, const Checkpoint& tuned,
                             const SelectOptions& select) {
  const auto inc = compile(select.include, "--include");
  const auto exc = compile(select.exclude, "--exclude");

  // Base names by their PEFT-stripped form, and by that form minus its first segment.
  std::map<std::string, std::string> base_by_name, base_by_tail;
  for (const auto& [name, _] : base.tensors()) {
    const std::string n = strip_peft_prefix(name);
    base_by_name.emplace(n, name);
    std::string tail = drop_first_segment(n);
    if (!tail.empty()) base_by_tail.emplace(tail, name);
  }
  std::map<std::string, std::string> tuned_for_base;  // base name -> tuned name
  MatchTable table;
  for (const auto& [tname, _] : tuned.tensors()) {
    const std::string n = strip_peft_prefix(tname);
    std::string found;
    auto try_map = [&](const std::map<std::string, std::string>& m, const std::string& key) {
      auto it = key.empty() ? m.end() : m.find(key);
      if (found.empty() && it != m.end() && !tuned_for_base.count(it->second)) found = it->second;
    };
    try_map(base_by_name, n);                      // same name
    try_map(base_by_name, drop_first_segment(n));  // tuned has one more leading segment
    try_map(base_by_tail, n);                      // base has one more leading segment
    if (found.empty())
      table.tuned_only.push_back(tname);
    else
      tuned_for_base[found] = tname;
  }
  for (const auto& [bname, bref] : base.tensors()) {
    auto it = tuned_for_base.find(bname);
    if (it == tuned_for_base.end()) {
      table.base_only.push_back(bname);
      continue;
    }
    MatchedPair p;
    p.base_name = bname;
    p.tuned_name = it->second;
    p.base = bref;
    p.tuned = *tuned.find(it->second);
    p.shapes_equal = p.base.info->shape == p.tuned.info->shape;
    select_pair(p, inc, exc);
    table.pairs.push_back(std::move(p));
  }
  return table;
}

}  // namespace indim
