#include <cblas.h>
#include <lapacke.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "indim/checkpoint.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/safetensors.hpp"
#include "io/atomic_file.hpp"

namespace fs = std::filesystem;

namespace indim {

Dense<double> random_orthonormal(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  if (cols > rows) throw Error("random_orthonormal: needs rows >= cols");
  std::normal_distribution<double> g(0.0, 1.0);
  // Column-major Gaussian [rows, cols]; its Q factor has orthonormal columns.
  std::vector<double> a(static_cast<size_t>(rows * cols)), tau(static_cast<size_t>(cols));
  for (auto& x : a) x = g(rng);
  const auto m = static_cast<lapack_int>(rows), n = static_cast<lapack_int>(cols);
  if (LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, a.data(), m, tau.data()) != 0 ||
      LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, n, n, a.data(), m, tau.data()) != 0)
    throw Error("random_orthonormal: QR failed");
  Dense<double> q{rows, cols, std::vector<double>(a.size())};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) q.at(i, j) = a[static_cast<size_t>(i + j * rows)];
  return q;
}

Dense<double> compose_svd(const Dense<double>& u, const std::vector<double>& s,
                          const Dense<double>& v) {
  const int64_t r = static_cast<int64_t>(s.size());
  Dense<double> us = u;
  for (int64_t i = 0; i < u.rows; ++i)
    for (int64_t l = 0; l < r; ++l) us.at(i, l) *= s[l];
  Dense<double> w{u.rows, v.rows, std::vector<double>(static_cast<size_t>(u.rows * v.rows))};
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, u.rows, v.rows, r, 1.0, us.data.data(),
              us.cols, v.data.data(), v.cols, 0.0, w.data.data(), w.cols);
  return w;
}

Dense<double> random_weight(int64_t out, int64_t in, double scale, std::mt19937_64& rng) {
  const int64_t r = std::min(out, in);
  std::vector<double> s(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) s[i] = scale * std::pow(static_cast<double>(i + 1), -0.6);
  return compose_svd(random_orthonormal(out, r, rng), s, random_orthonormal(in, r, rng));
}

namespace {

TensorData tensor(const std::string& name, const Dense<double>& m, DType dtype) {
  std::vector<float> f(m.data.begin(), m.data.end());
  return {name,
          dtype,
          {static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols)},
          encode_floats(f, dtype)};
}

TensorData vector_tensor(const std::string& name, int64_t n, double value, DType dtype) {
  std::vector<float> f(static_cast<size_t>(n), static_cast<float>(value));
  return {name, dtype, {static_cast<uint64_t>(n)}, encode_floats(f, dtype)};
}

void write_sharded(const std::string& dir, const std::vector<TensorData>& tensors, int shards) {
  fs::create_directories(dir);
  if (shards <= 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
    return;
  }
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  const size_t per = (tensors.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
    std::vector<TensorData> part;
    for (size_t i = s * per; i < std::min(tensors.size(), (s + 1) * per); ++i) {
      part.push_back(tensors[i]);
      weight_map[tensors[i].name] = name;
      total += tensors[i].bytes.size();
    }
    write_safetensors((fs::path(dir) / name).string(), part);
  }
  write_shard_index((fs::path(dir) / "model.safetensors.index.json").string(), weight_map, total);
}

void check_options(const DemoOptions& o) {
  if (o.hidden < 1 || o.intermediate < 1 || o.kv_dim < 1 || o.layers < 1 || o.vocab < 1)
    throw UsageError("demo: sizes and layer count must be at least 1");
  // Bounds on what one option may make the generator allocate (a 16384 x 65536 fp64 matrix is
  // 8 GiB already).
  if (o.hidden > 16384 || o.intermediate > 65536 || o.kv_dim > 16384 || o.layers > 256 ||
      o.vocab > 262144)
    throw UsageError(
        "demo: sizes are bounded (hidden, kv-dim <= 16384, intermediate <= 65536, layers <= 256)");
  if (o.lora_rank < 1 || o.lora_rank > std::min(o.kv_dim, o.hidden))
    throw UsageError("demo: --lora-rank must lie in [1, min(kv-dim, hidden)]");
}

// LoRA fine-tune of one projection: W0 + s B A of rank r with singular values 0.9 .. 0.4 of
// sigma_0, along random directions the base does not have. B = P diag(d) / s, A = Q^T; written
// as a PEFT adapter and, merged, as a checkpoint.
void add_lora(const std::string& module_name, int out, int in, const Dense<double>& w0,
              const DemoOptions& o, std::mt19937_64& rng, std::vector<TensorData>& lora,
              std::vector<TensorData>& adapter) {
  const std::string name = module_name + ".weight";
  std::vector<double> d(o.lora_rank);
  for (int i = 0; i < o.lora_rank; ++i) d[i] = 0.9 - 0.5 * i / std::max(1, o.lora_rank - 1);
  Dense<double> pm = random_orthonormal(out, o.lora_rank, rng);
  Dense<double> qm = random_orthonormal(in, o.lora_rank, rng);
  Dense<double> delta = compose_svd(pm, d, qm);
  for (size_t i = 0; i < delta.data.size(); ++i) delta.data[i] += w0.data[i];
  lora.push_back(tensor(name, delta, o.dtype));
  const double scale = 2.0;  // lora_alpha = 2 r
  Dense<double> b = pm, a{o.lora_rank, in, std::vector<double>(qm.data.size())};
  for (int64_t i = 0; i < b.rows; ++i)
    for (int j = 0; j < o.lora_rank; ++j) b.at(i, j) *= d[j] / scale;
  for (int64_t i = 0; i < in; ++i)
    for (int j = 0; j < o.lora_rank; ++j) a.at(j, i) = qm.at(i, j);
  const std::string module = "base_model.model." + module_name;
  adapter.push_back(tensor(module + ".lora_A.weight", a, o.dtype));
  adapter.push_back(tensor(module + ".lora_B.weight", b, o.dtype));
}

