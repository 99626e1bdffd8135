// Pairing quantised weights with their scales, by name, as the producers store them:
//   X.weight F8 [.., M, N] + X.weight_scale_inv [.., ceil(M/128), ceil(N/128)]   (DeepSeek, Qwen3)
//   X.weight F8 [.., M, N] + X.weight_scale [..], [.., M(, 1)] or a block grid (compressed-tensors)
//   X_blocks U8 [.., M, N/32, 16] + X_scales U8 [.., M, N/32]                     (gpt-oss MXFP4)
// Scale tensors are set aside and never analysed. A weight whose scale is missing or does not
// fit keeps a QuantRef saying so, refused (naming both) when it is selected.
#include <filesystem>
#include <memory>
#include <set>

#include "indim/error.hpp"
#include "io/file_source.hpp"
#include "io/json_strict.hpp"
#include "io/names.hpp"
#include "io/quant_store.hpp"
#include "io/regular_file.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

using Shape = std::vector<uint64_t>;

std::string tensor_text(const TensorRef& r) {
  return r.file->path() + ": tensor '" + r.info->name + "' " + dtype_name(r.info->dtype) + " " +
         shape_text(r.info->shape);
}

bool is_fp8(DType t) { return dtype_is_minifloat(t) && t != DType::F8_E8M0 && t != DType::F4; }

