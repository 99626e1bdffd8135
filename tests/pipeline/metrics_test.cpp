// The calibrated measures (intruder_sigma_share, intruder_update_share, subspace_overlap with
// its principal-angle cosines, null_maxcos) from every CPU route on real generated checkpoints,
// against an independent fp64 computation (tests/reference.hpp), and null_maxcos against its
// exact values and numpy's draws.
#include <gtest/gtest.h>
#include <lapacke.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "indim/analyze.hpp"
#include "indim/checkpoint.hpp"
#include "indim/demo.hpp"
#include "indim/report.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

TensorData f32(const std::string& name, const Dense<double>& m) {
  std::vector<float> v(m.data.begin(), m.data.end());
  return {name,
          DType::F32,
          {static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols)},
          encode_floats(v, DType::F32)};
}

Dense<double> rounded(Dense<double> m) {  // what F32 storage keeps
  for (double& x : m.data) x = static_cast<float>(x);
  return m;
}

// The measures of one matrix, computed here in fp64 from W0 and W as analysed ([out, in]).
struct RefMeasures {
  std::vector<double> maxcos, sigma, energy, cosines;
  double sigma_share = 0, update_share = 0, overlap = 0;
};

RefMeasures reference_measures(const Dense<double>& w0, const Dense<double>& w, int k, double eps,
                               bool right) {
  const Dense<double> a0 = right ? test::transpose(w0) : w0, a = right ? test::transpose(w) : w;
  const Dense<double> u0 = test::reference_left(a0), u = test::reference_left(a);
  RefMeasures r;
  r.maxcos = test::reference_similarity(u, u0, k).maxcos;
  double dw_sq = 0;
  for (size_t i = 0; i < a.data.size(); ++i) dw_sq += std::pow(a.data[i] - a0.data[i], 2);
  double all = 0, in = 0;
  for (int j = 0; j < k; ++j) {
    double s_sq = 0, e = 0;  // ||a^T u_j||^2 = sigma_j^2; ||(a - a0)^T u_j||^2
    for (int64_t c = 0; c < a.cols; ++c) {
      double wu = 0, du = 0;
      for (int64_t i = 0; i < a.rows; ++i)
        wu += a.at(i, c) * u.at(i, j), du += (a.at(i, c) - a0.at(i, c)) * u.at(i, j);
      s_sq += wu * wu, e += du * du;
    }
    r.sigma.push_back(std::sqrt(s_sq));
    r.energy.push_back(dw_sq > 0 ? e / dw_sq : 0.0);
    all += s_sq;
    if (r.maxcos[j] < eps) in += s_sq, r.update_share += r.energy.back();
  }
  r.sigma_share = in / all;
  std::vector<double> m(static_cast<size_t>(k * k), 0.0);  // U_k^T U0_k
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j)
      for (int64_t d = 0; d < a.rows; ++d) m[i * k + j] += u.at(d, i) * u0.at(d, j);
  for (double c : m) r.overlap += c * c / k;
  r.cosines.resize(static_cast<size_t>(k));
  std::vector<double> superb(static_cast<size_t>(k));
  EXPECT_EQ(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', k, k, m.data(), k, r.cosines.data(), nullptr,
                           1, nullptr, 1, superb.data()),
            0);
  return r;
}

void expect_measures(const MatrixResult& rec, const RefMeasures& ref, double eps, double tol) {
  SCOPED_TRACE(rec.name + " " + rec.side + " " + rec.route);
  ASSERT_EQ(rec.k, static_cast<int>(ref.maxcos.size()));
  for (int j = 0; j < rec.k; ++j) {
    ASSERT_NEAR(rec.maxcos[j], ref.maxcos[j], tol) << j;
    ASSERT_GT(std::fabs(ref.maxcos[j] - eps), 10 * tol) << "a value too near eps: " << j;
    EXPECT_NEAR(rec.update_energy[j], ref.energy[j], tol) << j;
    EXPECT_NEAR(rec.principal_cos[j], ref.cosines[j], tol) << j;
  }
  EXPECT_NEAR(rec.sigma_share_at(eps), ref.sigma_share, tol);
  EXPECT_NEAR(rec.update_share_at(eps), ref.update_share, tol);
  EXPECT_NEAR(rec.subspace_overlap, ref.overlap, tol);
  EXPECT_GT(rec.count_at(eps), 0) << "the data should hold intruders";
  EXPECT_GT(rec.update_share_at(eps), 0.0);
  EXPECT_EQ(rec.null_maxcos, null_maxcos(rec.side == "right" ? rec.shape[1] : rec.shape[0],
                                         std::min(rec.shape[0], rec.shape[1])));
}

// A base weight and an update: a small dense change plus a few strong new directions.
struct Case {
  std::string name;
  Dense<double> w0, b, a;  // the update is s B A (+ noise for a full fine-tune), as analysed
  Dense<double> noise;
};

Case make_case(const std::string& name, int64_t out, int64_t in, int r, std::mt19937_64& rng) {
  Case c{name, rounded(random_weight(out, in, 1.0, rng)), test::gaussian(out, r, 1.0, rng),
         test::gaussian(r, in, 0.5 / std::sqrt(static_cast<double>(in)), rng),
         test::gaussian(out, in, 0.002, rng)};
  return c;
}

