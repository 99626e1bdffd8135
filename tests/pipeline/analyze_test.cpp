// End to end through the library: generated checkpoints in real formats, the report's values
// checked against an independent fp64 computation, resume, and bad input leaving no outputs.
#include "indim/analyze.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "indim/checkpoint.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

DemoOptions small_demo(DType dtype) {
  DemoOptions o;
  o.hidden = 48;
  o.intermediate = 112;
  o.kv_dim = 24;
  o.layers = 2;
  o.vocab = 64;
  o.lora_rank = 4;
  o.dtype = dtype;
  return o;
}

Dense<double> load(const Checkpoint& c, const std::string& name) {
  const TensorRef* r = c.find(name);
  if (r == nullptr) throw std::runtime_error("missing " + name);
  Dense<double> m{static_cast<int64_t>(r->info->shape[0]), static_cast<int64_t>(r->info->shape[1]),
                  std::vector<double>(r->info->numel())};
  convert_elements(r->file->data(*r->info), r->info->dtype, m.data.size(), m.data.data());
  return m;
}

size_t count_lines(const std::string& path) {
  std::ifstream f(path);
  size_t n = 0;
  for (std::string l; std::getline(f, l);) ++n;
  return n;
}

AnalyzeOptions options(const DemoPaths& p, const std::string& out) {
  AnalyzeOptions o;
  o.base = p.base;
  o.tuned = {p.full, p.lora};
  o.out_dir = out;
  o.backend = "cpu";
  return o;
}

class DemoTrio : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(DemoTrio, ReportMatchesIndependentComputation) {
  test::TempDir dir;
  DemoPaths p = generate_demo(dir.str(), small_demo(GetParam()));
  AnalyzeResult res = analyze(options(p, dir / "out"));
  ASSERT_EQ(res.records.size(), 28u);  // 2 layers x 7 matrices x 2 fine-tunes
  EXPECT_EQ(res.resumed, 0);

