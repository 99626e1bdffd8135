#include "indim/layout.hpp"

#include <filesystem>

#include "indim/error.hpp"
#include "io/file_source.hpp"
#include "io/json_strict.hpp"
#include "io/names.hpp"
#include "io/regular_file.hpp"
#include "plan/regex.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

// Model types whose linear layers are transformers' Conv1D.
bool conv1d_model_type(const std::string& t) {
  return t == "gpt2" || t == "decision_transformer" || t == "imagegpt";
}

const detail::Regex& conv1d_names() {
  static const detail::Regex r(
      R"((^|\.)(attn\.(c_attn|q_attn|c_proj)|crossattention\.(c_attn|q_attn|c_proj)|mlp\.(c_fc|c_proj))\.weight$)");
  return r;
}

}  // namespace

bool ModelLayout::is_conv1d(const std::string& name) const {
  return conv1d_family && conv1d_names().search(name);
}

std::string ModelLayout::describe() const {
  std::string s =
      "layout: " + (model_type.empty() ? std::string("unknown model type") : model_type) +
      " (from " + source + ")";
  if (conv1d_family) s += "; c_attn/c_proj/c_fc are Conv1D [in, out] and analysed transposed";
  return s;
}

namespace {

std::vector<int64_t> range(int64_t from, int64_t to) {
  std::vector<int64_t> r;
  for (int64_t i = from; i < to; ++i) r.push_back(i);
  return r;
}

// Rows of each part of a fused projection with `rows` rows, or {} when `name` is not fused.
std::vector<MatrixPart> fused_rows(const ModelLayout& l, const std::string& name, int64_t rows) {
  const std::string where = name + " (" + std::to_string(rows) + " rows)";
  auto need_heads = [&]() {
    if (l.heads <= 0)
      throw BadInput(InputProblem::Unsupported,
                     where + ": --split-fused needs num_attention_heads from config.json");
  };
  auto even_split = [&](std::vector<std::string> labels) {
    const int64_t n = static_cast<int64_t>(labels.size());
    if (rows % n != 0)
      throw BadInput(InputProblem::Unsupported,
                     where + ": rows do not split into " + std::to_string(n));
    std::vector<MatrixPart> parts;
    for (int64_t i = 0; i < n; ++i)
      parts.push_back({labels[i], -1, range(i * rows / n, (i + 1) * rows / n)});
    return parts;
  };
  // Per-group layout: each group holds `per_q` query heads, then `per_kv` key and value heads.
  auto grouped = [&](int64_t groups, int64_t per_q, int64_t per_kv) {
    const int64_t hd = rows / (groups * (per_q + 2 * per_kv));
    if (groups <= 0 || hd * groups * (per_q + 2 * per_kv) != rows)
      throw BadInput(InputProblem::Unsupported, where + ": config.json heads do not fit the rows");
    std::vector<MatrixPart> parts = {{"q", -1, {}}, {"k", -1, {}}, {"v", -1, {}}};
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = g * hd * (per_q + 2 * per_kv);
      for (int64_t i = 0; i < per_q * hd; ++i) parts[0].rows.push_back(base + i);
      for (int64_t i = 0; i < per_kv * hd; ++i) parts[1].rows.push_back(base + per_q * hd + i);
      for (int64_t i = 0; i < per_kv * hd; ++i)
        parts[2].rows.push_back(base + (per_q + per_kv) * hd + i);
    }
    return parts;
  };
  if (detail::ends_with(name, "gate_up_proj.weight") || detail::ends_with(name, "gate_up_proj"))
    return even_split({"gate", "up"});
  if (detail::ends_with(name, "attn.c_attn.weight") || detail::ends_with(name, "attn.Wqkv.weight"))
    return even_split({"q", "k", "v"});
  if (detail::ends_with(name, "qkv_proj.weight")) {  // Phi-3: rows [Q | K | V]
    need_heads();
    const int64_t kv = l.kv_heads > 0 ? l.kv_heads : l.heads;
    const int64_t hd = rows / (l.heads + 2 * kv);
    if (hd * (l.heads + 2 * kv) != rows)
      throw BadInput(InputProblem::Unsupported, where + ": config.json heads do not fit the rows");
    return {{"q", -1, range(0, l.heads * hd)},
            {"k", -1, range(l.heads * hd, (l.heads + kv) * hd)},
            {"v", -1, range((l.heads + kv) * hd, rows)}};
  }
  if (detail::ends_with(name, "query_key_value.weight")) {
    need_heads();
    if (l.model_type == "falcon" && l.new_decoder_architecture) {
      const int64_t kv = l.kv_heads > 0 ? l.kv_heads : l.heads;
      if (l.heads % kv != 0)
        throw BadInput(InputProblem::Unsupported, where + ": heads are not a multiple of kv heads");
      return grouped(kv, l.heads / kv, 1);
    }
    if (l.model_type == "falcon" && l.multi_query) return grouped(1, l.heads, 1);
    return grouped(l.heads, 1, 1);  // GPT-NeoX, BLOOM, old Falcon: per head [q, k, v]
  }
  return {};
}

}  // namespace