bool scale_like(const std::string& name) {
  for (const char* tail : {"_scale_inv", "_scale", ".input_scale", ".k_scale", ".v_scale"})
    if (detail::ends_with(name, tail)) return true;
  return false;
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

Shape with_lead(const Shape& w, std::initializer_list<uint64_t> tail) {
  Shape s(w.begin(), w.end() - 2);
  s.insert(s.end(), tail);
  return s;
}

// The format a scale of shape `s` gives the weight [.., M, N], or NoScale when it fits none.
QuantFormat fp8_format(const Shape& w, const Shape& s, const QuantConfig& c) {
  const uint64_t m = w[w.size() - 2], n = w[w.size() - 1];
  const Shape lead(w.begin(), w.end() - 2);
  if (s == lead || s == with_lead(w, {1}) || s == with_lead(w, {1, 1}))
    return QuantFormat::Fp8Tensor;
  if (s == with_lead(w, {m}) || s == with_lead(w, {m, 1})) return QuantFormat::Fp8Channel;
  if (s == with_lead(w, {ceil_div(m, static_cast<uint64_t>(c.block_rows)),
                         ceil_div(n, static_cast<uint64_t>(c.block_cols))}))
    return QuantFormat::Fp8Block;
  return QuantFormat::NoScale;
}

bool fp8_scale_dtype(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F8_E8M0;
}

class Pairing {
 public:
  Pairing(std::map<std::string, TensorRef>& tensors, detail::QuantStore& store)
      : tensors_(tensors), s_(store) {}

  void run() {
    set_aside_scales();
    pair_mxfp4();
    for (auto& [name, ref] : tensors_)
      if (is_fp8(ref.info->dtype) || (ref.info->dtype == DType::F4 && ref.quant == nullptr))
        pair_fp8(name, ref);
    for (const auto& [name, ref] : s_.scales)
      if (!used_.count(name))
        s_.warnings.push_back(ref.file->path() + ": tensor '" + name +
                              "' looks like a scale but belongs to no quantised weight; ignored");
  }

 private:
  void set_aside_scales() {
    for (auto it = tensors_.begin(); it != tensors_.end();) {
      const std::string& n = it->first;
      const bool mx_scale =
          detail::ends_with(n, "_scales") && tensors_.count(n.substr(0, n.size() - 7) + "_blocks");
      if (scale_like(n) || mx_scale) {
        s_.scales.insert(*it);
        it = tensors_.erase(it);
      } else {
        ++it;
      }
    }
  }

  const QuantRef* add(QuantRef q) {
    s_.refs.push_back(std::move(q));
    return &s_.refs.back();
  }

  const QuantRef* problem(const std::string& stored, std::string why, bool malformed = true) {
    QuantRef q;
    q.stored_name = stored;
    q.problem = std::move(why);
    q.malformed = malformed;
    return add(std::move(q));
  }

  void pair_mxfp4() {
    std::vector<std::string> blocks;
    for (const auto& [name, ref] : tensors_) {
      const Shape& sh = ref.info->shape;
      if (detail::ends_with(name, "_blocks") && ref.info->dtype == DType::U8 && sh.size() >= 3 &&
          sh.back() == 16)
        blocks.push_back(name);
    }
    for (const std::string& name : blocks) pair_blocks(name);
  }

  void pair_blocks(const std::string& name) {
    const TensorRef ref = tensors_.at(name);
    const std::string logical = name.substr(0, name.size() - 7);
    if (tensors_.count(logical))
      throw BadInput(InputProblem::Malformed,
                     ref.file->path() + ": tensors '" + logical + "' and '" + name +
                         "' (its MXFP4 blocks) are both stored; which one is the weight?");
    const Shape& sh = ref.info->shape;
    TensorInfo info = *ref.info;
    info.name = logical;
    info.dtype = DType::F4;
    info.shape = Shape(sh.begin(), sh.end() - 2);
    info.shape.push_back(sh[sh.size() - 2] * 32);
    s_.logical.push_back(info);
    TensorRef out{ref.file, &s_.logical.back(), nullptr};
    const std::string sname = logical + "_scales";
    auto sc = s_.scales.find(sname);
    const Shape want(sh.begin(), sh.end() - 1);
    if (sc == s_.scales.end()) {
      out.quant = problem(name, tensor_text(ref) + " holds MXFP4 blocks, but its scale tensor '" +
                                    sname + "' is missing");
    } else if ((sc->second.info->dtype != DType::U8 && sc->second.info->dtype != DType::F8_E8M0) ||
               sc->second.info->shape != want) {
      used_.insert(sname);
      out.quant =
          problem(name, tensor_text(ref) + " holds MXFP4 blocks, but its scale tensor " +
                            tensor_text(sc->second) + " is not U8/F8_E8M0 " + shape_text(want));
    } else {
      used_.insert(sname);
      QuantRef q;
      q.format = QuantFormat::Mxfp4;
      q.scale = sc->second;
      q.block_rows = 1, q.block_cols = 32;
      q.stored_name = name;
      out.quant = add(std::move(q));
    }
    tensors_.erase(name);
    tensors_.emplace(logical, out);
  }

  void pair_fp8(const std::string& name, TensorRef& ref) {
    const bool convention = s_.config.present || !s_.scales.empty();
    auto inv = s_.scales.find(name + "_scale_inv"), plain = s_.scales.find(name + "_scale");
    if (inv != s_.scales.end() && plain != s_.scales.end())
      throw BadInput(InputProblem::Malformed, tensor_text(ref) + " has two scale tensors, '" +
                                                  inv->first + "' and '" + plain->first +
                                                  "'; which one applies?");
    auto sc = inv != s_.scales.end() ? inv : plain;
    const std::string want = name + "_scale_inv";
    if (ref.info->shape.size() < 2 || ref.info->shape.size() > 3) {
      ref.quant = problem(name, tensor_text(ref) + ": a quantised weight must be 2-D or 3-D");
    } else if (sc == s_.scales.end()) {
      ref.quant = problem(
          name,
          convention ? tensor_text(ref) + " holds FP8 codes, but its scale tensor '" + want +
                           "' (or '" + name + "_scale') is missing"
                     : tensor_text(ref) + " holds 1-byte float codes with no scale convention " +
                           "(no '" + want + "' or '" + name +
                           "_scale' tensor, no quantization_config in config.json)",
          convention);
    } else {
      used_.insert(sc->first);
      ref.quant = fp8_ref(name, ref, sc->second);
    }
  }

  const QuantRef* fp8_ref(const std::string& name, const TensorRef& ref, const TensorRef& scale) {
    const QuantConfig& c = s_.config;
    const QuantFormat f = fp8_format(ref.info->shape, scale.info->shape, c);
    if (f == QuantFormat::NoScale || !fp8_scale_dtype(scale.info->dtype) ||
        ref.info->dtype == DType::F4)
      return problem(name, tensor_text(ref) + ": its scale tensor " + tensor_text(scale) +
                               " fits neither one scale, one per row, nor " +
                               std::to_string(c.block_rows) + "x" + std::to_string(c.block_cols) +
                               " blocks (F32, BF16, F16 or F8_E8M0 scales)");
    const int64_t m = static_cast<int64_t>(ref.info->shape[ref.info->shape.size() - 2]);
    const int64_t n = static_cast<int64_t>(ref.info->shape.back());
    QuantRef q;
    q.format = f;
    q.scale = scale;
    q.stored_name = name;
    q.pow2 = c.ue8m0 && scale.info->dtype != DType::F8_E8M0;
    q.block_rows = f == QuantFormat::Fp8Block ? c.block_rows : f == QuantFormat::Fp8Channel ? 1 : m;
    q.block_cols = f == QuantFormat::Fp8Block ? c.block_cols : n;
    return add(std::move(q));
  }

  std::map<std::string, TensorRef>& tensors_;
  detail::QuantStore& s_;
  std::set<std::string> used_;
};

}  // namespace

