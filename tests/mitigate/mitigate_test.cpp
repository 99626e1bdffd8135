// indim mitigate on real generated checkpoints: the tensors each variant folder holds against an
// fp64 computation of the formulas from an independent SVD (tests/reference.hpp), for a full
// fine-tune (fp32, and a sharded bf16 one), GPT-2 Conv1D, a PEFT adapter written exactly (plain
// and rsLoRA, with an embedding) and truncated; lambda = 1 reproduces the fine-tune byte for
// byte; lambda = 0 leaves none of the removed directions among the new top k.
#include "indim/mitigate.hpp"

#include <gtest/gtest.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/peft.hpp"
#include "indim/quant.hpp"
#include "mitigate/encode.hpp"
#include "pipeline/merge.hpp"
#include "quant_util.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;
using Json = nlohmann::json;

namespace {

TensorData stored(const std::string& name, const Dense<double>& m, DType d = DType::F32) {
  std::vector<float> v(m.data.begin(), m.data.end());
  return {
      name, d, {static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols)}, encode_floats(v, d)};
}

// What storage in `d` keeps of m.
Dense<double> kept(Dense<double> m, DType d = DType::F32) {
  std::vector<float> v(m.data.begin(), m.data.end());
  const std::vector<uint8_t> bytes = encode_floats(v, d);
  convert_elements(bytes.data(), d, m.data.size(), m.data.data());
  return m;
}

Dense<double> sub(const Dense<double>& a, const Dense<double>& b) {
  Dense<double> c = a;
  for (size_t i = 0; i < c.data.size(); ++i) c.data[i] -= b.data[i];
  return c;
}

double fro(const Dense<double>& a) {
  double s = 0;
  for (double x : a.data) s += x * x;
  return std::sqrt(s);
}

double max_abs_diff(const Dense<double>& a, const Dense<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.data.size(); ++i) m = std::max(m, std::fabs(a.data[i] - b.data[i]));
  return m;
}

// The paper's formulas in fp64 on W0 and W as analysed, with intruders from an independent SVD.
struct Reference {
  Dense<double> w0, w, ui;  // ui: [m, q], the intruders' left vectors
  std::vector<double> sigma;

  Reference(const Dense<double>& base, const Dense<double>& tuned, int k, double eps)
      : w0(base), w(tuned) {
    const Dense<double> u = test::reference_left(w), u0 = test::reference_left(w0);
    const auto sim = test::reference_similarity(u, u0, k);
    std::vector<int> idx;
    for (int j = 0; j < k; ++j) {
      EXPECT_GT(std::fabs(sim.maxcos[j] - eps), 1e-3) << "a value too near eps";
      if (sim.maxcos[j] < eps) idx.push_back(j);
    }
    ui = {w.rows, static_cast<int64_t>(idx.size()),
          std::vector<double>(static_cast<size_t>(w.rows) * idx.size())};
    for (int64_t i = 0; i < w.rows; ++i)
      for (size_t l = 0; l < idx.size(); ++l) ui.at(i, static_cast<int64_t>(l)) = u.at(i, idx[l]);
    for (int j : idx) sigma.push_back(fro(test::matmul(test::transpose(column(u, j)), w)));
  }
  static Dense<double> column(const Dense<double>& u, int j) {
    Dense<double> c{u.rows, 1, std::vector<double>(static_cast<size_t>(u.rows))};
    for (int64_t i = 0; i < u.rows; ++i) c.data[i] = u.at(i, j);
    return c;
  }
  int64_t q() const { return ui.cols; }
  Dense<double> intruders(double lambda) const {  // W + (L - 1) U_I U_I^T W
    Dense<double> p = test::matmul(ui, test::matmul(test::transpose(ui), w));
    Dense<double> x = w;
    for (size_t i = 0; i < x.data.size(); ++i) x.data[i] -= (1 - lambda) * p.data[i];
    return x;
  }
  Dense<double> variant(const std::string& kind, double lambda) const {
    const Dense<double> wl = intruders(lambda), dw = sub(w, w0), dl = sub(wl, w0);
    if (kind == "intruders") return wl;
    const double f = kind == "shrink" ? fro(dl) / fro(dw) : fro(dw) / fro(dl);
    Dense<double> x = w0;
    for (size_t i = 0; i < x.data.size(); ++i)
      x.data[i] += f * (kind == "shrink" ? dw : dl).data[i];
    return x;
  }
};

Dense<double> read_tensor(const std::string& path, const std::string& name) {
  const Checkpoint c = Checkpoint::open(path);
  const TensorRef* t = c.find(name);
  if (t == nullptr) throw std::runtime_error(path + " has no " + name);
  return detail::load_matrix<double>(*t);
}

