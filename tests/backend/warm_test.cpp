// The full route's warm-started iteration (backend/warm_krylov.hpp) against the Gram route in
// fp64: square, tall and wide full fine-tunes (dense noise and a strong rank-2 change), both
// sides, both precisions; where it does not apply (small orders, --algo other than gram64) it
// is not tried, and where it is tried and gives up or the base lacks a side's vectors it says
// why. The pipeline test at the end meets it as a user does: a real checkpoint pair.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "backend/block_krylov.hpp"
#include "backend/warm_krylov.hpp"
#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/safetensors.hpp"
#include "reference.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

// W0 plus dense noise (5% of its rms entry) plus a rank-2 change of 0.6 and 0.4 sigma_1.
Dense<double> fine_tune(const Dense<double>& w0, double sigma1, std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  Dense<double> w = w0;
  double ss = 0;
  for (double x : w0.data) ss += x * x;
  const double rms = std::sqrt(ss / static_cast<double>(w0.data.size()));
  for (double& x : w.data) x += 0.05 * rms * g(rng);
  for (double s : {0.6, 0.4}) {
    const Dense<double> a = test::gaussian(w.rows, 1, 1.0 / std::sqrt(double(w.rows)), rng);
    const Dense<double> b = test::gaussian(1, w.cols, 1.0 / std::sqrt(double(w.cols)), rng);
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t c = 0; c < w.cols; ++c) w.at(r, c) += s * sigma1 * a.data[r] * b.data[c];
  }
  return w;
}

template <typename T>
double column_dot(const Vectors& x, const Vectors& y, int64_t j) {
  double d = 0;
  for (int64_t i = 0; i < x.dim; ++i)
    d += static_cast<double>(x.values<T>()[i * x.count + j]) *
         static_cast<double>(y.values<T>()[i * y.count + j]);
  return d;
}

// fp64 vectors rounded to precision p.
Vectors in_precision(const Vectors& v, Precision p) {
  Vectors out = Vectors::zeros(p, v.dim, v.count);
  std::visit(
      [&](auto& x) {
        using T = typename std::decay_t<decltype(x)>::value_type;
        for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(v.values<double>()[i]);
      },
      out.data);
  return out;
}

struct Case {
  int64_t out, in;
};

class WarmRoute : public ::testing::TestWithParam<Case> {};