  Checkpoint base = Checkpoint::open(p.base);
  std::vector<Checkpoint> tuned = {Checkpoint::open(p.full), Checkpoint::open(p.lora)};
  int lora_q_v = 0;
  for (const MatrixResult& r : res.records) {
    SCOPED_TRACE(r.name + " tuned " + std::to_string(r.tuned_index));
    Dense<double> w0 = load(base, r.name), w = load(tuned[r.tuned_index], r.tuned_name);
    ASSERT_EQ(r.shape, (std::vector<int64_t>{w0.rows, w0.cols}));
    ASSERT_EQ(r.k, 10);
    auto ref = test::reference_similarity(test::reference_left(w), test::reference_left(w0), 10);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], ref.maxcos[j], 1e-4) << j;
    for (double e : eps_sweep()) {
      int expect = 0;
      bool near_edge = false;
      for (double c : ref.maxcos) expect += c < e, near_edge |= std::fabs(c - e) < 1e-4;
      if (!near_edge) EXPECT_EQ(r.count_at(e), expect) << "eps " << e;
    }
    const bool lora_target =
        r.tuned_index == 1 && (r.type == "self_attn.q_proj" || r.type == "self_attn.v_proj");
    EXPECT_EQ(r.identical, r.tuned_index == 1 && !lora_target);
    if (lora_target) {
      ++lora_q_v;
      EXPECT_GE(r.count_at(0.5), 1) << "a rank-4 update of large norm brings new directions";
    }
    if (r.tuned_index == 0) EXPECT_EQ(r.count_at(0.5), 0) << "a small dense update does not";
  }
  EXPECT_EQ(lora_q_v, 4);

  // report.json
  std::ifstream rf(res.report_json);
  nlohmann::json report = nlohmann::json::parse(rf);
  EXPECT_EQ(report["schema_version"], "1.2");
  EXPECT_EQ(report["settings"]["k"], 10);
  EXPECT_EQ(report["inputs"]["base"]["kind"], "sharded");
  ASSERT_EQ(report["matrices"].size(), 28u);
  ASSERT_EQ(report["tuned"].size(), 2u);
  int lora_total = 0;
  for (const auto& r : res.records) lora_total += r.tuned_index == 1 ? r.count_at(0.5) : 0;
  EXPECT_EQ(report["tuned"][1]["intruders"]["0.5"], lora_total);
  EXPECT_EQ(report["tuned"][0]["intruders"]["0.5"], 0);
  const auto& m0 = report["matrices"][0];
  for (const char* f : {"name", "shape", "dtype", "k", "maxcos", "argmax", "sigma", "sigma_ratio",
                        "counts", "intruders", "seconds", "route"})
    EXPECT_TRUE(m0.contains(f)) << f;
  for (const auto& m : report["matrices"])  // full, then the LoRA one with untouched tensors
    EXPECT_EQ(m["route"], m["identical"].get<bool>() ? "identical" : "gram64/tridiagonal")
        << m["name"] << " " << m["route"];
  EXPECT_EQ(m0["dtype"], dtype_name(GetParam()));

  // matrices.csv and journal.jsonl
  EXPECT_EQ(count_lines(res.matrices_csv), 29u);
  const std::string csv = test::read_text(res.matrices_csv);
  EXPECT_NE(csv.find("intruders_eps_0.5"), std::string::npos);
  // The same columns whatever k is; the per-vector values go to vectors.csv, a row per vector.
  EXPECT_EQ(csv.substr(0, csv.find('\n')).find("maxcos_"), std::string::npos);
  EXPECT_NE(csv.find(",null_directions,"), std::string::npos);
  EXPECT_EQ(count_lines(res.vectors_csv), 1u + 28u * 10u);
  EXPECT_NE(
      test::read_text(res.vectors_csv).find("tuned_index,name,side,j,sigma,sigma_ratio,maxcos"),
      std::string::npos);
  EXPECT_EQ(count_lines(res.journal), 29u);
  for (const auto& e : fs::directory_iterator(dir / "out"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DemoTrio, ::testing::Values(DType::BF16, DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Analyze, Fp64PathAgreesWithReferenceTightly) {
  test::TempDir dir;
  DemoPaths p = generate_demo(dir.str(), small_demo(DType::F32));
  AnalyzeOptions o = options(p, dir / "out");
  o.tuned = {p.lora};
  o.precision = Precision::F64;
  o.select.include = {"layers\\.0\\.(self_attn\\.q_proj|mlp\\.down_proj)"};
  AnalyzeResult res = analyze(o);
  ASSERT_EQ(res.records.size(), 2u);
  Checkpoint base = Checkpoint::open(p.base), lora = Checkpoint::open(p.lora);
  for (const auto& r : res.records) {
    auto ref = test::reference_similarity(test::reference_left(load(lora, r.name)),
                                          test::reference_left(load(base, r.name)), 10);
    for (int j = 0; j < r.k; ++j) EXPECT_NEAR(r.maxcos[j], ref.maxcos[j], 1e-8) << r.name << j;
  }
}

TEST(Analyze, SideBothGivesTwoRecordsPerMatrix) {
  test::TempDir dir;
  DemoPaths p = generate_demo(dir.str(), small_demo(DType::BF16));
  AnalyzeOptions o = options(p, dir / "out");
  o.tuned = {p.lora};
  o.side = Side::Both;
  o.select.include = {"layers\\.1\\.self_attn\\.v_proj"};
  AnalyzeResult res = analyze(o);
  ASSERT_EQ(res.records.size(), 2u);
  EXPECT_EQ(res.records[0].side, "left");
  EXPECT_EQ(res.records[1].side, "right");
  EXPECT_GE(res.records[1].count_at(0.5), 2) << "the update's right vectors are new too";
}

TEST(Analyze, ResumeSkipsJournaledMatricesAndSurvivesATornLine) {
  test::TempDir dir;
  DemoPaths p = generate_demo(dir.str(), small_demo(DType::BF16));
  AnalyzeOptions o = options(p, dir / "out");
  AnalyzeResult first = analyze(o);

  // Keep the header and 5 records, then half a line, as a crash would leave it.
  std::ifstream in(first.journal);
  std::string text, line;
  for (int i = 0; i < 6 && std::getline(in, line); ++i) text += line + "\n";
  std::getline(in, line);
  text += line.substr(0, line.size() / 2);
  in.close();
  test::write_text(first.journal, text);

  o.resume = true;
  AnalyzeResult again = analyze(o);
  EXPECT_EQ(again.resumed, 5);
  ASSERT_EQ(again.records.size(), first.records.size());
  for (size_t i = 0; i < first.records.size(); ++i) {
    EXPECT_EQ(again.records[i].name, first.records[i].name);
    EXPECT_EQ(again.records[i].counts, first.records[i].counts);
    for (int j = 0; j < first.records[i].k; ++j)
      EXPECT_NEAR(again.records[i].maxcos[j], first.records[i].maxcos[j], 1e-12);
  }
  EXPECT_EQ(count_lines(again.journal), 29u);

  o.k = 5;  // other settings: the journal does not belong to this run
  EXPECT_THROW(analyze(o), UsageError);
  o.resume = false;  // a fresh run replaces it
  EXPECT_EQ(analyze(o).resumed, 0);
}

namespace {

// A base and a tuned file that differ in one tensor, written by `edit`.
template <typename Edit>
std::string bad_pair_error(const test::TempDir& dir, Edit edit) {
  std::mt19937_64 rng(5);
  Dense<double> w = random_weight(12, 8, 1.0, rng);
  std::vector<float> v(w.data.begin(), w.data.end());
  TensorData t{
      "model.layers.0.mlp.up_proj.weight", DType::F32, {12, 8}, encode_floats(v, DType::F32)};
  write_safetensors(dir / "base.safetensors", {t});
  edit(t);
  write_safetensors(dir / "tuned.safetensors", {t});
  AnalyzeOptions o;
  o.base = dir / "base.safetensors";
  o.tuned = {dir / "tuned.safetensors"};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  try {
    analyze(o);
  } catch (const BadInput& e) {
    EXPECT_FALSE(fs::exists(dir / "out/report.json"));
    EXPECT_FALSE(fs::exists(dir / "out/matrices.csv"));
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Analyze, ShapeMismatchNamesBothTensors) {
  test::TempDir dir;
  std::string msg = bad_pair_error(dir, [](TensorData& t) { t.shape = {8, 12}; });
  EXPECT_NE(msg.find("base.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' [12, 8] does "
                     "not match"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("tuned.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[8, 12]"), std::string::npos) << msg;
}

TEST(Analyze, NonFiniteValueNamesTensorAndPosition) {
  test::TempDir dir;
  std::string msg = bad_pair_error(dir, [](TensorData& t) {
    const float nan = std::nanf("");
    std::memcpy(&t.bytes[4 * (8 * 2 + 3)], &nan, 4);
  });
  EXPECT_NE(msg.find("tuned.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' holds a "
                     "non-finite value at [2, 3]"),
            std::string::npos)
      << msg;
}

TEST(Analyze, UnsupportedDtypeNamed) {
  test::TempDir dir;
  std::string msg = bad_pair_error(dir, [](TensorData& t) { t.dtype = DType::I32; });
  EXPECT_NE(msg.find("has dtype I32, which indim cannot analyse"), std::string::npos) << msg;
}

TEST(Analyze, NothingSelectedIsBadInputAndOptionsAreChecked) {
  test::TempDir dir;
  std::string msg = bad_pair_error(dir, [](TensorData& t) { t.name = "something.else"; });
  EXPECT_NE(msg.find("no matrix selected"), std::string::npos) << msg;
  AnalyzeOptions o;
  o.base = dir / "base.safetensors";
  o.tuned = {dir / "base.safetensors"};
  o.out_dir = dir / "o2";
  o.eps = {1.5};
  EXPECT_THROW(analyze(o), UsageError);
  o.eps = {0.5};
  o.k = 0;
  EXPECT_THROW(analyze(o), UsageError);
}

TEST(Analyze, IdenticalCheckpointHasNoIntruders) {
  test::TempDir dir;
  DemoPaths p = generate_demo(dir.str(), small_demo(DType::BF16));
  AnalyzeOptions o = options(p, dir / "out");
  o.tuned = {p.base};
  AnalyzeResult res = analyze(o);
  for (const auto& r : res.records) {
    EXPECT_TRUE(r.identical);
    EXPECT_EQ(r.count_at(0.9), 0);
  }
}
