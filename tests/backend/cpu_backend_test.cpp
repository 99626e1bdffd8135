// The CPU backend against matrices with known answers and against an independent fp64
// computation, parameterised over shape (square, tall, wide, odd sizes) and precision.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <tuple>

#include "backend/finite.hpp"
#include "backend/gram_host.hpp"
#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "indim/safetensors.hpp"
#include "reference.hpp"

using namespace indim;

namespace {

struct Shape {
  int64_t out, in;
};

Decomposition run(Backend& b, const Dense<double>& w, Side side, int64_t keep) {
  if (b.precision() == Precision::F32) return b.decompose(test::cast<float>(w), side, keep, "t");
  return b.decompose(test::cast<double>(w), side, keep, "t");
}

// Tuned left vectors = base left vectors times H, where H mixes base vectors 0..7 evenly
// (Hadamard / sqrt 8), rotates 8 towards 12 by 50 degrees, and keeps the rest.
Dense<double> known_mixing(int64_t r) {
  Dense<double> h{r, r, std::vector<double>(static_cast<size_t>(r * r), 0.0)};
  for (int64_t i = 0; i < r; ++i) h.at(i, i) = 1.0;
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j)
      h.at(i, j) = (__builtin_popcount(i & j) % 2 ? -1.0 : 1.0) / std::sqrt(8.0);
  const double th = 50.0 * M_PI / 180.0;
  h.at(8, 8) = std::cos(th), h.at(12, 8) = std::sin(th);
  h.at(8, 12) = -std::sin(th), h.at(12, 12) = std::cos(th);
  return h;
}

Dense<double> matmul(const Dense<double>& a, const Dense<double>& b) {
  Dense<double> c{a.rows, b.cols, std::vector<double>(static_cast<size_t>(a.rows * b.cols), 0.0)};
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t l = 0; l < a.cols; ++l)
      for (int64_t j = 0; j < b.cols; ++j) c.at(i, j) += a.at(i, l) * b.at(l, j);
  return c;
}

class CpuBackendTest : public ::testing::TestWithParam<std::tuple<Shape, Precision, std::string>> {
 protected:
  Shape shape() const { return std::get<0>(GetParam()); }
  Precision precision() const { return std::get<1>(GetParam()); }
  const std::string& algo() const { return std::get<2>(GetParam()); }
  double tol() const { return precision() == Precision::F32 ? 1e-4 : 1e-8; }
};

}  // namespace

TEST_P(CpuBackendTest, KnownAnswer) {
  const auto [out, in] = shape();
  const int64_t r = std::min(out, in);
  std::mt19937_64 rng(out * 1000 + in);
  Dense<double> q = random_orthonormal(out, r, rng), v = random_orthonormal(in, r, rng);
  std::vector<double> s(r);
  for (int64_t i = 0; i < r; ++i) s[i] = 10.0 * std::pow(0.9, static_cast<double>(i));
  Dense<double> w0 = compose_svd(q, s, v);
  Dense<double> w = compose_svd(matmul(q, known_mixing(r)), s, random_orthonormal(in, r, rng));

  auto backend = make_cpu_backend(precision(), algo());
  Decomposition base = run(*backend, w0, Side::Left, 0);
  Decomposition tuned = run(*backend, w, Side::Left, 10);
  ASSERT_EQ(base.left.count, r);
  ASSERT_EQ(tuned.left.count, 10);
  ASSERT_EQ(tuned.sigma.size(), static_cast<size_t>(r));
  EXPECT_NEAR(tuned.sigma[0], 10.0, 1e-4);
  MatrixResult m = intruder_record(*backend, tuned, base, Side::Left, 10, eps_grid({0.5}));
  ASSERT_EQ(m.k, 10);
  for (int j = 0; j < 8; ++j) EXPECT_NEAR(m.maxcos[j], 1.0 / std::sqrt(8.0), tol()) << j;
  EXPECT_NEAR(m.maxcos[8], std::sin(50.0 * M_PI / 180.0), tol());
  EXPECT_EQ(m.argmax[8], 12);
  EXPECT_NEAR(m.maxcos[9], 1.0, tol());
  EXPECT_EQ(m.argmax[9], 9);
  EXPECT_NEAR(m.sigma_ratio[3], std::pow(0.9, 3), 1e-5);
  EXPECT_EQ(m.count_at(0.3), 0);
  EXPECT_EQ(m.count_at(0.5), 8);
  EXPECT_EQ(m.count_at(0.8), 9);
  EXPECT_EQ(m.count_at(0.9), 9);
}