QuantConfig read_quant_config(const std::string& dir, const detail::FileSource* files) {
  QuantConfig c;
  const detail::FileSource& src = detail::files_or_plain(files);
  const fs::path cfg = fs::path(dir) / "config.json";
  if (src.kind(cfg.string()) == detail::PathKind::Missing) return c;
  const nlohmann::json j = detail::parse_json_strict(
      detail::read_file(src, cfg.string(), detail::kMaxConfigBytes), cfg.string());
  if (!j.is_object() || !j.contains("quantization_config")) return c;
  const nlohmann::json& q = j["quantization_config"];
  if (!q.is_object()) return c;
  c.present = true;
  if (q.contains("quant_method") && q["quant_method"].is_string())
    c.method = q["quant_method"].get<std::string>();
  c.ue8m0 = q.contains("scale_fmt") && q["scale_fmt"] == "ue8m0";
  const nlohmann::json* block = q.contains("weight_block_size") ? &q["weight_block_size"] : nullptr;
  // compressed-tensors: config_groups.<group>.weights.block_structure
  if (block == nullptr && q.contains("config_groups") && q["config_groups"].is_object())
    for (const auto& [_, g] : q["config_groups"].items())
      if (g.is_object() && g.contains("weights") && g["weights"].is_object() &&
          g["weights"].contains("block_structure") && !g["weights"]["block_structure"].is_null())
        block = &g["weights"]["block_structure"];
  if (block == nullptr || block->is_null()) return c;
  if (!block->is_array() || block->size() != 2 || !(*block)[0].is_number_unsigned() ||
      !(*block)[1].is_number_unsigned() || (*block)[0].get<uint64_t>() == 0 ||
      (*block)[1].get<uint64_t>() == 0 || (*block)[0].get<uint64_t>() > (1u << 20) ||
      (*block)[1].get<uint64_t>() > (1u << 20))
    throw BadInput(InputProblem::Malformed, cfg.string() + ": quantization_config block size " +
                                                block->dump() + " is not two positive integers");
  c.block_rows = (*block)[0].get<int64_t>();
  c.block_cols = (*block)[1].get<int64_t>();
  return c;
}

void Checkpoint::pair_scales() {
  auto store = std::make_shared<detail::QuantStore>();
  // config.json beside the checkpoint, read where its files came from (a confined source).
  const std::string dir = detail::files_or_plain(source_).kind(path_) == detail::PathKind::Directory
                              ? path_
                              : fs::path(path_).parent_path().string();
  store->config = read_quant_config(dir.empty() ? "." : dir, source_);
  Pairing(tensors_, *store).run();
  quant_ = std::move(store);
}

const std::map<std::string, TensorRef>& Checkpoint::scale_tensors() const {
  static const std::map<std::string, TensorRef> none;
  return quant_ ? quant_->scales : none;
}

}  // namespace indim