const MatrixResult& find(const AnalyzeResult& res, const std::string& name, int tuned,
                         const std::string& side = "left") {
  for (const auto& r : res.records)
    if (r.name == name && r.tuned_index == tuned && r.side == side) return r;
  throw std::runtime_error("no record " + name);
}

class Measures : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(41);
    // min(out, in) >= 80: r = 4 lies within the low-rank route's break-even (min / 20).
    cases_ = {make_case("model.layers.0.self_attn.q_proj", 96, 96, 3, rng),
              make_case("model.layers.0.mlp.up_proj", 128, 96, 2, rng),
              make_case("model.layers.1.mlp.down_proj", 96, 128, 3, rng)};
    std::vector<TensorData> base, full, adapter;
    const double s = 2.0;  // lora_alpha 8 / r 4
    for (const Case& c : cases_) {
      base.push_back(f32(c.name + ".weight", c.w0));
      Dense<double> w = c.w0;
      const Dense<double> ba = test::matmul(c.b, c.a);
      for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += s * ba.data[i] + c.noise.data[i];
      full.push_back(f32(c.name + ".weight", w));
      full_w_.push_back(rounded(w));
      // The adapter: rank 4 factors, the last column/row zero beyond the case's own rank.
      Dense<double> b4{c.b.rows, 4, std::vector<double>(static_cast<size_t>(c.b.rows * 4))};
      Dense<double> a4{4, c.a.cols, std::vector<double>(static_cast<size_t>(4 * c.a.cols))};
      for (int64_t i = 0; i < c.b.rows; ++i)
        for (int64_t l = 0; l < c.b.cols; ++l) b4.at(i, l) = c.b.at(i, l);
      for (int64_t l = 0; l < c.a.rows; ++l)
        for (int64_t j = 0; j < c.a.cols; ++j) a4.at(l, j) = c.a.at(l, j);
      adapter.push_back(f32("base_model.model." + c.name + ".lora_A.weight", a4));
      adapter.push_back(f32("base_model.model." + c.name + ".lora_B.weight", b4));
      Dense<double> merged = c.w0;
      const Dense<double> ba4 = test::matmul(rounded(b4), rounded(a4));
      for (size_t i = 0; i < merged.data.size(); ++i) merged.data[i] += s * ba4.data[i];
      lora_w_.push_back(merged);
    }
    write_safetensors(dir_ / "base.safetensors", base);
    fs::create_directories(dir_ / "full");
    write_safetensors(dir_ / "full/model.safetensors", full);
    fs::create_directories(dir_ / "lora");
    write_safetensors(dir_ / "lora/adapter_model.safetensors", adapter);
    test::write_text(dir_ / "lora/adapter_config.json",
                     R"({"peft_type":"LORA","r":4,"lora_alpha":8})");
  }

  AnalyzeResult run(const std::string& out, Precision p, const std::string& algo, Side side,
                    bool lowrank = true) {
    AnalyzeOptions o;
    o.base = dir_ / "base.safetensors";
    o.tuned = {dir_ / "full", dir_ / "lora"};
    o.out_dir = dir_ / out;
    o.backend = "cpu";
    o.algo = algo;
    o.precision = p;
    o.side = side;
    o.lowrank = lowrank;
    o.k = 6;
    return analyze(o);
  }

  void check(const AnalyzeResult& res, double tol, bool right, bool left = true) {
    for (size_t i = 0; i < cases_.size(); ++i)
      for (int t = 0; t < 2; ++t)
        for (bool r : {false, true}) {
          if ((r && !right) || (!r && !left)) continue;
          const Dense<double>& w = t == 0 ? full_w_[i] : lora_w_[i];
          expect_measures(find(res, cases_[i].name + ".weight", t, r ? "right" : "left"),
                          reference_measures(cases_[i].w0, w, 6, 0.5, r), 0.5, tol);
        }
  }

  test::TempDir dir_;
  std::vector<Case> cases_;
  std::vector<Dense<double>> full_w_, lora_w_;
};

}  // namespace

TEST_F(Measures, FullAndLowRankRoutesAgreeWithAnFp64Reference) {
  const AnalyzeResult res = run("auto", Precision::F64, "auto", Side::Left);
  for (const auto& r : res.records)
    if (r.tuned_index == 1) EXPECT_EQ(r.route.rfind("lowrank/", 0), 0u) << r.route;
  check(res, 1e-9, false);
}

TEST_F(Measures, Fp32GesddBothSidesAndTheMergedAdapterAgreeToo) {
  check(run("gesdd", Precision::F32, "gesdd", Side::Both, /*lowrank=*/false), 2e-5, true);
  check(run("gram", Precision::F32, "gram64", Side::Right), 2e-5, true, false);
}