TEST_P(CpuBackendTest, AgreesWithIndependentFp64) {
  const auto [out, in] = shape();
  const int64_t r = std::min(out, in);
  std::mt19937_64 rng(out + 7 * in);
  Dense<double> w0 = random_weight(out, in, 1.0, rng);
  // A low-rank update of large norm, as a LoRA makes.
  Dense<double> w = compose_svd(random_orthonormal(out, 4, rng), {0.9, 0.7, 0.5, 0.3},
                                random_orthonormal(in, 4, rng));
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += w0.data[i];
  // Round the inputs to the working precision so both sides see the same matrix.
  if (precision() == Precision::F32) {
    for (auto& x : w0.data) x = static_cast<float>(x);
    for (auto& x : w.data) x = static_cast<float>(x);
  }
  const int k = static_cast<int>(std::min<int64_t>(10, r));
  auto backend = make_cpu_backend(precision(), algo());
  Decomposition base = run(*backend, w0, Side::Left, 0);
  Decomposition tuned = run(*backend, w, Side::Left, k);
  MatrixResult m = intruder_record(*backend, tuned, base, Side::Left, k, eps_grid({0.5}));
  test::RefSimilarity ref =
      test::reference_similarity(test::reference_left(w), test::reference_left(w0), k);
  for (int j = 0; j < k; ++j) {
    EXPECT_NEAR(m.maxcos[j], ref.maxcos[j], tol()) << "j=" << j;
    if (ref.maxcos[j] > 0.9) EXPECT_EQ(m.argmax[j], ref.argmax[j]) << "j=" << j;
  }
  for (double e : eps_sweep()) {
    int expect = 0;
    bool near_edge = false;
    for (double c : ref.maxcos) expect += c < e, near_edge |= std::fabs(c - e) < 1e-4;
    if (!near_edge) EXPECT_EQ(m.count_at(e), expect) << "eps " << e;
  }
  EXPECT_GE(m.count_at(0.5), 1) << "the update's directions are new to the base";
}

TEST_P(CpuBackendTest, RightSideIsLeftSideOfTranspose) {
  const auto [out, in] = shape();
  std::mt19937_64 rng(3 * out + in);
  Dense<double> w0 = random_weight(out, in, 1.0, rng);
  Dense<double> w = random_weight(out, in, 1.0, rng);
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] = w0.data[i] + 0.3 * w.data[i];
  auto backend = make_cpu_backend(precision(), algo());
  Decomposition b = run(*backend, w0, Side::Both, 0), t = run(*backend, w, Side::Both, 10);
  EXPECT_EQ(b.right.dim, in);
  MatrixResult right = intruder_record(*backend, t, b, Side::Right, 10, eps_sweep());
  Decomposition bt = run(*backend, test::transpose(w0), Side::Left, 0);
  Decomposition tt = run(*backend, test::transpose(w), Side::Left, 10);
  MatrixResult left_t = intruder_record(*backend, tt, bt, Side::Left, 10, eps_sweep());
  ASSERT_EQ(right.k, left_t.k);
  for (int j = 0; j < right.k; ++j) EXPECT_NEAR(right.maxcos[j], left_t.maxcos[j], tol());
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuBackendTest,
                         ::testing::Combine(::testing::Values(Shape{64, 64}, Shape{96, 48},
                                                              Shape{48, 96}, Shape{37, 53},
                                                              Shape{130, 17}),
                                            ::testing::Values(Precision::F32, Precision::F64),
                                            ::testing::Values("gesdd", "gram64")),
                         [](const auto& info) {
                           const Shape s = std::get<0>(info.param);
                           return std::to_string(s.out) + "x" + std::to_string(s.in) + "_" +
                                  precision_name(std::get<1>(info.param)) + "_" +
                                  std::get<2>(info.param);
                         });

