#include "indim/layout.hpp"

#include <filesystem>
#include <regex>

#include "indim/error.hpp"
#include "io/json_strict.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

// Model types whose linear layers are transformers' Conv1D.
bool conv1d_model_type(const std::string& t) {
  return t == "gpt2" || t == "decision_transformer" || t == "imagegpt";
}

const std::regex& conv1d_names() {
  static const std::regex r(
      R"((^|\.)(attn\.(c_attn|q_attn|c_proj)|crossattention\.(c_attn|q_attn|c_proj)|mlp\.(c_fc|c_proj))\.weight$)");
  return r;
}

}  // namespace

bool ModelLayout::is_conv1d(const std::string& name) const {
  return conv1d_family && std::regex_search(name, conv1d_names());
}

std::string ModelLayout::describe() const {
  std::string s =
      "layout: " + (model_type.empty() ? std::string("unknown model type") : model_type) +
      " (from " + source + ")";
  if (conv1d_family) s += "; c_attn/c_proj/c_fc are Conv1D [in, out] and analysed transposed";
  return s;
}

ModelLayout detect_layout(const Checkpoint& c) {
  ModelLayout l;
  l.source = "default";
  fs::path dir = fs::is_directory(c.path()) ? fs::path(c.path()) : fs::path(c.path()).parent_path();
  const fs::path cfg = dir / "config.json";
  std::error_code ec;
  if (fs::exists(cfg, ec)) {
    nlohmann::json j = detail::read_json_file(cfg.string());
    if (j.is_object() && j.contains("model_type") && j["model_type"].is_string()) {
      l.model_type = j["model_type"].get<std::string>();
      l.source = "config.json";
      l.conv1d_family = conv1d_model_type(l.model_type);
      return l;
    }
  }
  // No config: GPT-2's unprefixed `h.N.attn.c_attn.weight` names are unmistakable.
  static const std::regex gpt2(R"((^|\.)h\.\d+\.attn\.c_attn\.weight$)");
  for (const auto& [name, _] : c.tensors())
    if (std::regex_search(name, gpt2)) {
      l.model_type = "gpt2";
      l.source = "tensor names";
      l.conv1d_family = true;
      break;
    }
  return l;
}

}  // namespace indim