// Largest |cos| of any of `u`'s top-k left vectors with each column of `removed`.
double worst_return(const Dense<double>& w, const Dense<double>& removed, int k) {
  const Dense<double> u = test::reference_left(w);
  double worst = 0;
  for (int j = 0; j < k; ++j)
    for (int64_t i = 0; i < removed.cols; ++i) {
      double d = 0;
      for (int64_t r = 0; r < w.rows; ++r) d += u.at(r, j) * removed.at(r, i);
      worst = std::max(worst, std::fabs(d));
    }
  return worst;
}

// Strong new directions on top of a small dense change: a fine-tune with intruders.
Dense<double> tuned_from(const Dense<double>& w0, int q, double strength, std::mt19937_64& rng) {
  Dense<double> w = w0;
  const Dense<double> b = random_orthonormal(w0.rows, q, rng);
  const Dense<double> a = test::transpose(random_orthonormal(w0.cols, q, rng));
  const Dense<double> ba = test::matmul(b, a), noise = test::gaussian(w0.rows, w0.cols, 0.003, rng);
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += strength * ba.data[i] + noise.data[i];
  return w;
}

MitigateOptions options(const std::string& base, const std::string& tuned, const std::string& out) {
  MitigateOptions o;
  o.analysis.base = base;
  o.analysis.tuned = {tuned};
  o.analysis.backend = "cpu";
  o.analysis.precision = Precision::F64;
  o.analysis.k = 8;
  o.analysis.cache_dir = "";
  o.out_dir = out;
  o.lambdas = {1, 0.5, 0};
  return o;
}

bool same_bytes(const std::string& a, const std::string& b) {
  return test::read_text(a) == test::read_text(b);
}

const char* kinds[] = {"intruders", "shrink", "rescale"};

}  // namespace

TEST(Mitigate, FullFineTuneEveryVariantAgreesWithTheFormulas) {
  test::TempDir dir;
  std::mt19937_64 rng(5);
  const std::string q = "model.layers.0.self_attn.q_proj.weight",
                    up = "model.layers.0.mlp.up_proj.weight", emb = "model.embed_tokens.weight";
  const Dense<double> q0 = kept(random_weight(64, 48, 1.0, rng)),
                      up0 = kept(random_weight(96, 48, 1.0, rng)),
                      e0 = kept(test::gaussian(40, 48, 1, rng));
  const Dense<double> q1 = kept(tuned_from(q0, 2, 1.2, rng)),
                      up1 = kept(tuned_from(up0, 3, 1.5, rng));
  write_safetensors(dir / "base.safetensors", {stored(q, q0), stored(up, up0), stored(emb, e0)});
  fs::create_directories(dir / "ft");
  write_safetensors(dir / "ft/model.safetensors",
                    {stored(q, q1), stored(up, up1), stored(emb, e0)});
  test::write_text(dir / "ft/config.json", R"({"model_type":"llama"})");
  test::write_text(dir / "ft/tokenizer.json", R"({"version":"1.0"})");
  test::write_text(dir / "ft/optimizer.pt", "not copied");
  MitigateOptions o = options(dir / "base.safetensors", dir / "ft", dir / "out");
  o.analysis.html = true;
  const MitigationResult r = mitigate(o);
  ASSERT_EQ(r.variant_dirs.size(), 9u);
  ASSERT_EQ(r.records.size(), 2u);
  for (const auto& [name, w0, w] : {std::tuple{q, q0, q1}, std::tuple{up, up0, up1}}) {
    SCOPED_TRACE(name);
    const Reference ref(w0, w, 8, 0.5);
    ASSERT_GT(ref.q(), 0);
    for (double lambda : {1.0, 0.5, 0.0})
      for (const char* kind : kinds) {
        const std::string folder = dir / "out/" + std::string(kind) + "-" + eps_key(lambda);
        const Dense<double> got = read_tensor(folder + "/model.safetensors", name);
        const Dense<double> want = kept(ref.variant(kind, lambda));
        EXPECT_LE(max_abs_diff(got, want), 2e-6) << folder;
        if (lambda == 0 && std::string(kind) == "intruders")
          EXPECT_LT(worst_return(got, ref.ui, 8), 1e-3) << "a removed direction is back";
      }
  }
  for (const char* kind : kinds) {  // lambda = 1: the fine-tune itself, byte for byte
    const std::string f = dir / "out/" + std::string(kind) + "-1";
    EXPECT_TRUE(same_bytes(f + "/model.safetensors", dir / "ft/model.safetensors")) << kind;
    EXPECT_TRUE(same_bytes(f + "/config.json", dir / "ft/config.json"));
    EXPECT_TRUE(same_bytes(f + "/tokenizer.json", dir / "ft/tokenizer.json"));
    EXPECT_FALSE(fs::exists(f + "/optimizer.pt"));
  }
  // Untouched tensors keep their bytes; the changed ones keep name, dtype and shape.
  const Checkpoint ft = Checkpoint::open(dir / "ft"), v = Checkpoint::open(dir / "out/shrink-0");
  for (const auto& [name, ref] : ft.tensors()) {
    const TensorRef* other = v.find(name);
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(other->info->dtype, ref.info->dtype);
    EXPECT_EQ(other->info->shape, ref.info->shape);
  }
  EXPECT_EQ(read_tensor(dir / "out/intruders-0/model.safetensors", emb).data, e0.data);
  const Json m = Json::parse(test::read_text(dir / "out/mitigation.json"));
  ASSERT_EQ(m["matrices"].size(), 2u);
  for (const auto& rec : m["matrices"])
    for (const auto& var : rec["variants"]) {
      if (var["kind"] == "intruders")
        for (size_t i = 0; i < rec["intruders"].size(); ++i)
          EXPECT_NEAR(var["sigma_after"][i].get<double>(),
                      var["lambda"].get<double>() * rec["intruders"][i]["sigma"].get<double>(),
                      1e-9);
      if (var["kind"] == "rescale")
        EXPECT_NEAR(var["update_fro"].get<double>(), rec["update_fro"].get<double>(), 1e-9);
    }
  const std::string html = test::read_text(dir / "out/report.html");
  EXPECT_NE(html.find("id=\"mitigation\""), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "out/report.json"));
}