std::vector<MatrixPart> ModelLayout::parts(const std::string& name,
                                           const std::vector<uint64_t>& shape, bool conv1d,
                                           bool split_fused) const {
  if (shape.size() == 3) {  // [E, out, in] expert stack
    std::vector<MatrixPart> fused;
    if (split_fused) fused = fused_rows(*this, name, static_cast<int64_t>(shape[1]));
    std::vector<MatrixPart> out;
    for (int64_t e = 0; e < static_cast<int64_t>(shape[0]); ++e) {
      if (fused.empty()) out.push_back({std::to_string(e), e, {}});
      for (const auto& f : fused) out.push_back({std::to_string(e) + "." + f.label, e, f.rows});
    }
    return out;
  }
  if (!split_fused || shape.size() != 2) return {};
  return fused_rows(*this, name, static_cast<int64_t>(conv1d ? shape[1] : shape[0]));
}

ModelLayout detect_layout(const Checkpoint& c) {
  ModelLayout l;
  l.source = "default";
  const detail::FileSource& src = detail::files_or_plain(c.source());  // where c's files came from
  fs::path dir = src.kind(c.path()) == detail::PathKind::Directory
                     ? fs::path(c.path())
                     : fs::path(c.path()).parent_path();
  const fs::path cfg = dir / "config.json";
  if (src.kind(cfg.string()) != detail::PathKind::Missing) {
    nlohmann::json j = detail::parse_json_strict(
        detail::read_file(src, cfg.string(), detail::kMaxConfigBytes), cfg.string());
    if (j.is_object() && j.contains("model_type") && j["model_type"].is_string()) {
      l.model_type = j["model_type"].get<std::string>();
      l.source = "config.json";
      l.conv1d_family = conv1d_model_type(l.model_type);
      auto num = [&](std::initializer_list<const char*> keys) -> int64_t {
        for (const char* k : keys)
          if (j.contains(k) && j[k].is_number_unsigned()) return j[k].get<int64_t>();
        return 0;
      };
      l.heads = num({"num_attention_heads", "n_head", "num_heads"});
      l.kv_heads = num({"num_key_value_heads", "num_kv_heads", "n_head_kv"});
      l.head_dim = num({"head_dim"});
      auto flag = [&](const char* k) {
        return j.contains(k) && j[k].is_boolean() && j[k].get<bool>();
      };
      l.new_decoder_architecture = flag("new_decoder_architecture");
      l.multi_query = flag("multi_query");
      return l;
    }
  }
  // No config: GPT-2's unprefixed `h.N.attn.c_attn.weight` names are unmistakable.
  static const detail::Regex gpt2(R"((^|\.)h\.\d+\.attn\.c_attn\.weight$)");
  for (const auto& [name, _] : c.tensors())
    if (gpt2.search(name)) {
      l.model_type = "gpt2";
      l.source = "tensor names";
      l.conv1d_family = true;
      break;
    }
  return l;
}

}  // namespace indim