TEST(CpuBackend, CompareTakesAbsoluteValueAndFirstArgmax) {
  auto b = make_cpu_backend(Precision::F64);
  Vectors base{2, 2, std::vector<double>{1, 0, 0, 1}};              // e0, e1
  Vectors tuned{2, 2, std::vector<double>{-0.6, 0.8, -0.8, -0.6}};  // columns (-.6,-.8), (.8,-.6)
  Similarity s = b->compare(tuned, base, 5);  // k clamps to the 2 vectors there are
  ASSERT_EQ(s.maxcos.size(), 2u);
  EXPECT_DOUBLE_EQ(s.maxcos[0], 0.8);
  EXPECT_EQ(s.argmax[0], 1);
  EXPECT_DOUBLE_EQ(s.maxcos[1], 0.8);
  EXPECT_EQ(s.argmax[1], 0);
  Vectors other{3, 1, std::vector<double>{1, 0, 0}};
  EXPECT_THROW(b->compare(other, base, 1), Error);
}

TEST(CpuBackend, FallbackNoteAndUnknownBackend) {
  std::string note;
  auto b = make_backend("auto", Precision::F32, &note);
  EXPECT_EQ(b->name(), "cpu");
  EXPECT_NE(note.find("CPU backend"), std::string::npos);
  EXPECT_THROW(make_backend("tpu", Precision::F32, nullptr), UsageError);
}

TEST(CpuBackend, Gram64TopKMatchesItsFullDecompositionAndKeepsEverySigma) {
  // 300 x 120 (tall, right-side Gram) and 120 x 300 (wide, left-side Gram): keep 10 takes the
  // tridiagonal route (dstemr), keep 0 the full dsyevd one; they must describe the same matrix.
  for (const auto [out, in] : {std::pair<int64_t, int64_t>{300, 120}, {120, 300}}) {
    std::mt19937_64 rng(out * 3 + in);
    const Dense<double> w = random_weight(out, in, 1.0, rng);
    auto b = make_cpu_backend(Precision::F64, "gram64");
    auto ref = make_cpu_backend(Precision::F64, "gesdd");
    const Decomposition top = run(*b, w, Side::Both, 10), all = run(*b, w, Side::Both, 0);
    EXPECT_EQ(top.route, "gram64/tridiagonal") << "a Gram of 120 is too small to iterate on";
    EXPECT_EQ(all.route, "gram64/syevd");
    const Decomposition exact = run(*ref, w, Side::Both, 0);
    ASSERT_EQ(top.sigma.size(), 120u);
    ASSERT_EQ(top.left.count, 10);
    ASSERT_EQ(top.right.count, 10);
    EXPECT_EQ(top.left.dim, out);
    EXPECT_EQ(top.right.dim, in);
    for (size_t i = 0; i < top.sigma.size(); ++i) {
      EXPECT_NEAR(top.sigma[i], exact.sigma[i], 1e-9 * exact.sigma[0]) << i;
      EXPECT_NEAR(all.sigma[i], exact.sigma[i], 1e-9 * exact.sigma[0]) << i;
    }
    for (int64_t j = 0; j < 10; ++j) {
      double dot_l = 0, dot_r = 0, dot_full = 0;  // signs are arbitrary
      for (int64_t i = 0; i < out; ++i)
        dot_l += top.left.at(i, j) * exact.left.at(i, j),
            dot_full += top.left.at(i, j) * all.left.at(i, j);
      for (int64_t i = 0; i < in; ++i) dot_r += top.right.at(i, j) * exact.right.at(i, j);
      EXPECT_NEAR(std::fabs(dot_l), 1.0, 1e-9) << j;
      EXPECT_NEAR(std::fabs(dot_r), 1.0, 1e-9) << j;
      EXPECT_NEAR(std::fabs(dot_full), 1.0, 1e-9) << j;
    }
  }
}