TEST(Mitigate, ShardedBf16CheckpointKeepsItsLayout) {
  test::TempDir dir;
  std::mt19937_64 rng(9);
  const std::string a = "model.layers.0.self_attn.o_proj.weight",
                    b = "model.layers.1.self_attn.o_proj.weight";
  const Dense<double> a0 = kept(random_weight(48, 48, 1.0, rng), DType::BF16),
                      b0 = kept(random_weight(48, 48, 1.0, rng), DType::BF16);
  const Dense<double> a1 = kept(tuned_from(a0, 2, 1.3, rng), DType::BF16);
  write_safetensors(dir / "base.safetensors",
                    {stored(a, a0, DType::BF16), stored(b, b0, DType::BF16)});
  fs::create_directories(dir / "ft");
  write_safetensors(dir / "ft/model-00001-of-00002.safetensors", {stored(a, a1, DType::BF16)});
  write_safetensors(dir / "ft/model-00002-of-00002.safetensors", {stored(b, b0, DType::BF16)});
  write_shard_index(
      dir / "ft/model.safetensors.index.json",
      {{a, "model-00001-of-00002.safetensors"}, {b, "model-00002-of-00002.safetensors"}}, 0);
  MitigateOptions o = options(dir / "base.safetensors", dir / "ft", dir / "out");
  o.lambdas = {0};
  o.controls = {};
  mitigate(o);
  const std::string f = dir / "out/intruders-0";
  EXPECT_TRUE(
      same_bytes(f + "/model.safetensors.index.json", dir / "ft/model.safetensors.index.json"));
  EXPECT_TRUE(same_bytes(f + "/model-00002-of-00002.safetensors",
                         dir / "ft/model-00002-of-00002.safetensors"));
  const Dense<double> got = read_tensor(f, a);
  const Reference ref(a0, a1, 8, 0.5);
  const Dense<double> want = ref.variant("intruders", 0);
  EXPECT_LE(max_abs_diff(got, kept(want, DType::BF16)), 1e-2);  // at most one bf16 step off
  EXPECT_LE(max_abs_diff(got, want), 0.01 * 1.2);
  EXPECT_EQ(Checkpoint::open(f).find(a)->info->dtype, DType::BF16);
  EXPECT_FALSE(fs::exists(dir / "out/shrink-0"));
}