TEST_F(Measures, OutputsCarryThemAndTotalsAverageThem) {
  const AnalyzeResult res = run("out", Precision::F64, "auto", Side::Left);
  const auto report = nlohmann::json::parse(test::read_text(dir_ / "out/report.json"));
  EXPECT_EQ(report["schema_version"], "1.2");
  const auto& m = report["matrices"][0];
  const MatrixResult& r = res.records[0];
  EXPECT_DOUBLE_EQ(m["intruder_sigma_share"].get<double>(), r.sigma_share_at(0.5));
  EXPECT_DOUBLE_EQ(m["intruder_update_share"].get<double>(), r.update_share_at(0.5));
  EXPECT_DOUBLE_EQ(m["sigma_share"]["0.3"].get<double>(), r.sigma_share_at(0.3));
  EXPECT_DOUBLE_EQ(m["subspace_overlap"].get<double>(), r.subspace_overlap);
  EXPECT_EQ(m["principal_cos"].size(), 6u);
  EXPECT_EQ(m["update_energy"].size(), 6u);
  EXPECT_GT(m["null_maxcos"].get<double>(), 0.2);  // small shapes: a random vector scores high
  for (int t = 0; t < 2; ++t) {
    double sum = 0;
    int n = 0;
    for (const auto& rec : res.records)
      if (rec.tuned_index == t) sum += rec.update_share_at(0.5), ++n;
    const auto& tuned = report["tuned"][t];
    EXPECT_NEAR(tuned["intruder_update_share"].get<double>(), sum / n, 1e-12);
    EXPECT_EQ(tuned["by_type"].size(), 3u);
    EXPECT_EQ(tuned["by_layer"].size(), 2u);
    EXPECT_EQ(tuned["step"], t);  // "full", "lora": no numbers, so the order
  }
  EXPECT_EQ(report["steps_from"], "order");
  const std::string csv = test::read_text(dir_ / "out/matrices.csv");
  for (const char* col :
       {",step,", ",intruder_sigma_share,", ",intruder_update_share,", ",subspace_overlap,",
        ",null_maxcos,", ",sigma_share_eps_0.5,", ",update_share_eps_0.9"})
    EXPECT_NE(csv.find(col), std::string::npos) << col;
  const std::string vec = test::read_text(dir_ / "out/vectors.csv");
  EXPECT_NE(vec.find(",update_share,principal_cos\n"), std::string::npos);
  EXPECT_NE(format_summary(res, 0.5, 6).find("intruder_update_share"), std::string::npos);
  EXPECT_EQ(format_summary(res, 0.5, 6).find("warning: eps"), std::string::npos);
  // At these small shapes a random direction scores up to ~0.3: an eps of 0.1 lies below.
  AnalyzeResult low = res;
  low.header.eps = {0.1};
  EXPECT_NE(format_summary(low, 0.1, 6)
                .find("warning: eps 0.1 lies below null_maxcos for 6 "
                      "matrices"),
            std::string::npos)
      << format_summary(low, 0.1, 6);
}

TEST(NullMaxcos, ExactWhereTheLawIsKnown) {
  // m = 3, p = 1: |cos| is uniform on [0, 1] (Archimedes), so its 99th percentile is 0.99.
  EXPECT_NEAR(null_maxcos(3, 1), 0.99, 0.005);
  // m = 2, p = 1: the angle is uniform, P(|cos| <= t) = 1 - 2 acos(t) / pi.
  EXPECT_NEAR(null_maxcos(2, 1), std::cos(M_PI / 200), 2e-4);
  EXPECT_EQ(null_maxcos(4096, 4096), null_maxcos(4096, 4096));  // fixed seed
  EXPECT_TRUE(std::isnan(null_maxcos(3, 4)));
  EXPECT_TRUE(std::isnan(null_maxcos(3, 0)));
  EXPECT_EQ(null_maxcos(1, 1), 1.0);
}

// Independent draws with numpy's generator: 40000 per shape against our 4000 fixed ones.
TEST(NullMaxcos, AgreesWithNumpyDraws) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  const std::vector<std::pair<int, int>> shapes = {
      {4096, 4096}, {5632, 2048}, {256, 128}, {40, 40}};
  std::string arg;
  for (const auto& [m, p] : shapes) arg += " " + std::to_string(m) + "," + std::to_string(p);
  const test::CommandResult r = test::run_command(
      "/usr/bin/python3 -c '\n"
      "import sys, numpy as np\n"
      "g = np.random.default_rng(7)\n"
      "for a in sys.argv[1:]:\n"
      "    m, p = map(int, a.split(\",\"))\n"
      "    v = []\n"
      "    for _ in range(40):\n"
      "        z = g.standard_normal((1000, p))\n"
      "        rest = g.chisquare(m - p, 1000) if m > p else 0\n"
      "        v.append(np.abs(z).max(1) / np.sqrt((z * z).sum(1) + rest))\n"
      "    print(np.percentile(np.concatenate(v), 99))\n"
      "'" +
      arg);
  ASSERT_EQ(r.rc, 0) << r.out;
  std::istringstream in(r.out);
  for (const auto& [m, p] : shapes) {
    double ref = 0;
    ASSERT_TRUE(in >> ref);
    EXPECT_NEAR(null_maxcos(m, p), ref, 0.02 * ref) << m << " x " << p;
  }
}