// The four folders: a sharded base with config.json, the full and merged LoRA fine-tunes, and
// the PEFT adapter.
DemoPaths write_demo(const std::string& dir, const DemoOptions& o,
                     const std::vector<TensorData>& base, const std::vector<TensorData>& full,
                     const std::vector<TensorData>& lora, const std::vector<TensorData>& adapter) {
  DemoPaths paths{(fs::path(dir) / "base").string(), (fs::path(dir) / "full").string(),
                  (fs::path(dir) / "lora").string(), (fs::path(dir) / "lora-adapter").string()};
  write_sharded(paths.base, base, o.base_shards);
  const nlohmann::json model_config = {{"model_type", "llama"},
                                       {"architectures", {"LlamaForCausalLM"}},
                                       {"hidden_size", o.hidden},
                                       {"intermediate_size", o.intermediate},
                                       {"num_hidden_layers", o.layers},
                                       {"vocab_size", o.vocab},
                                       {"torch_dtype", o.dtype == DType::F32   ? "float32"
                                                       : o.dtype == DType::F16 ? "float16"
                                                                               : "bfloat16"}};
  detail::write_file_atomic((fs::path(paths.base) / "config.json").string(),
                            model_config.dump(2) + "\n");
  write_sharded(paths.full, full, 1);
  write_sharded(paths.lora, lora, 1);
  fs::create_directories(paths.lora_adapter);
  write_safetensors((fs::path(paths.lora_adapter) / "adapter_model.safetensors").string(), adapter);
  const nlohmann::json config = {{"peft_type", "LORA"},
                                 {"task_type", "CAUSAL_LM"},
                                 {"r", o.lora_rank},
                                 {"lora_alpha", 2 * o.lora_rank},
                                 {"lora_dropout", 0.0},
                                 {"target_modules", {"q_proj", "v_proj"}},
                                 {"bias", "none"},
                                 {"fan_in_fan_out", false},
                                 {"use_rslora", false},
                                 {"use_dora", false},
                                 {"init_lora_weights", true},
                                 {"rank_pattern", nlohmann::json::object()},
                                 {"alpha_pattern", nlohmann::json::object()},
                                 {"modules_to_save", nullptr},
                                 {"base_model_name_or_path", paths.base}};
  detail::write_file_atomic((fs::path(paths.lora_adapter) / "adapter_config.json").string(),
                            config.dump(2) + "\n");
  return paths;
}

}  // namespace

DemoPaths generate_demo(const std::string& dir, const DemoOptions& o) {
  check_options(o);
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<TensorData> base, full, lora, adapter;
  auto all = [&](TensorData t) {
    base.push_back(t), full.push_back(t), lora.push_back(std::move(t));
  };
  all(tensor("model.embed_tokens.weight", random_weight(o.vocab, o.hidden, 1.0, rng), o.dtype));
  struct Proj {
    const char* name;
    int out, in;
    bool lora;
  };
  const Proj projs[] = {
      {"self_attn.q_proj", o.hidden, o.hidden, true},
      {"self_attn.k_proj", o.kv_dim, o.hidden, false},
      {"self_attn.v_proj", o.kv_dim, o.hidden, true},
      {"self_attn.o_proj", o.hidden, o.hidden, false},
      {"mlp.gate_proj", o.intermediate, o.hidden, false},
      {"mlp.up_proj", o.intermediate, o.hidden, false},
      {"mlp.down_proj", o.hidden, o.intermediate, false},
  };
  for (int l = 0; l < o.layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    all(vector_tensor(prefix + "input_layernorm.weight", o.hidden, 1.0, o.dtype));
    all(vector_tensor(prefix + "post_attention_layernorm.weight", o.hidden, 1.0, o.dtype));
    for (const Proj& p : projs) {
      const std::string name = prefix + p.name + ".weight";
      Dense<double> w0 = random_weight(p.out, p.in, 1.0, rng);
      // Full fine-tune: a small dense update (spectral norm about 1% of sigma_0).
      Dense<double> wf = w0;
      const double sd = 0.01 / (std::sqrt(double(p.out)) + std::sqrt(double(p.in)));
      for (auto& x : wf.data) x += sd * g(rng);
      base.push_back(tensor(name, w0, o.dtype));
      full.push_back(tensor(name, wf, o.dtype));
      if (!p.lora) {
        lora.push_back(base.back());
        continue;
      }
      add_lora(prefix + p.name, p.out, p.in, w0, o, rng, lora, adapter);
    }
  }
  all(vector_tensor("model.norm.weight", o.hidden, 1.0, o.dtype));
  all(tensor("lm_head.weight", random_weight(o.vocab, o.hidden, 1.0, rng), o.dtype));

  return write_demo(dir, o, base, full, lora, adapter);
}

}  // namespace indim