TEST(Mitigate, Gpt2Conv1DIsWrittenInItsStoredOrientation) {
  test::TempDir dir;
  std::mt19937_64 rng(13);
  const std::string name = "h.0.attn.c_attn.weight";
  const Dense<double> w0 = kept(random_weight(48, 96, 1.0, rng));  // analysed [out, in]
  const Dense<double> w1 = kept(tuned_from(w0, 2, 1.4, rng));
  fs::create_directories(dir / "base");
  fs::create_directories(dir / "ft");
  // GPT-2 stores Conv1D weights [in, out].
  write_safetensors(dir / "base/model.safetensors", {stored(name, test::transpose(w0))});
  write_safetensors(dir / "ft/model.safetensors", {stored(name, test::transpose(w1))});
  for (const char* d : {"base", "ft"})
    test::write_text(dir / (std::string(d) + "/config.json"), R"({"model_type":"gpt2"})");
  MitigateOptions o = options(dir / "base", dir / "ft", dir / "out");
  o.lambdas = {0.25};
  const MitigationResult r = mitigate(o);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_TRUE(r.records[0].conv1d);
  const Reference ref(w0, w1, 8, 0.5);
  for (const char* kind : kinds) {
    const Dense<double> got = read_tensor(dir / "out/" + std::string(kind) + "-0.25", name);
    EXPECT_LE(max_abs_diff(got, kept(test::transpose(ref.variant(kind, 0.25)))), 2e-6) << kind;
  }
}

namespace {

// An adapter folder: per module A [r, in] and B [out, r] (embeddings: A [r, vocab], B [dim, r]).
struct AdapterCase {
  test::TempDir dir;
  std::vector<std::string> modules{"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
                                   "model.embed_tokens"};
  std::vector<Dense<double>> w0, a, b;
  bool rslora = false;
  double alpha = 8;
  int r = 4;

  explicit AdapterCase(bool rs) : rslora(rs) {
    std::mt19937_64 rng(rs ? 21 : 22);
    const std::vector<std::pair<int, int>> shapes = {{96, 96}, {128, 96}, {100, 96}};
    std::vector<TensorData> base, adapter;
    for (size_t i = 0; i < modules.size(); ++i) {
      const bool emb = i == 2;
      const auto [out, in] = shapes[i];
      w0.push_back(kept(random_weight(out, in, 1.0, rng)));
      // embeddings: the update (B A)^T lands on [vocab, dim] = [out, in]
      a.push_back(kept(test::gaussian(r, emb ? out : in, 0.6, rng)));
      b.push_back(kept(test::gaussian(emb ? in : out, r, 0.6, rng)));
      base.push_back(stored(modules[i] + ".weight", w0[i]));
      const std::string p = "base_model.model." + modules[i];
      adapter.push_back(stored(p + (emb ? ".lora_embedding_A" : ".lora_A.weight"), a[i]));
      adapter.push_back(stored(p + (emb ? ".lora_embedding_B" : ".lora_B.weight"), b[i]));
    }
    write_safetensors(dir / "base.safetensors", base);
    fs::create_directories(dir / "lora");
    write_safetensors(dir / "lora/adapter_model.safetensors", adapter);
    test::write_text(dir / "lora/adapter_config.json",
                     std::string(R"({"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":)") +
                         R"(["q_proj","up_proj","embed_tokens"],"use_rslora":)" +
                         (rslora ? "true" : "false") + "}");
    test::write_text(dir / "lora/README.md", "an adapter");
  }
  double scale() const { return rslora ? alpha / 2.0 : alpha / r; }
  // The update as analysed ([out, in]); embeddings (B A)^T.
  static Dense<double> update(const Dense<double>& a, const Dense<double>& b, double s, bool emb) {
    Dense<double> ba = test::matmul(b, a);
    if (emb) ba = test::transpose(ba);
    for (double& x : ba.data) x *= s;
    return ba;
  }
  Dense<double> merged(size_t i) const {
    Dense<double> w = w0[i];
    const Dense<double> d = update(a[i], b[i], scale(), i == 2);
    for (size_t j = 0; j < w.data.size(); ++j) w.data[j] += d.data[j];
    return w;
  }
  MitigateOptions opts(const std::string& out) const {
    MitigateOptions o = options(dir / "base.safetensors", dir / "lora", dir / out);
    o.analysis.select.include = {"layers|embed"};
    return o;
  }
};

// The update a written adapter makes for module `m`, as analysed, read the way PEFT reads it.
Dense<double> written_update(const std::string& folder, const std::string& m, int64_t* rank) {
  const Adapter ad = Adapter::open(folder);
  const LoraModule& mod = ad.modules().at(m);
  *rank = mod.r;
  return AdapterCase::update(detail::load_matrix<double>(mod.a), detail::load_matrix<double>(mod.b),
                             ad.config().scale_for(m), mod.embedding);
}

// The best rank-k approximation of x and the Frobenius norm it drops.
Dense<double> best_rank(const Dense<double>& x, int64_t k, double* lost) {
  const int64_t m = x.rows, n = x.cols, p = std::min(m, n);
  std::vector<double> a = x.data, s(static_cast<size_t>(p)), u(static_cast<size_t>(m * p)),
                      vt(static_cast<size_t>(p * n)), superb(static_cast<size_t>(p));
  EXPECT_EQ(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', m, n, a.data(), n, s.data(), u.data(), p,
                           vt.data(), n, superb.data()),
            0);
  Dense<double> out{m, n, std::vector<double>(static_cast<size_t>(m * n), 0.0)};
  *lost = 0;
  for (int64_t l = 0; l < p; ++l) {
    if (l >= k) {
      *lost += s[l] * s[l];
      continue;
    }
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) out.at(i, j) += u[i * p + l] * s[l] * vt[l * n + j];
  }
  *lost = std::sqrt(*lost);
  return out;
}

