#include "indim/peft.hpp"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <regex>
#include <type_traits>

#include "indim/error.hpp"
#include "indim/match.hpp"
#include "io/json_strict.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw BadInput(path + ": " + what);
}

bool truthy(const nlohmann::ordered_json& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_array() || v.is_object() || v.is_string()) return !v.empty();
  return true;
}

// Why a module pattern would make a backtracking regex engine (libstdc++'s) work without bound,
// or "" when it cannot: a quantifier on a quantifier (Python's re, which PEFT uses, refuses
// these as "multiple repeat"), or a repeated group that itself repeats or alternates, as in
// (a*)* or (a|ab)*, whose ways to match grow exponentially with the name's length; or more
// than 4 repetitions in all (.*.*.*... tries every split of the name among them).
std::string runaway_pattern(const std::string& k) {
  struct Group {
    bool repeats = false, alternates = false;
  };
  std::vector<Group> open;
  Group closed;  // the group that just ended, when prev == GroupEnd
  int repetitions = 0;
  enum { Atom, GroupEnd, Quantifier, Lazy, Start } prev = Start;
  auto quantifier_at = [&](size_t i) -> size_t {  // length of the quantifier at i, 0 if none
    if (k[i] == '*' || k[i] == '+' || k[i] == '?') return 1;
    if (k[i] != '{') return 0;
    size_t j = i + 1, digits = 0;
    while (j < k.size() && (std::isdigit(static_cast<unsigned char>(k[j])) || k[j] == ','))
      digits += k[j] != ',', ++j;
    return j < k.size() && k[j] == '}' && digits > 0 ? j - i + 1 : 0;
  };
  for (size_t i = 0; i < k.size();) {
    const char c = k[i];
    if (const size_t q = quantifier_at(i)) {
      if (prev == Quantifier && c == '?' && q == 1) {
        prev = Lazy, ++i;
        continue;
      }
      if (prev == Quantifier || prev == Lazy) return "repeats a repetition";
      if (prev == GroupEnd && (closed.repeats || closed.alternates))
        return "repeats a group that itself repeats or alternates";
      for (Group& g : open) g.repeats = true;
      if (++repetitions > 4) return "holds more than 4 repetitions";
      prev = Quantifier, i += q;
      continue;
    }
    if (c == '\\') {
      prev = Atom, i += 2;
    } else if (c == '[') {  // a class: up to the first unescaped ']' after its first character
      size_t j = i + 1;
      if (j < k.size() && k[j] == '^') ++j;
      if (j < k.size() && k[j] == ']') ++j;
      while (j < k.size() && k[j] != ']') j += k[j] == '\\' ? 2 : 1;
      prev = Atom, i = j + 1;
    } else if (c == '(') {
      open.push_back({});
      prev = Start, ++i;
      if (i + 1 < k.size() && k[i] == '?') i += 2;  // (?: (?= (?!
    } else if (c == ')') {
      if (!open.empty()) closed = open.back(), open.pop_back();
      if (!open.empty()) {
        open.back().repeats |= closed.repeats;
        open.back().alternates |= closed.alternates;
      }
      prev = GroupEnd, ++i;
    } else if (c == '|') {
      if (!open.empty()) open.back().alternates = true;
      prev = Start, ++i;
    } else {
      prev = (c == '^' || c == '$') ? Start : Atom, ++i;
    }
  }
  return "";
}

template <typename T>
std::vector<std::pair<std::string, T>> pattern(const nlohmann::ordered_json& j,
                                               const std::string& path, const char* field) {
  std::vector<std::pair<std::string, T>> out;
  if (!j.contains(field) || j[field].is_null()) return out;
  if (!j[field].is_object()) bad(path, std::string(field) + " is not an object");
  for (const auto& [k, v] : j[field].items()) {
    if (!v.is_number()) bad(path, std::string(field) + "[\"" + k + "\"] is not a number");
    // Keys are module names or simple regexes. Long keys and backreferences serve no module
    // pattern, and libstdc++'s regex compiler overflows on huge backreference numbers.
    if (k.size() > 1024)
      bad(path, std::string(field) + " key of " + std::to_string(k.size()) +
                    " characters is too long for a module pattern");
    for (size_t i = 0, digits = 0; i < k.size(); ++i) {
      if (k[i] == '\\' && i + 1 < k.size() && k[i + 1] >= '1' && k[i + 1] <= '9')
        bad(path, std::string(field) + " key \"" + k.substr(0, 80) +
                      "\" uses a backreference, which module patterns do not support");
      digits = std::isdigit(static_cast<unsigned char>(k[i])) ? digits + 1 : 0;
      if (digits > 6)  // repetition counts like {99999999999} overflow the same way
        bad(path, std::string(field) + " key \"" + k.substr(0, 80) +
                      "\" holds a number too large for a module pattern");
    }
    const std::string runaway = runaway_pattern(k);
    if (!runaway.empty())
      bad(path, std::string(field) + " key \"" + k.substr(0, 80) + "\" " + runaway +
                    ", which could make matching module names run without end");
    try {
      std::regex check("(.*\\.)?(" + k + ")");
    } catch (const std::regex_error&) {
      bad(path, std::string(field) + " key \"" + k + "\" is not a valid regex");
    }
    const double x = v.template get<double>();
    const bool integral = std::is_integral<T>::value;
    if (!std::isfinite(x) || std::fabs(x) > 1e6 || (integral && x != std::floor(x)))
      bad(path, std::string(field) + "[\"" + k.substr(0, 80) + "\"] = " + v.dump() +
                    (integral ? " is not a rank" : " is out of range"));
    out.emplace_back(k, static_cast<T>(x));
  }
  return out;
}