TEST_P(WarmRoute, AgreesWithTheGramRouteOnBothSides) {
  const Case c = GetParam();
  std::mt19937_64 rng(static_cast<uint64_t>(c.out * 7 + c.in));
  const Dense<double> w0 = random_weight(c.out, c.in, 1.0, rng);
  auto gram = make_cpu_backend(Precision::F64, "gram64");
  const Decomposition base = gram->decompose(Dense<double>(w0), Side::Both, 0, "base");
  const Dense<double> w = fine_tune(w0, base.sigma[0], rng);
  const int64_t k = 10;
  const Decomposition ref = gram->decompose(Dense<double>(w), Side::Both, k, "tuned");
  for (Precision p : {Precision::F64, Precision::F32}) {
    SCOPED_TRACE(precision_name(p));
    auto cpu = make_cpu_backend(p, "gram64");
    std::string why;
    int loads = 0;
    const std::optional<Decomposition> d = cpu->decompose_warm(
        [&] { return ++loads, w; }, c.out, c.in, base, Side::Both, k, "tuned", &why);
    ASSERT_TRUE(d.has_value()) << why;
    EXPECT_EQ(loads, 1);
    EXPECT_EQ(d->route.rfind("warm/krylov, ", 0), 0u) << d->route;
    ASSERT_GE(d->sigma.size(), 50u);  // the leading values the report's spectra show
    const double tol = p == Precision::F64 ? 1e-10 : 1e-6;
    for (int64_t j = 0; j < k; ++j) {
      EXPECT_NEAR(d->sigma[j], ref.sigma[j], tol * ref.sigma[0]) << j;
      const Vectors& l = d->left;
      const Vectors& r = d->right;
      ASSERT_EQ(l.precision(), p);
      // The reference is fp64; compare each against it in its own precision's terms.
      const Vectors refl = in_precision(ref.left, p), refr = in_precision(ref.right, p);
      const double dl =
          p == Precision::F64 ? column_dot<double>(l, refl, j) : column_dot<float>(l, refl, j);
      const double dr =
          p == Precision::F64 ? column_dot<double>(r, refr, j) : column_dot<float>(r, refr, j);
      EXPECT_NEAR(std::fabs(dl), 1.0, tol) << "left " << j;
      EXPECT_NEAR(std::fabs(dr), 1.0, tol) << "right " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, WarmRoute,
                         ::testing::Values(Case{512, 512}, Case{640, 512}, Case{512, 640}),
                         [](const auto& i) {
                           return std::to_string(i.param.out) + "x" + std::to_string(i.param.in);
                         });

TEST(WarmRoute, NotTriedWhereItDoesNotApply) {
  std::mt19937_64 rng(3);
  const Dense<double> small = random_weight(500, 480, 1.0, rng);  // under kWarmMinOrder
  auto gram = make_cpu_backend(Precision::F64, "gram64");
  const Decomposition base = gram->decompose(Dense<double>(small), Side::Left, 0, "base");
  int loads = 0;
  std::string why;
  EXPECT_FALSE(gram->decompose_warm([&] { return ++loads, small; }, 500, 480, base, Side::Left, 10,
                                    "t", &why));
  auto gesdd = make_cpu_backend(Precision::F64, "gesdd");
  EXPECT_FALSE(gesdd->decompose_warm([&] { return ++loads, small; }, 400, 400, base, Side::Left, 10,
                                     "t", &why));
  EXPECT_EQ(loads, 0);  // never even read
  EXPECT_EQ(why, "");
}

TEST(WarmRoute, GivingUpAndMissingVectorsSayWhy) {
  std::mt19937_64 rng(4);
  const Dense<double> w0 = random_weight(512, 512, 1.0, rng);
  auto gram = make_cpu_backend(Precision::F64, "gram64");
  const Decomposition base = gram->decompose(Dense<double>(w0), Side::Left, 0, "base");
  const Dense<double> w = fine_tune(w0, base.sigma[0], rng);
  detail::WarmOptions o;
  o.max_products = 1;  // a budget no start block fits: not even tried
  std::string why;
  EXPECT_FALSE(detail::warm_top(w, base, o, &why));
  EXPECT_NE(why.find(") predicts about "), std::string::npos) << why;
  EXPECT_NE(why.find("products, past twice the budget of 1"), std::string::npos) << why;
  o.max_products = 0;
  o.side = Side::Right;  // the base was decomposed for its left vectors only
  EXPECT_FALSE(detail::warm_top(w, base, o, &why));
  EXPECT_EQ(why, "the base's decomposition lacks its right vectors");
}

// A clustered top spectrum (sigma_i = exp(-6 i / n), issue 31) stalls the warm start: the
// base's spectrum predicts it, and the exact route runs at once, without one product.
TEST(WarmRoute, ClusteredSpectrumGoesStraightToTheExactRoute) {
  std::mt19937_64 rng(5);
  const int64_t n = 512;
  std::vector<double> s(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) s[i] = std::exp(-6.0 * double(i) / double(n));
  const Dense<double> w0 =
      compose_svd(random_orthonormal(n, n, rng), s, random_orthonormal(n, n, rng));
  auto gram = make_cpu_backend(Precision::F64, "gram64");
  const Decomposition base = gram->decompose(Dense<double>(w0), Side::Left, 0, "base");
  const Dense<double> w = fine_tune(w0, base.sigma[0], rng);
  std::string why;
  EXPECT_FALSE(detail::warm_top(w, base, detail::WarmOptions{}, &why));
  EXPECT_NE(why.find("(sigma_26 / sigma_9 = 0.8"), std::string::npos) << why;
  // A power-law spectrum of the same order is tried (and converges).
  const Dense<double> v0 = random_weight(n, n, 1.0, rng);
  const Decomposition vb = gram->decompose(Dense<double>(v0), Side::Left, 0, "base");
  why.clear();
  EXPECT_TRUE(detail::warm_top(fine_tune(v0, vb.sigma[0], rng), vb, detail::WarmOptions{}, &why))
      << why;
}

// The iteration's own stall check: on an operator whose top eigenvalues lie within 1e-4 of
// each other, the first steps' rate needs more products than the budget, and it stops within
// five steps instead of spending the budget.
TEST(BlockKrylov, StallSeenInTheFirstStepsStopsEarly) {
  const int64_t n = 600, keep = 10, lead = 26;
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) diag[i] = 1.0 - 1e-4 * double(i);
  detail::BlockApply apply = [&](const double* x, int64_t cols, double* y) {
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = 0; i < n; ++i) y[i + j * n] = diag[i] * x[i + j * n];
  };
  std::mt19937_64 rng(6);
  const Dense<double> start = test::gaussian(n, lead, 1.0, rng);
  detail::KrylovOptions o;
  o.keep = keep, o.shown = 50, o.restart = 66, o.max_basis = lead + 4 * 66;
  o.max_products = 400;
  o.stop_when_stalled = true;
  const detail::KrylovResult r = detail::block_krylov_top(n, apply, start.data, lead, o);
  EXPECT_FALSE(r.converged);
  EXPECT_TRUE(r.stalled);
  EXPECT_GT(r.projected, 400);
  EXPECT_LE(r.products, 5 * lead);
  o.stop_when_stalled = false;  // without the check it spends the budget
  const detail::KrylovResult full = detail::block_krylov_top(n, apply, start.data, lead, o);
  EXPECT_FALSE(full.converged);
  EXPECT_GE(full.products, 400);
}