class MitigateAdapter : public ::testing::TestWithParam<bool> {};

}  // namespace

TEST_P(MitigateAdapter, ExactUpdateThroughRankAndAlphaPatterns) {
  AdapterCase c(GetParam());
  const MitigationResult r = mitigate(c.opts("out"));
  ASSERT_EQ(r.records.size(), 3u) << "every module should have intruders";
  for (size_t i = 0; i < c.modules.size(); ++i) {
    SCOPED_TRACE(c.modules[i]);
    const Reference ref(c.w0[i], c.merged(i), 8, 0.5);
    for (double lambda : {1.0, 0.5, 0.0})
      for (const char* kind : kinds) {
        const std::string folder = c.dir / "out/" + std::string(kind) + "-" + eps_key(lambda);
        int64_t rank = 0;
        const Dense<double> got = written_update(folder, c.modules[i], &rank);
        const Dense<double> want = sub(ref.variant(kind, lambda), c.w0[i]);
        EXPECT_LE(max_abs_diff(got, want), 1e-5 * fro(want) + 1e-12) << folder;
        const bool grows = std::string(kind) != "shrink" && lambda != 1;
        EXPECT_EQ(rank, grows ? c.r + ref.q() : c.r) << folder;
        if (lambda == 0 && std::string(kind) == "intruders") {
          Dense<double> w = c.w0[i];
          for (size_t j = 0; j < w.data.size(); ++j) w.data[j] += got.data[j];
          EXPECT_LT(worst_return(w, ref.ui, 8), 1e-3);
        }
      }
  }
  for (const char* kind : kinds) {  // lambda = 1: the adapter itself
    const std::string f = c.dir / "out/" + std::string(kind) + "-1";
    EXPECT_TRUE(
        same_bytes(f + "/adapter_model.safetensors", c.dir / "lora/adapter_model.safetensors"));
    EXPECT_TRUE(same_bytes(f + "/adapter_config.json", c.dir / "lora/adapter_config.json"));
    EXPECT_TRUE(same_bytes(f + "/README.md", c.dir / "lora/README.md"));
  }
  // shrink: the factors' bytes stay, only alpha_pattern changes.
  const Adapter ad = Adapter::open(c.dir / "out/shrink-0.5"), was = Adapter::open(c.dir / "lora");
  const LoraModule &m1 = ad.modules().at(c.modules[0]), &m0 = was.modules().at(c.modules[0]);
  EXPECT_EQ(m1.a.info->dtype, DType::F32);
  EXPECT_EQ(
      std::memcmp(m1.a.file->data(*m1.a.info), m0.a.file->data(*m0.a.info), m0.a.info->nbytes()),
      0);
}

INSTANTIATE_TEST_SUITE_P(Scaling, MitigateAdapter, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "rslora" : "plain"; });

TEST(MitigateAdapterConv1D, Gpt2FactorsKeepPeftsOrientation) {
  test::TempDir dir;
  std::mt19937_64 rng(17);
  const Dense<double> w0 = kept(random_weight(96, 96, 1.0, rng));  // analysed [out, in]
  const Dense<double> a = kept(test::gaussian(4, 96, 0.6, rng)),
                      b = kept(test::gaussian(96, 4, 0.6, rng));
  fs::create_directories(dir / "gpt2");
  write_safetensors(dir / "gpt2/model.safetensors",
                    {stored("h.0.attn.c_proj.weight", test::transpose(w0))});  // stored [in, out]
  test::write_text(dir / "gpt2/config.json", R"({"model_type":"gpt2"})");
  fs::create_directories(dir / "lora");
  write_safetensors(dir / "lora/adapter_model.safetensors",
                    {stored("base_model.model.h.0.attn.c_proj.lora_A.weight", a),
                     stored("base_model.model.h.0.attn.c_proj.lora_B.weight", b)});
  test::write_text(dir / "lora/adapter_config.json",
                   R"({"peft_type":"LORA","r":4,"lora_alpha":8,"fan_in_fan_out":true})");
  MitigateOptions o = options(dir / "gpt2", dir / "lora", dir / "out");
  o.analysis.select.include = {"c_proj"};
  o.lambdas = {0};
  const MitigationResult r = mitigate(o);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_TRUE(r.records[0].conv1d);
  Dense<double> w = w0;  // W = W0 + s B A as analysed
  const Dense<double> d = AdapterCase::update(a, b, 2.0, false);
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += d.data[i];
  const Reference ref(w0, w, 8, 0.5);
  for (const char* kind : kinds) {
    int64_t rank = 0;
    const Dense<double> got =
        written_update(dir / "out/" + std::string(kind) + "-0", "h.0.attn.c_proj", &rank);
    const Dense<double> want = sub(ref.variant(kind, 0), w0);
    EXPECT_LE(max_abs_diff(got, want), 1e-5 * fro(want)) << kind;
  }
}