TEST(CpuBackend, Gram64LeavesNullDirectionsZeroNeverLongerThanOne) {
  // Rank 20 of a tall 150 x 60 matrix: the Gram side is W^T W (60), and left vectors 20..59 have
  // no direction to come from. They must come back zero, never as amplified rounding noise.
  std::mt19937_64 rng(17);
  std::vector<double> s(60, 0.0);
  for (int i = 0; i < 20; ++i) s[i] = 1.0 / (1 + i);
  const Dense<double> w =
      compose_svd(random_orthonormal(150, 60, rng), s, random_orthonormal(60, 60, rng));
  for (Precision p : {Precision::F32, Precision::F64}) {
    auto b = make_cpu_backend(p, "gram64");
    const Decomposition d = run(*b, w, Side::Left, 0);
    ASSERT_EQ(d.left.count, 60);
    for (int64_t j = 0; j < 60; ++j) {
      double norm = 0;
      for (int64_t i = 0; i < 150; ++i) norm += d.left.at(i, j) * d.left.at(i, j);
      if (j < 20)
        EXPECT_NEAR(norm, 1.0, 1e-5) << j;
      else
        EXPECT_EQ(norm, 0.0) << j;
    }
  }
}

TEST(CpuBackend, AlgorithmsByName) {
  EXPECT_EQ(make_backend("cpu", Precision::F32, nullptr, "gram64")->algo(), "gram64");
  EXPECT_EQ(make_backend("cpu", Precision::F32, nullptr, "gesdd")->algo(), "gesdd");
  EXPECT_THROW(make_backend("cpu", Precision::F32, nullptr, "gesvd"), UsageError);
  EXPECT_THROW(make_cpu_backend(Precision::F32, "qr"), UsageError);
}

namespace {

// |<x, y>| of column j of two decompositions' left vectors.
double left_dot(const Decomposition& a, const Decomposition& b, int64_t j) {
  double dot = 0;
  for (int64_t i = 0; i < a.left.dim; ++i) dot += a.left.at(i, j) * b.left.at(i, j);
  return std::fabs(dot);
}

}  // namespace

TEST(CpuBackend, Gram64TopKByIterationMatchesTheExactRoute) {
  // Grams of 300 and more take the iterative route for the tuned side's top 10: a decaying
  // spectrum with a LoRA-like update on top (tall and wide), and a top of 12 values 0.1% apart.
  struct Case {
    int64_t out, in;
    bool clustered;
  };
  for (const Case c : {Case{420, 300, false}, Case{300, 700, false}, Case{320, 320, true}}) {
    std::mt19937_64 rng(c.out + c.in);
    const int64_t r = std::min(c.out, c.in);
    std::vector<double> s(static_cast<size_t>(r));
    for (int64_t i = 0; i < r; ++i)
      s[i] = c.clustered && i < 12 ? 1.0 - 0.001 * i : std::pow(i + 1.0, -0.6);
    Dense<double> w =
        compose_svd(random_orthonormal(c.out, r, rng), s, random_orthonormal(c.in, r, rng));
    const Dense<double> upd = compose_svd(random_orthonormal(c.out, 3, rng), {0.8, 0.6, 0.4},
                                          random_orthonormal(c.in, 3, rng));
    for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += upd.data[i];
    auto gram = make_cpu_backend(Precision::F64, "gram64");
    auto exact = make_cpu_backend(Precision::F64, "gesdd");
    const Decomposition it = run(*gram, w, Side::Both, 10), ex = run(*exact, w, Side::Both, 0);
    ASSERT_EQ(it.sigma.size(), 50u) << "the iterative route keeps the 50 leading values";
    EXPECT_EQ(it.route.rfind("gram64/subspace, ", 0), 0u) << it.route;
    EXPECT_EQ(ex.route, "gesdd");
    // The top 10 converged; the others, shown in spectra only, to plotting accuracy.
    for (size_t j = 0; j < 50; ++j)
      EXPECT_NEAR(it.sigma[j], ex.sigma[j], (j < 10 ? 1e-10 : 1e-3) * ex.sigma[0]) << j;
    ASSERT_EQ(it.left.count, 10);
    ASSERT_EQ(it.right.count, 10);
    if (c.clustered) {
      // Vectors of a cluster are not defined one by one; the span of the top 12 is.
      for (int64_t j = 0; j < 10; ++j) {
        double in_span = 0;  // squared length of vector j's projection onto the exact top 12
        for (int64_t l = 0; l < 12; ++l) {
          double d = 0;
          for (int64_t i = 0; i < c.out; ++i) d += it.left.at(i, j) * ex.left.at(i, l);
          in_span += d * d;
        }
        EXPECT_NEAR(in_span, 1.0, 1e-9) << j;
      }
      continue;
    }
    for (int64_t j = 0; j < 10; ++j) {
      EXPECT_NEAR(left_dot(it, ex, j), 1.0, 1e-10) << c.out << "x" << c.in << " " << j;
      double right = 0;
      for (int64_t i = 0; i < c.in; ++i) right += it.right.at(i, j) * ex.right.at(i, j);
      EXPECT_NEAR(std::fabs(right), 1.0, 1e-10) << j;
    }
  }
}