// The block the iteration adds after its start: images of vectors that are nearly invariant
// (a base's fp32 vectors under a small change) are, once the basis is taken out, left with a
// little of their norm in a few shared directions and far less in their own. The cancellation
// among them must not leave the kept columns leaning on the basis (it did at 1e-9, which
// stalled the warm start at such residuals).
TEST(BlockKrylov, NearlyDependentBlockStaysOrthogonalToTheBasis) {
  std::mt19937_64 rng(12);
  const int64_t n = 600, nv = 40, cols = 30;
  const Dense<double> q = random_orthonormal(n, nv + 3 + cols, rng);  // row-major
  std::vector<double> v(static_cast<size_t>(n * nv)), x(static_cast<size_t>(n * cols));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < nv; ++j) v[i + j * n] = q.at(i, j);
  // x_j: v_j, plus 1e-2 of three directions outside the basis mixed alike, plus 1e-9 of a
  // direction of its own.
  std::normal_distribution<double> g(0.0, 1.0);
  for (int64_t j = 0; j < cols; ++j) {
    const double c0 = g(rng), c1 = g(rng), c2 = g(rng);
    for (int64_t i = 0; i < n; ++i)
      x[i + j * n] = q.at(i, j) +
                     1e-2 * (c0 * q.at(i, nv) + c1 * q.at(i, nv + 1) + c2 * q.at(i, nv + 2)) +
                     1e-9 * q.at(i, nv + 3 + j);
  }
  const int64_t kept = detail::orthonormalise(v.data(), n, nv, x.data(), cols);
  ASSERT_EQ(kept, cols);
  double against_v = 0, among = 0;
  for (int64_t a = 0; a < kept; ++a) {
    for (int64_t b = 0; b < nv; ++b) {
      double d = 0;
      for (int64_t i = 0; i < n; ++i) d += x[i + a * n] * v[i + b * n];
      against_v = std::max(against_v, std::fabs(d));
    }
    for (int64_t b = 0; b < kept; ++b) {
      double d = 0;
      for (int64_t i = 0; i < n; ++i) d += x[i + a * n] * x[i + b * n];
      among = std::max(among, std::fabs(d - (a == b ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(against_v, 1e-13);
  EXPECT_LT(among, 1e-13);
}

// symmetric_top on both sides of all_pairs_pay (dsyevr for the top 19 of 120, dsyevd for 20 or
// more): the known spectrum, descending, and the known vectors up to sign.
TEST(BlockKrylov, SymmetricTopIsExactOnBothSidesOfTheAllPairsRule) {
  std::mt19937_64 rng(14);
  const int64_t n = 120;
  const Dense<double> q = random_orthonormal(n, n, rng);  // row-major; columns the vectors
  std::vector<double> lambda(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) lambda[j] = std::pow(0.97, double(j)) - (j == 3 ? 0.03 : 0);
  std::vector<double> a(static_cast<size_t>(n * n), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c)
      for (int64_t j = 0; j < n; ++j) a[r + c * n] += q.at(r, j) * lambda[j] * q.at(c, j);
  ASSERT_FALSE(detail::all_pairs_pay(n, 19));
  ASSERT_TRUE(detail::all_pairs_pay(n, 20));
  for (int64_t count : {int64_t{1}, int64_t{19}, int64_t{20}, int64_t{50}, n}) {
    std::vector<double> work = a, theta, vectors;
    ASSERT_TRUE(detail::symmetric_top(work, n, count, theta, vectors)) << count;
    ASSERT_EQ(theta.size(), static_cast<size_t>(count));
    ASSERT_EQ(vectors.size(), static_cast<size_t>(n * count));
    std::vector<double> want = lambda;
    std::sort(want.rbegin(), want.rend());
    for (int64_t j = 0; j < count; ++j) {
      EXPECT_NEAR(theta[j], want[j], 1e-13) << count << " pairs, value " << j;
      // lambda[3] is moved below lambda[4]: the vector of the j-th value is q's column
      const int64_t col = j == 3 ? 4 : j == 4 ? 3 : j;
      double d = 0;
      for (int64_t i = 0; i < n; ++i) d += vectors[i + j * n] * q.at(i, col);
      EXPECT_NEAR(std::fabs(d), 1.0, 1e-10) << count << " pairs, vector " << j;
    }
  }
}

// The case that found it: a base decomposed in fp32 (as an fp32 run caches it) and a fine-tune
// that changes it by one strong rank-1 direction only; the warm start must converge.
TEST(WarmRoute, ConvergesFromFp32BaseVectorsUnderASmallChange) {
  std::mt19937_64 rng(13);
  const Dense<double> w0 = random_weight(640, 512, 1.0, rng);
  auto f32 = make_cpu_backend(Precision::F32, "gram64");
  const Decomposition base = f32->decompose(test::cast<float>(w0), Side::Left, 0, "base");
  Dense<double> w = w0;
  const Dense<double> a = test::gaussian(w.rows, 1, 1.0 / std::sqrt(double(w.rows)), rng);
  const Dense<double> b = test::gaussian(1, w.cols, 1.0 / std::sqrt(double(w.cols)), rng);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) w.at(r, c) += 0.5 * a.data[r] * b.data[c];
  std::string why;
  const std::optional<Decomposition> d =
      f32->decompose_warm([&] { return w; }, w.rows, w.cols, base, Side::Left, 10, "tuned", &why);
  ASSERT_TRUE(d.has_value()) << why;
  auto gram = make_cpu_backend(Precision::F64, "gram64");
  const Decomposition ref = gram->decompose(Dense<double>(w), Side::Left, 10, "ref");
  for (int64_t j = 0; j < 10; ++j) EXPECT_NEAR(d->sigma[j], ref.sigma[j], 1e-9 * ref.sigma[0]);
}

// As a user meets it: a bf16 base and an fp32 full fine-tune; the default route is the warm
// iteration, --algo gram64 forces the Gram, and the two agree on every count and maxcos.
TEST(WarmRoute, PipelineDefaultAgreesWithForcedGram) {
  test::TempDir tmp;
  const fs::path dir(tmp.str());
  std::mt19937_64 rng(9);
  std::vector<TensorData> base, tuned;
  for (auto [name, out, in] :
       {std::tuple<const char*, int64_t, int64_t>{"q_proj", 512, 512}, {"up_proj", 640, 512}}) {
    const Dense<double> w0 = random_weight(out, in, 1.0, rng);
    auto gram = make_cpu_backend(Precision::F64, "gram64");
    const double s1 = gram->decompose(Dense<double>(w0), Side::Left, 1, "b").sigma[0];
    const Dense<double> w = fine_tune(w0, s1, rng);
    const std::string t = std::string("model.layers.0.") + name + ".weight";
    auto as = [&](const Dense<double>& m, DType dt) {
      std::vector<float> v(m.data.begin(), m.data.end());
      return TensorData{t, dt, {uint64_t(m.rows), uint64_t(m.cols)}, encode_floats(v, dt)};
    };
    base.push_back(as(w0, DType::BF16));
    tuned.push_back(as(w, DType::F32));
  }
  write_safetensors((dir / "base.safetensors").string(), base);
  write_safetensors((dir / "tuned.safetensors").string(), tuned);
  auto run = [&](const std::string& algo, const std::string& out) {
    AnalyzeOptions o;
    o.base = (dir / "base.safetensors").string();
    o.tuned = {(dir / "tuned.safetensors").string()};
    o.out_dir = (dir / out).string();
    o.backend = "cpu";
    o.algo = algo;
    return analyze_only(o);
  };
  const AnalyzeResult warm = run("auto", "warm"), gram = run("gram64", "gram");
  ASSERT_EQ(warm.records.size(), 2u);
  ASSERT_EQ(gram.records.size(), 2u);
  int intruders = 0;
  for (size_t i = 0; i < warm.records.size(); ++i) {
    const MatrixResult& a = warm.records[i];
    const MatrixResult& b = gram.records[i];
    SCOPED_TRACE(a.name);
    EXPECT_EQ(a.route.rfind("warm/krylov, ", 0), 0u) << a.route;
    EXPECT_EQ(b.route.rfind("gram64/", 0), 0u) << b.route;
    EXPECT_EQ(a.counts, b.counts);
    for (int j = 0; j < a.k; ++j) EXPECT_NEAR(a.maxcos[j], b.maxcos[j], 1e-5) << j;
    intruders += a.count_at(0.5);
  }
  EXPECT_GT(intruders, 0);  // the agreement covers intruders, not only kept directions
}

}  // namespace