TEST(MitigateAdapterRank, TruncatedAsPeftDoesWithItsErrorReported) {
  AdapterCase c(false);
  MitigateOptions o = c.opts("out");
  o.lambdas = {0.5};
  o.adapter_rank = "r";
  const MitigationResult r = mitigate(o);
  for (size_t i = 0; i < c.modules.size(); ++i) {
    SCOPED_TRACE(c.modules[i]);
    const Reference ref(c.w0[i], c.merged(i), 8, 0.5);
    const MitigationRecord* rec = nullptr;
    for (const auto& x : r.records)
      if (x.name == c.modules[i] + ".weight") rec = &x;
    ASSERT_NE(rec, nullptr);
    for (size_t v = 0; v < 3; ++v) {
      const std::string kind = kinds[v];
      int64_t rank = 0;
      const Dense<double> got = written_update(c.dir / "out/" + kind + "-0.5", c.modules[i], &rank);
      const Dense<double> full = sub(ref.variant(kind, 0.5), c.w0[i]);
      double lost = 0;
      const Dense<double> want = best_rank(full, c.r, &lost);
      EXPECT_EQ(rank, c.r) << kind;
      EXPECT_LE(max_abs_diff(got, want), 1e-5 * fro(want)) << kind;
      EXPECT_NEAR(rec->variants[v].truncation_error, lost / fro(full), 1e-6) << kind;
      // The intruders lie mostly in the span of B, so little is cut, but something is.
      if (kind != "shrink") EXPECT_GT(rec->variants[v].truncation_error, 1e-7) << kind;
    }
  }
}

