#include "indim/match.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "indim/error.hpp"
#include "indim/peft.hpp"
#include "plan/regex.hpp"

namespace indim {

namespace {

const std::string kPeftPrefix = "base_model.model.";

std::string drop_first_segment(const std::string& name) {
  auto dot = name.find('.');
  return dot == std::string::npos ? std::string() : name.substr(dot + 1);
}

using detail::Regex;

const Regex& default_excluded() {
  static const Regex r(
      R"((^|\.)(embed_tokens|embed_positions|embeddings|wte|wpe|lm_head|shared)(\.|$)|norm|(^|\.)ln_)",
      /*case_insensitive=*/true);
  return r;
}

void select_pair(MatchedPair& p, const std::vector<Regex>& inc, const std::vector<Regex>& exc) {
  const TensorInfo& info = *p.base.info;
  const bool stack = info.shape.size() == 3 && p.base_name.find("experts") != std::string::npos;
  if (info.shape.size() != 2 && !stack) {
    p.reason = std::to_string(info.shape.size()) + "-D tensor";
  } else if (!inc.empty()) {
    p.selected = detail::any_search(inc, p.base_name);
    p.reason = p.selected ? "matches --include" : "no --include matches";
  } else if (default_excluded().search(p.base_name)) {
    p.reason = "embedding, head or norm";
  } else if (layer_index(p.base_name) < 0) {
    p.reason = "outside the layer blocks";
  } else {
    p.selected = true;
    p.reason = stack ? "expert stack, each expert apart" : "2-D layer weight";
  }
  if (p.selected && detail::any_search(exc, p.base_name)) {
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

int expert_index(const std::string& name) {
  const std::string key = "experts.";
  for (size_t at = name.find(key); at != std::string::npos; at = name.find(key, at + 1)) {
    if (at > 0 && name[at - 1] != '.') continue;
    const size_t from = at + key.size(), dot = name.find('.', from);
    const std::string seg = name.substr(from, dot == std::string::npos ? dot : dot - from);
    if (!seg.empty() && seg.size() < 9 && seg.find_first_not_of("0123456789") == std::string::npos)
      return std::stoi(seg);
  }
  return -1;
}

std::string matrix_type(const std::string& name) {
  std::string n = name;
  const std::string w = ".weight";
  if (n.size() > w.size() && n.compare(n.size() - w.size(), w.size(), w) == 0)
    n.resize(n.size() - w.size());
  std::vector<std::string> seg;
  for (size_t start = 0;;) {
    size_t dot = n.find('.', start);
    seg.push_back(n.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  auto digits = [](const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
  };
  size_t at = 0;
  while (at < seg.size() && !(digits(seg[at]) && seg[at].size() < 9)) ++at;
  if (at == seg.size()) return n;
  // Keep which stack the layer sits in (T5 and other encoder-decoders repeat layer names), and
  // fold expert and sub-layer indices after the layer index into "*".
  std::string type;
  for (size_t i = 0; i < at; ++i)
    if (seg[i] == "encoder" || seg[i] == "decoder" || seg[i] == "vision_model" ||
        seg[i] == "text_model")
      type = seg[i] + ".";
  for (size_t i = at + 1; i < seg.size(); ++i)
    type += (i > at + 1 ? "." : "") + (digits(seg[i]) ? std::string("*") : seg[i]);
  return type;
}

namespace {

// Finds base tensors by name: exact after stripping the PEFT prefix, else with one leading
// segment more on the tuned side, else one more on the base side. Each base tensor pairs once.
class BaseNames {
 public:
  explicit BaseNames(const Checkpoint& base) {
    for (const auto& [name, _] : base.tensors()) {
      const std::string n = strip_peft_prefix(name);
      by_name_.emplace(n, name);
      std::string tail = drop_first_segment(n);
      if (!tail.empty()) by_tail_.emplace(tail, name);
    }
  }
  std::string take(const std::string& tuned_name) {
    const std::string n = strip_peft_prefix(tuned_name);
    std::string found;
    auto try_map = [&](const std::map<std::string, std::string>& m, const std::string& key) {
      auto it = key.empty() ? m.end() : m.find(key);
      if (found.empty() && it != m.end() && !taken_.count(it->second)) found = it->second;
    };
    try_map(by_name_, n);
    try_map(by_name_, drop_first_segment(n));
    try_map(by_tail_, n);
    if (!found.empty()) taken_.insert(found);
    return found;
  }

 private:
  std::map<std::string, std::string> by_name_, by_tail_;
  std::set<std::string> taken_;
};

std::string dims(const std::vector<uint64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// Decides how the factors apply to the base (see LoraModule), or throws.
bool lora_transposed(const LoraModule& m, const TensorInfo& base, bool conv1d,
                     const std::string& where) {
  const auto& a = m.a.info->shape;
  const auto& b = m.b.info->shape;
  const std::string what = where + ": lora_A " + dims(a) + " and lora_B " + dims(b) +
                           " do not fit the base weight " + dims(base.shape);
  if (base.shape.size() != 2) throw BadInput(what, InputProblem::Mismatch);
  const uint64_t o = base.shape[0], i = base.shape[1];
  bool transposed;
  if (m.embedding && m.magnitude)
    throw BadInput(where + ": DoRA on an embedding is not supported", InputProblem::Unsupported);
  if (m.embedding) {  // delta = (B A)^T: A [r, vocab], B [dim, r], base [vocab, dim]
    if (a[1] != o || b[0] != i) throw BadInput(what, InputProblem::Mismatch);
    transposed = true;
  } else if (b[0] == o && a[1] == i && b[0] == i && a[1] == o) {  // square: the layout decides
    transposed = conv1d;
  } else if (b[0] == o && a[1] == i) {
    transposed = false;
  } else if (b[0] == i && a[1] == o) {  // Conv1D stores [in, out]
    transposed = true;
  } else {
    throw BadInput(what, InputProblem::Mismatch);
  }
  if (m.magnitude) {
    const uint64_t out = transposed ? i : o;
    if (m.magnitude->info->shape[0] != out)
      throw BadInput(InputProblem::Mismatch,
                     where + ": DoRA magnitude has " + std::to_string(m.magnitude->info->shape[0]) +
                         " entries, the layer has " + std::to_string(out) + " outputs");
  }
  return transposed;
}

}  // namespace

MatchTable match_checkpoints(const Checkpoint& base, const Checkpoint& tuned,
                             const SelectOptions& select, const ModelLayout& layout) {
  const auto inc = detail::compile_option_patterns(select.include, "--include");
  const auto exc = detail::compile_option_patterns(select.exclude, "--exclude");
  BaseNames names(base);
  std::map<std::string, std::string> tuned_for_base;  // base name -> tuned name
  MatchTable table;
  for (const auto& [tname, _] : tuned.tensors()) {
    std::string found = names.take(tname);
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
    p.conv1d = layout.is_conv1d(bname);
    select_pair(p, inc, exc);
    if (p.selected && p.shapes_equal)
      p.parts = layout.parts(bname, p.base.info->shape, p.conv1d, select.split_fused);
    table.pairs.push_back(std::move(p));
  }
  return table;
}

MatchTable match_adapter(const Checkpoint& base, const Adapter& adapter,
                         const SelectOptions& select, const ModelLayout& layout) {
  const auto inc = detail::compile_option_patterns(select.include, "--include");
  const auto exc = detail::compile_option_patterns(select.exclude, "--exclude");
  BaseNames names(base);
  MatchTable table;
  const std::string file = adapter.weights().path();
  for (const auto& [module, m] : adapter.modules()) {
    const std::string where = file + ": module '" + module + "'";
    const std::string bname = names.take(module + ".weight");
    if (bname.empty())
      throw BadInput(where + ": the base has no weight " + module + ".weight",
                     InputProblem::Mismatch);
    MatchedPair p;
    p.base_name = bname;
    p.tuned_name = module + ".weight";
    p.base = *base.find(bname);
    p.tuned = m.b;
    p.lora = &m;
    p.transposed = lora_transposed(m, *p.base.info, layout.is_conv1d(bname), where);
    p.conv1d = p.transposed && !m.embedding;
    select_pair(p, inc, exc);
    if (p.selected && p.shapes_equal)
      p.parts = layout.parts(bname, p.base.info->shape, p.conv1d, select.split_fused);
    table.pairs.push_back(std::move(p));
  }
  for (const auto& [name, ref] : adapter.full_tensors()) {
    const std::string bname = names.take(name);
    if (bname.empty()) {
      table.tuned_only.push_back(ref.info->name);
      continue;
    }
    MatchedPair p;
    p.base_name = bname;
    p.tuned_name = ref.info->name;
    p.base = *base.find(bname);
    p.tuned = ref;
    p.shapes_equal = p.base.info->shape == ref.info->shape;
    p.conv1d = layout.is_conv1d(bname);
    select_pair(p, inc, exc);
    if (p.selected && p.shapes_equal)
      p.parts = layout.parts(bname, p.base.info->shape, p.conv1d, select.split_fused);
    table.pairs.push_back(std::move(p));
  }
  std::sort(table.pairs.begin(), table.pairs.end(),
            [](const MatchedPair& a, const MatchedPair& b) { return a.base_name < b.base_name; });
  return table;
}

}  // namespace indim