template <typename T>
const T* first_match(const std::vector<std::pair<std::string, T>>& pats, const std::string& name) {
  for (const auto& [k, v] : pats)
    if (std::regex_match(name, std::regex("(.*\\.)?(" + k + ")"))) return &v;
  return nullptr;
}

// A key of adapter_model.safetensors, taken apart.
struct KeyParts {
  std::string module;
  std::string role;  // A, B, bias, magnitude, emb_A, emb_B, or "" for a full tensor
  std::string adapter_name;
};

KeyParts split_key(const std::string& key) {
  const std::string k = strip_peft_prefix(key);
  static const std::regex lora(
      R"(^(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.([^.]+))?(?:\.(weight|bias))?$)");
  std::smatch m;
  if (!std::regex_match(k, m, lora)) {
    // modules_to_save and trained biases replace base tensors; drop a `.base_layer.` infix.
    std::string full = std::regex_replace(k, std::regex(R"(\.base_layer\.)"), ".");
    return {full, "", ""};
  }
  std::string kind = m[2], adapter = m[3], suffix = m[4];
  // `...lora_A.weight` leaves "weight" in group 3 when there is no adapter name.
  if (suffix.empty() && (adapter == "weight" || adapter == "bias")) suffix = adapter, adapter = "";
  std::string role = kind == "lora_A"             ? "A"
                     : kind == "lora_B"           ? (suffix == "bias" ? "bias" : "B")
                     : kind == "lora_embedding_A" ? "emb_A"
                     : kind == "lora_embedding_B" ? "emb_B"
                                                  : "magnitude";
  return {m[1], role, adapter};
}

}  // namespace

int LoraConfig::rank_for(const std::string& module) const {
  const int* v = first_match(rank_pattern, module);
  return v ? *v : r;
}

double LoraConfig::alpha_for(const std::string& module) const {
  const double* v = first_match(alpha_pattern, module);
  return v ? *v : alpha;
}

double LoraConfig::scale_for(const std::string& module) const {
  const double rr = rank_for(module);
  return use_rslora ? alpha_for(module) / std::sqrt(rr) : alpha_for(module) / rr;
}

LoraConfig parse_adapter_config(std::string_view text, const std::string& path) {
  nlohmann::ordered_json j = detail::parse_json_strict_ordered(text, path);
  if (!j.is_object()) bad(path, "not a JSON object");
  const std::string type = j.contains("peft_type") && j["peft_type"].is_string()
                               ? j["peft_type"].get<std::string>()
                               : std::string("(missing)");
  if (type != "LORA") bad(path, "peft_type is " + type + "; indim merges LORA adapters only");
  LoraConfig c;
  auto number = [&](const char* f, double def) {
    if (!j.contains(f) || j[f].is_null()) return def;
    if (!j[f].is_number()) bad(path, std::string(f) + " is not a number");
    return j[f].get<double>();
  };
  auto flag = [&](const char* f) {
    if (!j.contains(f) || j[f].is_null()) return false;
    if (!j[f].is_boolean()) bad(path, std::string(f) + " is not true or false");
    return j[f].get<bool>();
  };
  const double r = number("r", 8);
  if (r <= 0 || r != std::floor(r) || r > 1e6) bad(path, "r must be a positive integer");
  c.r = static_cast<int>(r);
  c.alpha = number("lora_alpha", 8);
  if (!std::isfinite(c.alpha) || std::fabs(c.alpha) > 1e12) bad(path, "lora_alpha is out of range");
  c.use_rslora = flag("use_rslora");
  c.fan_in_fan_out = flag("fan_in_fan_out");
  c.use_dora = flag("use_dora");
  c.rank_pattern = pattern<int>(j, path, "rank_pattern");
  c.alpha_pattern = pattern<double>(j, path, "alpha_pattern");
  for (const auto& [k, v] : c.rank_pattern)
    if (v <= 0) bad(path, "rank_pattern[\"" + k + "\"] must be positive");
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array())
    for (const auto& m : j["modules_to_save"])
      if (m.is_string()) c.modules_to_save.push_back(m.get<std::string>());

  // Variants whose weights are not W0 + s B A.
  for (const char* f :
       {"alora_invocation_tokens", "target_parameters", "layer_replication", "arrow_config",
        "bdlora_config", "use_qalora", "use_kasa", "velora_config", "monteclora_config"})
    if (j.contains(f) && truthy(j[f]))
      bad(path, std::string("uses ") + f + ", a LoRA variant indim cannot merge");
  if (j.contains("init_lora_weights") && j["init_lora_weights"].is_string()) {
    const std::string init = j["init_lora_weights"].get<std::string>();
    for (const char* mutating : {"pissa", "olora", "corda", "loftq", "lora_ga"})
      if (init.rfind(mutating, 0) == 0)
        bad(path,
            "init_lora_weights is \"" + init +
                "\": the adapter is relative to a modified "
                "base; save it with PEFT's path_initial_model_for_weight_conversion so that it "
                "applies to the original base");
  }
  return c;
}