TEST(MitigateRefusals, DoraOptionsAndTheCli) {
  AdapterCase c(false);
  MitigateOptions o = c.opts("out");
  o.lambdas = {1.5};
  EXPECT_THROW(mitigate(o), UsageError);
  o.lambdas = {0.5, 0.5};
  EXPECT_THROW(mitigate(o), UsageError);
  o.lambdas = {0.5};
  o.adapter_rank = "two";
  EXPECT_THROW(mitigate(o), UsageError);
  o.adapter_rank = "exact";
  o.controls = {"uniform"};
  EXPECT_THROW(mitigate(o), UsageError);
  test::write_text(c.dir / "lora/adapter_config.json",
                   R"({"peft_type":"LORA","r":4,"lora_alpha":8,"use_dora":true})");
  const std::string cli = std::string(INDIM_CLI_PATH) + " mitigate " +
                          (c.dir / "base.safetensors") + " " + (c.dir / "lora") +
                          " --backend cpu --no-cache --out " + (c.dir / "cli") + " 2>&1";
  test::CommandResult res = test::run_command(cli + " --include layers");
  EXPECT_EQ(res.rc, 2) << res.out;
  EXPECT_NE(res.out.find("DoRA"), std::string::npos) << res.out;
  test::write_text(c.dir / "lora/adapter_config.json",
                   R"({"peft_type":"LORA","r":4,"lora_alpha":8})");
  res = test::run_command(cli + " --include layers --lambda 2");
  EXPECT_EQ(res.rc, 1) << res.out;
  res = test::run_command(cli + " --include 'layers|embed' --lambda 0.75,0 --no-controls -q");
  ASSERT_EQ(res.rc, 0) << res.out;
  EXPECT_TRUE(fs::exists(c.dir / "cli/intruders-0.75/adapter_config.json"));
  EXPECT_TRUE(fs::exists(c.dir / "cli/intruders-0/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(c.dir / "cli/shrink-0"));
  EXPECT_TRUE(fs::exists(c.dir / "cli/mitigation.json"));
}

// A fine-tune stored in FP8 (codes with block scales) has no variant mitigate can write in its
// own format: refused before the analysis, naming the tensor, exit 2, nothing left in --out.
TEST(MitigateRefusals, AQuantisedFineTuneBeforeAnyWork) {
  test::TempDir dir;
  std::mt19937_64 rng(11);
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  const Dense<double> w0 = kept(random_weight(64, 64, 1.0, rng));
  const Dense<double> w = tuned_from(w0, 2, 3.0, rng);
  write_safetensors(dir / "base.safetensors", {stored(name, w0)});
  fs::create_directories(dir / "fp8");
  const Quantised q = quantise_fp8(w.data, 64, 64, DType::F8_E4M3, 32, 32);
  write_safetensors(dir / "fp8/model.safetensors",
                    test::fp8_tensors(name, q, DType::F8_E4M3, 64, 64));
  test::write_text(dir / "fp8/config.json",
                   R"({"quantization_config":{"quant_method":"fp8","fmt":"e4m3",)"
                   R"("weight_block_size":[32,32]}})");
  try {
    mitigate(options(dir / "base.safetensors", dir / "fp8", dir / "out"));
    FAIL() << "an FP8 fine-tune was mitigated";
  } catch (const BadInput& e) {
    EXPECT_EQ(e.problem(), InputProblem::Unsupported);
    EXPECT_NE(std::string(e.what()).find("'" + name + "' is stored as F8_E4M3 with scales"),
              std::string::npos)
        << e.what();
  }
  for (const auto& e : fs::directory_iterator(dir / "out"))  // no journal, no variant copy
    EXPECT_EQ(e.path().filename().string().find(".indim"), 0u) << e.path();
  const test::CommandResult res = test::run_command(
      std::string(INDIM_CLI_PATH) + " mitigate " + (dir / "base.safetensors") + " " +
      (dir / "fp8") + " --backend cpu --no-cache --out " + (dir / "cli") + " 2>&1");
  EXPECT_EQ(res.rc, 2) << res.out;
  EXPECT_NE(res.out.find("F8_E4M3"), std::string::npos) << res.out;
}

// The rescale control of an F16 tensor can pass 65504 (a huge intruder removed, a small rest
// scaled up to its norm): the variant is refused, naming it and the element, and no folder
// is published; never written with an infinity.
TEST(MitigateRefusals, AVariantBeyondItsDtypesRangeIsNeverWritten) {
  test::TempDir dir;
  std::mt19937_64 rng(13);
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  const Dense<double> w0 = kept(random_weight(64, 64, 1.0, rng), DType::F16);
  const Dense<double> u = random_orthonormal(64, 1, rng), v = random_orthonormal(64, 1, rng);
  Dense<double> w = w0;
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 64; ++j) w.at(i, j) += 3e5 * u.data[i] * v.data[j];
  w.at(3, 5) += 1000;
  w = kept(w, DType::F16);
  ASSERT_LT(*std::max_element(w.data.begin(), w.data.end()), 65504.0);
  write_safetensors(dir / "base.safetensors", {stored(name, w0, DType::F16)});
  write_safetensors(dir / "tuned.safetensors", {stored(name, w, DType::F16)});
  MitigateOptions o = options(dir / "base.safetensors", dir / "tuned.safetensors", dir / "out");
  o.analysis.k = 1;
  o.lambdas = {0};
  o.controls = {"rescale"};
  try {
    mitigate(o);
    FAIL() << "a variant beyond F16 was written";
  } catch (const BadInput& e) {
    EXPECT_EQ(e.problem(), InputProblem::Overflow);
    const std::string what = e.what();
    EXPECT_NE(what.find("'" + name + "' in variant rescale-0 would hold"), std::string::npos)
        << what;
    EXPECT_NE(what.find("beyond F16's range"), std::string::npos) << what;
  }
  for (const char* folder : {"intruders-0", "rescale-0"})
    EXPECT_FALSE(fs::exists(dir / ("out/" + std::string(folder)))) << folder;
  for (const auto& e : fs::directory_iterator(dir / "out"))
    EXPECT_EQ(e.path().filename().string().find(".rescale"), std::string::npos) << e.path();
}

// A run killed before publishing leaves ".<variant>.tmp.<pid>" folders (or "<variant>.old.<pid>"
// while publishing), each a checkpoint's copy; the next run into the same --out, its inputs
// checked and holding the folder's lock, removes them, and nothing else.
TEST(Mitigate, AKilledRunsUnpublishedFoldersGoWithTheNextRun) {
  test::TempDir dir;
  std::mt19937_64 rng(17);
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  const Dense<double> w0 = kept(random_weight(48, 32, 1.0, rng));
  write_safetensors(dir / "base.safetensors", {stored(name, w0)});
  write_safetensors(dir / "tuned.safetensors", {stored(name, kept(tuned_from(w0, 2, 1.5, rng)))});
  for (const char* stale : {".intruders-0.tmp.4242", ".shrink-0.25.tmp.1"}) {
    const std::string folder = dir / ("out/" + std::string(stale));
    fs::create_directories(folder);
    test::write_text(folder + "/model.safetensors", "a partial copy");
  }
  fs::create_directories(dir / "out/rescale-0.5.old.77");  // moved aside, never removed
  fs::create_directories(dir / "out/.notes.tmp.draft");    // not a pid: not ours
  fs::create_directories(dir / "out/.mydata.tmp.42");      // not a variant's name: not ours
  fs::create_directories(dir / "out/keep");
  // A run whose inputs fail their checks touches nothing in --out.
  EXPECT_THROW(mitigate(options(dir / "base.safetensors", dir / "absent", dir / "out")), BadInput);
  EXPECT_TRUE(fs::exists(dir / "out/.intruders-0.tmp.4242/model.safetensors"));
  MitigateOptions o = options(dir / "base.safetensors", dir / "tuned.safetensors", dir / "out");
  o.lambdas = {0};
  o.controls = {};
  const MitigationResult r = mitigate(o);
  EXPECT_EQ(r.variant_dirs.size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "out/.intruders-0.tmp.4242"));
  EXPECT_FALSE(fs::exists(dir / "out/.shrink-0.25.tmp.1"));
  EXPECT_FALSE(fs::exists(dir / "out/rescale-0.5.old.77"));
  EXPECT_TRUE(fs::exists(dir / "out/.notes.tmp.draft"));
  EXPECT_TRUE(fs::exists(dir / "out/.mydata.tmp.42"));
  EXPECT_TRUE(fs::exists(dir / "out/keep"));
  EXPECT_TRUE(fs::exists(dir / "out/intruders-0/tuned.safetensors"));
}

