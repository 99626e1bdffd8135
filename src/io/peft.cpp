#include "indim/peft.hpp"

#include <cmath>
#include <filesystem>
#include <type_traits>

#include "indim/error.hpp"
#include "indim/match.hpp"
#include "io/file_source.hpp"
#include "io/json_strict.hpp"
#include "io/regular_file.hpp"
#include "plan/regex.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw BadInput(path + ": " + what, InputProblem::Malformed);
}

bool truthy(const nlohmann::ordered_json& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_array() || v.is_object() || v.is_string()) return !v.empty();
  return true;
}

std::string module_pattern(const std::string& key) { return "(.*\\.)?(" + key + ")"; }

template <typename T>
std::vector<std::pair<std::string, T>> pattern(const nlohmann::ordered_json& j,
                                               const std::string& path, const char* field) {
  std::vector<std::pair<std::string, T>> out;
  if (!j.contains(field) || j[field].is_null()) return out;
  if (!j[field].is_object()) bad(path, std::string(field) + " is not an object");
  for (const auto& [k, v] : j[field].items()) {
    if (!v.is_number()) bad(path, std::string(field) + "[\"" + k + "\"] is not a number");
    // PEFT matches a key as re.match(rf"(.*\.)?({key})$", module): the same full match, in RE2
    // (linear time, so no key can make matching run away).
    const detail::Regex re(module_pattern(k));
    if (!re.ok())
      bad(path, std::string(field) + " key \"" + k.substr(0, 200) +
                    "\" is not a valid regex: " + re.error());
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
    if (detail::Regex(module_pattern(k)).full_match(name)) return &v;
  return nullptr;
}

// A key of adapter_model.safetensors, taken apart.
struct KeyParts {
  std::string module;
  std::string role;  // A, B, bias, magnitude, emb_A, emb_B, or "" for a full tensor
  std::string adapter_name;
};

// Drops every `.base_layer.` infix (PEFT wraps adapted layers, and modules_to_save keep it).
std::string without_base_layer(std::string k) {
  const std::string infix = ".base_layer.";
  for (size_t at = k.find(infix); at != std::string::npos; at = k.find(infix, at + 1))
    k.replace(at, infix.size(), ".");
  return k;
}

KeyParts split_key(const std::string& key) {
  const std::string k = strip_peft_prefix(key);
  static const detail::Regex lora(
      R"((.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.([^.]+))?(?:\.(weight|bias))?)");
  std::string module, kind, adapter, suffix;
  if (!lora.full_match(k, {&module, &kind, &adapter, &suffix}))
    return {without_base_layer(k), "", ""};  // modules_to_save and trained biases
  // `...lora_A.weight` leaves "weight" in group 3 when there is no adapter name.
  if (suffix.empty() && (adapter == "weight" || adapter == "bias")) suffix = adapter, adapter = "";
  std::string role = kind == "lora_A"             ? "A"
                     : kind == "lora_B"           ? (suffix == "bias" ? "bias" : "B")
                     : kind == "lora_embedding_A" ? "emb_A"
                     : kind == "lora_embedding_B" ? "emb_B"
                                                  : "magnitude";
  return {module, role, adapter};
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

bool Adapter::is_adapter_dir(const std::string& path, const detail::FileSource* files) {
  const detail::FileSource& src = detail::files_or_plain(files);
  return src.kind(path) == detail::PathKind::Directory &&
         src.kind((fs::path(path) / "adapter_config.json").string()) != detail::PathKind::Missing;
}

Adapter Adapter::open(const std::string& dir, const detail::FileSource* files) {
  const detail::FileSource& src = detail::files_or_plain(files);
  Adapter a;
  a.path_ = dir;
  const std::string cfg = (fs::path(dir) / "adapter_config.json").string();
  a.config_ = parse_adapter_config(detail::read_file(src, cfg, detail::kMaxConfigBytes), cfg);
  const fs::path weights = fs::path(dir) / "adapter_model.safetensors";
  if (src.kind(weights.string()) == detail::PathKind::Missing) {
    if (src.kind((fs::path(dir) / "adapter_model.bin").string()) != detail::PathKind::Missing)
      bad(dir,
          "holds adapter_model.bin (PyTorch pickle), which indim does not read; save the "
          "adapter with safe_serialization=True");
    bad(dir, "no adapter_model.safetensors");
  }
  a.weights_ = Checkpoint::open(weights.string(), files);
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

TunedInput TunedInput::open(const std::string& path, const detail::FileSource* files) {
  TunedInput t;
  t.path_ = path;
  if (Adapter::is_adapter_dir(path, files))
    t.adapter_ = std::make_shared<Adapter>(Adapter::open(path, files));
  else
    t.ckpt_ = std::make_shared<Checkpoint>(Checkpoint::open(path, files));
  return t;
}

MatchTable TunedInput::match(const Checkpoint& base, const SelectOptions& select,
                             const ModelLayout& layout) const {
  return is_adapter() ? match_adapter(base, *adapter_, select, layout)
                      : match_checkpoints(base, *ckpt_, select, layout);
}

}  // namespace indim