TEST(CpuBackend, Gram64TopKFallsBackToTheExactRouteWhenIterationIsSlow) {
  // A nearly flat spectrum (1, 0.999, 0.998, ...): sigma_67 / sigma_10 = 0.94 is too close to 1
  // for 60 sweeps to reach the residual bound, so the exact route answers, with every value.
  std::mt19937_64 rng(3);
  std::vector<double> s(300);
  for (int i = 0; i < 300; ++i) s[i] = 1.0 - 0.001 * i;
  const Dense<double> w =
      compose_svd(random_orthonormal(300, 300, rng), s, random_orthonormal(300, 300, rng));
  const Decomposition it = run(*make_cpu_backend(Precision::F64, "gram64"), w, Side::Left, 10);
  const Decomposition ex = run(*make_cpu_backend(Precision::F64, "gesdd"), w, Side::Left, 10);
  ASSERT_EQ(it.sigma.size(), 300u);
  EXPECT_EQ(it.route, "gram64/tridiagonal");
  for (int64_t j = 0; j < 10; ++j) EXPECT_NEAR(left_dot(it, ex, j), 1.0, 1e-9) << j;
}

TEST(CpuBackend, SubspaceIterationGivesUpEarlyOnlyWhenTheBoundIsOutOfReach) {
  using detail::subspace_hopeless;
  EXPECT_FALSE(subspace_hopeless(1, 1e-3, 9.9e-4, 60)) << "too early to judge a rate";
  EXPECT_FALSE(subspace_hopeless(5, 1e-3, 1e-4, 60)) << "x0.1 a sweep: 8 more reach 1e-12";
  EXPECT_TRUE(subspace_hopeless(5, 1e-3, 9e-4, 60)) << "x0.9 a sweep: about 200 more needed";
  EXPECT_TRUE(subspace_hopeless(5, 1e-3, 1e-3, 60)) << "no progress";
  EXPECT_FALSE(subspace_hopeless(50, 1e-11, 3e-12, 60)) << "close to the bound at a fair rate";
  EXPECT_TRUE(subspace_hopeless(58, 1e-6, 5e-7, 60)) << "20 more sweeps past the cap";
  EXPECT_TRUE(subspace_hopeless(10, 1e-6, 5e-7, 20)) << "past a smaller cap";
  // The cap follows the Gram's order: a sweep is cheap next to the exact route when n is large.
  EXPECT_EQ(detail::subspace_max_sweeps(300, 10), 20);
  EXPECT_EQ(detail::subspace_max_sweeps(2048, 10), 31);
  EXPECT_EQ(detail::subspace_max_sweeps(11008, 10), 60);
}

// The loaders' conversion checks each block as it converts: the first non-finite value is
// found where it lies, past the first block too, in every analysable dtype, and the values
// before it are converted exactly.
TEST(ConvertFinite, FindsTheFirstNonFiniteValueInEveryDtype) {
  std::vector<float> v(10000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.25f * static_cast<float>(i % 17) - 2.0f;
  std::vector<float> bad = v;
  bad[9000] = std::numeric_limits<float>::infinity();
  bad[9500] = std::nanf("");
  for (DType t : {DType::BF16, DType::F16, DType::F32, DType::F64}) {
    std::vector<double> out(v.size());
    EXPECT_EQ(detail::convert_finite(encode_floats(v, t).data(), t, v.size(), out.data()), v.size())
        << dtype_name(t);
    for (size_t i : {size_t{0}, size_t{4095}, size_t{4096}, size_t{9999}})
      EXPECT_EQ(out[i], static_cast<double>(v[i])) << dtype_name(t) << " at " << i;
    std::vector<float> f(v.size());
    EXPECT_EQ(detail::convert_finite(encode_floats(bad, t).data(), t, v.size(), f.data()), 9000u)
        << dtype_name(t);
  }
}