bool Adapter::is_adapter_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / "adapter_config.json", ec);
}

Adapter Adapter::open(const std::string& dir) {
  Adapter a;
  a.path_ = dir;
  const std::string cfg = (fs::path(dir) / "adapter_config.json").string();
  a.config_ = parse_adapter_config(detail::read_small_file(cfg), cfg);
  const fs::path weights = fs::path(dir) / "adapter_model.safetensors";
  if (!fs::exists(weights)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin"))
      bad(dir,
          "holds adapter_model.bin (PyTorch pickle), which indim does not read; save the "
          "adapter with safe_serialization=True");
    bad(dir, "no adapter_model.safetensors");
  }
  a.weights_ = Checkpoint::open(weights.string());
  const std::string wpath = weights.string();

  std::string adapter_name;
  for (const auto& [key, ref] : a.weights_.tensors()) {
    KeyParts k = split_key(key);
    if (k.role.empty()) {
      a.full_[k.module] = ref;
      continue;
    }
    if (!k.adapter_name.empty()) {
      if (!adapter_name.empty() && adapter_name != k.adapter_name)
        bad(wpath, "holds two adapters (\"" + adapter_name + "\" and \"" + k.adapter_name +
                       "\"); save one adapter per folder");
      adapter_name = k.adapter_name;
    }
    LoraModule& m = a.modules_[k.module];
    m.module = k.module;
    if (k.role == "A" || k.role == "emb_A") m.a = ref;
    if (k.role == "B" || k.role == "emb_B") m.b = ref;
    if (k.role == "emb_A" || k.role == "emb_B") m.embedding = true;
    if (k.role == "magnitude") m.magnitude = ref;
  }
  for (auto& [name, m] : a.modules_) {
    const std::string where = wpath + ": module '" + name + "'";
    if (m.a.info == nullptr && m.b.info == nullptr)
      bad(where,
          "has a DoRA magnitude or lora_B "
          "bias but no lora_A/lora_B pair");
    if (m.a.info == nullptr) bad(where, "has lora_B but no lora_A");
    if (m.b.info == nullptr) bad(where, "has lora_A but no lora_B");
    for (const TensorRef* t : {&m.a, &m.b})
      if (t->info->shape.size() != 2 || !dtype_is_analysable(t->info->dtype))
        bad(where, "tensor '" + t->info->name + "' must be a 2-D float tensor");
    m.r = a.config_.rank_for(name);
    m.scale = a.config_.scale_for(name);
    const uint64_t ra = m.a.info->shape[0], rb = m.b.info->shape[1];
    if (ra != rb || ra != static_cast<uint64_t>(m.r))
      bad(where, "rank " + std::to_string(m.r) + " from the config, but lora_A has " +
                     std::to_string(ra) + " rows and lora_B " + std::to_string(rb) + " columns");
    if (m.magnitude &&
        (m.magnitude->info->shape.size() != 1 || !dtype_is_analysable(m.magnitude->info->dtype)))
      bad(where, "lora_magnitude_vector must be a 1-D float tensor");
    if (m.magnitude && !a.config_.use_dora)
      a.config_.warnings.push_back(where +
                                   ": DoRA magnitude present but use_dora is false; "
                                   "applying DoRA as the weights say");
  }
  if (a.modules_.empty() && a.full_.empty()) bad(wpath, "holds no LoRA tensors");
  return a;
}

}  // namespace indim

#include "indim/tuned.hpp"

namespace indim {

TunedInput TunedInput::open(const std::string& path) {
  TunedInput t;
  t.path_ = path;
  if (Adapter::is_adapter_dir(path))
    t.adapter_ = std::make_shared<Adapter>(Adapter::open(path));
  else
    t.ckpt_ = std::make_shared<Checkpoint>(Checkpoint::open(path));
  return t;
}

MatchTable TunedInput::match(const Checkpoint& base, const SelectOptions& select,
                             const ModelLayout& layout) const {
  return is_adapter() ? match_adapter(base, *adapter_, select, layout)
                      : match_checkpoints(base, *ckpt_, select, layout);
}

}  // namespace indim