// Changed values are rounded once, straight from fp64 to the stored grid (ties to even),
// subnormals included; a value is refused only where it would round to an infinity.
TEST(MitigateEncode, RoundsOnceToTheStoredGridAndFindsOverflow) {
  auto code = [](double v, DType t) {
    const std::vector<uint8_t> b = detail::encode_values(std::vector<double>{v}, t);
    return static_cast<unsigned>(b[0] | (b[1] << 8));
  };
  const double f16_step = std::ldexp(1.0, -24), bf16_step = std::ldexp(1.0, -133);
  EXPECT_EQ(code(f16_step / 2 + std::ldexp(1.0, -50), DType::F16), 0x0001u);
  EXPECT_EQ(code(f16_step / 2, DType::F16), 0x0000u) << "a tie goes to the even code";
  EXPECT_EQ(code(1.5 * f16_step - std::ldexp(1.0, -52), DType::F16), 0x0001u);
  EXPECT_EQ(code(1.5 * f16_step, DType::F16), 0x0002u);
  EXPECT_EQ(code(-(f16_step / 2 + std::ldexp(1.0, -50)), DType::F16), 0x8001u);
  EXPECT_EQ(code(bf16_step / 2 + std::ldexp(1.0, -151), DType::BF16), 0x0001u);
  EXPECT_EQ(code(65519.99, DType::F16), 0x7bffu);
  EXPECT_EQ(code(1.0 + std::ldexp(1.0, -11), DType::F16), 0x3c00u) << "a normal tie, to even";

  using detail::first_overflow;
  EXPECT_EQ(first_overflow({1.0, 65519.99, -65519.99}, DType::F16), 3u);
  EXPECT_EQ(first_overflow({1.0, -65520.0}, DType::F16), 1u);
  const double f32_limit = std::ldexp(2.0 - std::ldexp(1.0, -24), 127);
  EXPECT_EQ(first_overflow({std::nextafter(f32_limit, 0.0)}, DType::F32), 1u);
  EXPECT_EQ(first_overflow({f32_limit}, DType::F32), 0u);
  const double bf16_limit = std::ldexp(2.0 - std::ldexp(1.0, -8), 127);
  EXPECT_EQ(first_overflow({std::nextafter(bf16_limit, 0.0)}, DType::BF16), 1u);
  EXPECT_EQ(first_overflow({-bf16_limit}, DType::BF16), 0u);
  EXPECT_EQ(first_overflow({1e300}, DType::F64), 1u);
}
