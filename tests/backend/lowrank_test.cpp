// The exact low-rank route (Backend::decompose_lowrank) against the full route on the merged
// matrix, both on the CPU backend: random bases with decaying, clustered, flat and
// rank-deficient spectra, square, tall and wide, r = 1 ... 64 (the iteration and the dense
// solve both), updates partly outside the base's range; identical counts at every eps and the
// top-k maxcos within 1e-6 in fp64 (1e-5 in fp32); the right side; the refusals (DoRA, a
// failed certificate) that send a unit to the full route; the host's products with the base
// and its vectors in either orientation.
#include <gtest/gtest.h>
#include <lapacke.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "indim/analyze.hpp"
#include "indim/error.hpp"
#include "lowrank_products_check.hpp"
#include "reference.hpp"

using namespace indim;

namespace {

enum class Spectrum { Decay, Clustered, Flat, RankDeficient };

const char* spectrum_name(Spectrum s) {
  switch (s) {
    case Spectrum::Decay:
      return "decay";
    case Spectrum::Clustered:
      return "clustered";
    case Spectrum::Flat:
      return "flat";
    case Spectrum::RankDeficient:
      return "rankdef";
  }
  return "";
}

// Orthonormal columns [rows, cols] (rows >= cols), row-major: QR of a Gaussian.
Dense<double> haar(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  Dense<double> g = test::gaussian(rows, cols, 1.0, rng);
  std::vector<double> tau(static_cast<size_t>(cols));
  const lapack_int m = static_cast<lapack_int>(rows), n = static_cast<lapack_int>(cols);
  EXPECT_EQ(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, m, n, g.data.data(), n, tau.data()), 0);
  EXPECT_EQ(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, m, n, n, g.data.data(), n, tau.data()), 0);
  return g;
}

std::vector<double> spectrum(Spectrum s, int64_t p) {
  std::vector<double> sigma(static_cast<size_t>(p));
  for (int64_t i = 0; i < p; ++i) {
    const double x = static_cast<double>(i + 1);
    switch (s) {
      case Spectrum::Decay:
        sigma[i] = std::pow(x, -0.6);
        break;
      // Groups of five values 1e-3 apart, the groups a factor 0.95 apart.
      case Spectrum::Clustered:
        sigma[i] = std::pow(0.95, i / 5) * (1.0 - 1e-3 * (i % 5));
        break;
      case Spectrum::Flat:
        sigma[i] = 1.0 - 0.5 * x / static_cast<double>(p);
        break;
      case Spectrum::RankDeficient:
        sigma[i] = i < p / 3 ? std::pow(x, -0.6) : 0.0;
        break;
    }
  }
  return sigma;
}

// W0 = U diag(sigma) V^T [out, in].
Dense<double> base_matrix(int64_t out, int64_t in, Spectrum s, std::mt19937_64& rng) {
  const int64_t p = std::min(out, in);
  const Dense<double> u = haar(out, p, rng), v = haar(in, p, rng);
  const std::vector<double> sigma = spectrum(s, p);
  Dense<double> w{out, in, std::vector<double>(static_cast<size_t>(out * in), 0.0)};
  for (int64_t i = 0; i < out; ++i)
    for (int64_t l = 0; l < p; ++l) {
      const double f = u.at(i, l) * sigma[l];
      for (int64_t j = 0; j < in; ++j) w.at(i, j) += f * v.at(j, l);
    }
  return w;
}

Dense<double> merged(const Dense<double>& w0, const LowRankUpdate& up) {
  Dense<double> w = w0;
  apply_update(w, up, "merged");
  return w;
}

// A LoRA update whose columns range from small to large norms, so that some top directions
// are new (intruders) and others are the base's.
LowRankUpdate lora(int64_t out, int64_t in, int64_t r, std::mt19937_64& rng) {
  LowRankUpdate up;
  up.a = test::gaussian(r, in, 1.0 / std::sqrt(static_cast<double>(in)), rng);
  up.b = test::gaussian(out, r, 1.0, rng);
  for (int64_t j = 0; j < r; ++j) {
    // With the scale below, s ||B_j|| ||A_j|| is about 0.9 * 0.7^j against sigma0_1 = 1.
    const double f = 0.45 * std::pow(0.7, static_cast<double>(j)) *
                     std::sqrt(static_cast<double>(r) / static_cast<double>(out));
    for (int64_t i = 0; i < out; ++i) up.b.at(i, j) *= f;
  }
  up.scale = 2.0 / std::sqrt(static_cast<double>(r));  // rsLoRA's alpha / sqrt(r)
  return up;
}

struct Routes {
  MatrixResult full, low;
  std::string route;
  Decomposition low_d, base_d;  // the low-rank route's decomposition and the base's
};

// Both routes against the same base decomposition, on `side`.
Routes both_routes(Backend& b, const Dense<double>& w0, const LowRankUpdate& up, Side side, int k,
                   double tol = 0) {
  Decomposition base = b.precision() == Precision::F32
                           ? b.decompose(test::cast<float>(w0), side, 0, "base")
                           : b.decompose(test::cast<double>(w0), side, 0, "base");
  // The reference is the full route in fp64 whatever the backend's precision.
  auto b64 = make_cpu_backend(Precision::F64, "gram64");
  Decomposition full = b64->decompose(merged(w0, up), side, k, "full");
  Decomposition base64 = b64->decompose(test::cast<double>(w0), side, 0, "base");
  LowRankProblem pr;
  pr.base_bytes = w0.data.data();
  pr.dtype = DType::F64;
  pr.rows = w0.rows, pr.cols = w0.cols;
  pr.update = &up;
  pr.base = &base;
  pr.side = side;
  pr.keep = k;
  pr.tol = tol;
  pr.base_label = "base", pr.label = "adapter";
  std::string why;
  std::optional<Decomposition> low = b.decompose_lowrank(pr, &why);
  if (!low) throw Error("low-rank route refused: " + why);
  const std::vector<double> eps = eps_sweep();
  const Side s = side == Side::Right ? Side::Right : Side::Left;
  return {intruder_record(*b64, full, base64, s, k, eps), intruder_record(b, *low, base, s, k, eps),
          low->route, std::move(*low), std::move(base)};
}

void expect_same(const MatrixResult& full, const MatrixResult& low, double tol) {
  ASSERT_EQ(full.k, low.k);
  for (int j = 0; j < full.k; ++j) {
    EXPECT_NEAR(low.maxcos[j], full.maxcos[j], tol) << "j = " << j;
    EXPECT_NEAR(low.sigma[j], full.sigma[j], 1e-9 + 1e-7 * full.sigma[0]) << "j = " << j;
  }
  for (size_t e = 0; e < full.eps.size(); ++e) {
    bool near = false;  // a value within tol of eps may fall either side
    for (double m : full.maxcos) near = near || std::fabs(m - full.eps[e]) <= tol;
    if (!near) EXPECT_EQ(low.counts[e], full.counts[e]) << "eps " << full.eps[e];
  }
}

using Case = std::tuple<std::tuple<int64_t, int64_t>, int64_t, Spectrum>;

class LowRankRoute : public ::testing::TestWithParam<Case> {};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const auto& shape = std::get<0>(info.param);
  return std::to_string(std::get<0>(shape)) + "x" + std::to_string(std::get<1>(shape)) + "_r" +
         std::to_string(std::get<1>(info.param)) + "_" + spectrum_name(std::get<2>(info.param));
}

}  // namespace

TEST_P(LowRankRoute, AgreesWithFullRouteFp64) {
  const auto [shape, r, spec] = GetParam();
  const auto [out, in] = shape;
  std::mt19937_64 rng(static_cast<uint64_t>(out * 7 + in * 3 + r * 11 + static_cast<int>(spec)));
  const Dense<double> w0 = base_matrix(out, in, spec, rng);
  const LowRankUpdate up = lora(out, in, r, rng);
  auto b = make_cpu_backend(Precision::F64, "gram64");
  const Routes got = both_routes(*b, w0, up, Side::Left, 10);
  SCOPED_TRACE(got.route);
  EXPECT_EQ(got.route.rfind("lowrank/", 0), 0u);
  expect_same(got.full, got.low, 1e-6);
  int intruders = 0;  // the update is strong enough to bring some in
  for (double m : got.full.maxcos) intruders += m < 0.5 ? 1 : 0;
  if (spec == Spectrum::Decay && out >= 300) EXPECT_GT(intruders, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LowRankRoute,
    ::testing::Combine(::testing::Values(std::make_tuple(int64_t{320}, int64_t{320}),
                                         std::make_tuple(int64_t{480}, int64_t{300}),
                                         std::make_tuple(int64_t{300}, int64_t{480}),
                                         std::make_tuple(int64_t{40}, int64_t{24})),
                       ::testing::Values(int64_t{1}, int64_t{4}, int64_t{16}, int64_t{64}),
                       ::testing::Values(Spectrum::Decay, Spectrum::Clustered, Spectrum::Flat,
                                         Spectrum::RankDeficient)),
    case_name);

TEST(LowRankRouteMore, IterationAndDenseBothRun) {
  std::mt19937_64 rng(5);
  const Dense<double> w0 = base_matrix(400, 400, Spectrum::Decay, rng);
  auto b = make_cpu_backend(Precision::F64, "gram64");
  const Routes small = both_routes(*b, w0, lora(400, 400, 8, rng), Side::Left, 10);
  EXPECT_EQ(small.route.rfind("lowrank/krylov, ", 0), 0u) << small.route;
  const Routes big = both_routes(*b, w0, lora(400, 400, 64, rng), Side::Left, 10);
  EXPECT_EQ(big.route, "lowrank/dense") << big.route;
  // r = 20 at order 600: q = 40 is wider than the start's 26 base coordinates, so the basis
  // grows by the residuals of the leading Ritz pairs rather than by T's image of its last block.
  const Dense<double> w1 = base_matrix(600, 600, Spectrum::Decay, rng);
  const Routes wide = both_routes(*b, w1, lora(600, 600, 20, rng), Side::Left, 10);
  EXPECT_EQ(wide.route.rfind("lowrank/krylov, ", 0), 0u) << wide.route;
  expect_same(wide.full, wide.low, 1e-6);
}

TEST(LowRankRouteMore, Fp32AgreesWithFullRouteFp64) {
  for (auto [out, in] : {std::pair<int64_t, int64_t>{320, 320}, {480, 300}, {300, 480}}) {
    std::mt19937_64 rng(static_cast<uint64_t>(out + in));
    const Dense<double> w0 = base_matrix(out, in, Spectrum::Decay, rng);
    const LowRankUpdate up = lora(out, in, 16, rng);
    auto b64 = make_cpu_backend(Precision::F64, "gram64");
    auto b32 = make_cpu_backend(Precision::F32, "gram64");
    const Routes ref = both_routes(*b64, w0, up, Side::Left, 10);
    const Routes got = both_routes(*b32, w0, up, Side::Left, 10);
    SCOPED_TRACE(got.route);
    expect_same(ref.full, got.low, 1e-5);
  }
}

TEST(LowRankRouteMore, RightAndBothSides) {
  std::mt19937_64 rng(9);
  for (auto [out, in] : {std::pair<int64_t, int64_t>{480, 300}, {300, 480}}) {
    const Dense<double> w0 = base_matrix(out, in, Spectrum::Decay, rng);
    const LowRankUpdate up = lora(out, in, 8, rng);
    auto b = make_cpu_backend(Precision::F64, "gram64");
    const Routes right = both_routes(*b, w0, up, Side::Right, 10);
    EXPECT_EQ(right.full.side, "right");
    expect_same(right.full, right.low, 1e-6);
    const Routes both = both_routes(*b, w0, up, Side::Both, 10);  // its left record
    expect_same(both.full, both.low, 1e-6);
  }
}

TEST(LowRankRouteMore, RefusesDoraAndAFailedCertificate) {
  std::mt19937_64 rng(2);
  const Dense<double> w0 = base_matrix(300, 300, Spectrum::Decay, rng);
  LowRankUpdate up = lora(300, 300, 4, rng);
  auto b = make_cpu_backend(Precision::F64, "gram64");
  // A certificate bound below rounding cannot be met.
  try {
    both_routes(*b, w0, up, Side::Left, 10, 1e-300);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("residual"), std::string::npos) << e.what();
  }
  up.magnitude.assign(300, 1.0);
  try {
    both_routes(*b, w0, up, Side::Left, 10);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DoRA"), std::string::npos) << e.what();
  }
}

TEST(LowRankRouteMore, MaxcosFromCoordinatesMatchesTheVectors) {
  // The records take maxcos, argmax and the plotted head from the route's coordinates along
  // the base's vectors; they must be the cosines of the vectors it returns, on either side,
  // in both precisions, against a rank-deficient base too (its null vectors are zero).
  std::mt19937_64 rng(12);
  for (auto [out, in] : {std::pair<int64_t, int64_t>{360, 240}, {240, 360}})
    for (Spectrum spec : {Spectrum::Decay, Spectrum::RankDeficient})
      for (Precision prec : {Precision::F64, Precision::F32}) {
        const Dense<double> w0 = base_matrix(out, in, spec, rng);
        const LowRankUpdate up = lora(out, in, 8, rng);
        auto b = make_cpu_backend(prec, "gram64");
        const Routes got = both_routes(*b, w0, up, Side::Both, 10);
        for (Side s : {Side::Left, Side::Right}) {
          const bool left = s == Side::Left;
          SCOPED_TRACE(std::to_string(out) + "x" + std::to_string(in) + " " + side_name(s) + " " +
                       precision_name(prec) + " " + spectrum_name(spec));
          const Vectors& y = left ? got.low_d.left : got.low_d.right;
          const Vectors& x = left ? got.base_d.left : got.base_d.right;
          ASSERT_EQ((left ? got.low_d.left_in_base : got.low_d.right_in_base).size(),
                    static_cast<size_t>(y.count * x.count));
          const MatrixResult rec = intruder_record(*b, got.low_d, got.base_d, s, 10, eps_sweep());
          const Similarity direct = b->compare(y, x, 10, kPlotHead);
          const double tol = prec == Precision::F64 ? 1e-10 : 2e-6;
          ASSERT_EQ(rec.maxcos.size(), direct.maxcos.size());
          for (size_t j = 0; j < direct.maxcos.size(); ++j) {
            EXPECT_NEAR(rec.maxcos[j], direct.maxcos[j], tol) << "j = " << j;
            // The argmax is the same vector unless two cosines tie within rounding.
            if (rec.argmax[j] != direct.argmax[j]) {
              const Similarity all = b->compare(y, x, 10, x.count);
              EXPECT_NEAR(all.head[j * x.count + rec.argmax[j]], direct.maxcos[j], tol)
                  << "j = " << j;
            }
          }
          ASSERT_EQ(rec.cos_head.size(), direct.head.size());
          for (size_t i = 0; i < direct.head.size(); ++i)
            EXPECT_NEAR(rec.cos_head[i], direct.head[i], tol) << "head " << i;
        }
      }
}

TEST(LowRankRouteMore, ZeroUpdateKeepsTheBase) {
  std::mt19937_64 rng(4);
  const Dense<double> w0 = base_matrix(300, 300, Spectrum::Decay, rng);
  LowRankUpdate up = lora(300, 300, 4, rng);
  for (double& x : up.b.data) x = 0;  // PEFT's initialisation: B = 0
  auto b = make_cpu_backend(Precision::F64, "gram64");
  const Routes got = both_routes(*b, w0, up, Side::Left, 10);
  for (int j = 0; j < got.low.k; ++j) {
    EXPECT_NEAR(got.low.maxcos[j], 1.0, 1e-9);
    EXPECT_EQ(got.low.argmax[j], j);
  }
}

namespace {

// A problem for the products alone: a base stored [rows, cols] and a rank-4 update.
LowRankProblem products_problem(const test::StoredBase& s, int64_t rows, int64_t cols, bool conv1d,
                                const LowRankUpdate& up, DType dtype = DType::BF16) {
  LowRankProblem pr;
  pr.base_bytes = s.bytes.data();
  pr.dtype = dtype;
  pr.rows = rows, pr.cols = cols;
  pr.conv1d = conv1d;
  pr.update = &up;
  pr.base_label = "base.safetensors: tensor 'w'";
  return pr;
}

Vectors random_vectors(int64_t dim, int64_t count, std::mt19937_64& rng,
                       Precision precision = Precision::F32) {
  Vectors v = Vectors::zeros(precision, dim, count);
  std::normal_distribution<float> g;
  if (precision == Precision::F32)
    for (float& x : v.values<float>()) x = g(rng);
  else
    for (double& x : v.values<double>()) x = g(rng);
  return v;
}

}  // namespace

TEST(LowRankProducts, HostProductsFollowTheAnalysedOrientation) {
  // W0 stored [96, 70], analysed as stored and as a Conv1D's transpose; U0 of either side.
  for (bool conv1d : {false, true}) {
    std::mt19937_64 rng(conv1d ? 11 : 12);
    const test::StoredBase s = test::stored_bf16(96, 70, conv1d, rng);
    const LowRankUpdate up = lora(s.analysed.rows, s.analysed.cols, 4, rng);
    const LowRankProblem pr = products_problem(s, 96, 70, conv1d, up);
    auto cpu = make_cpu_backend(Precision::F32, "gram64");
    const std::unique_ptr<detail::LowRankProducts> p = cpu->lowrank_products(pr);
    EXPECT_EQ(p->rows(), s.analysed.rows);
    EXPECT_EQ(p->cols(), s.analysed.cols);
    for (int64_t dim : {s.analysed.rows, s.analysed.cols})
      EXPECT_LT(test::products_error(*p, s.analysed, random_vectors(dim, 70, rng), 5, rng), 1e-13)
          << "conv1d " << conv1d << ", vectors of dimension " << dim;
  }
}

TEST(LowRankProducts, HostProductsReadEveryStoredTypeAndPrecision) {
  // bf16, fp32 and fp64 bases are read as stored, fp16 through an fp64 copy; vectors in fp32
  // (an fp32 run's cache) and fp64; blocks of 1 to 40 columns (the products work in chunks of
  // 8 and 16).
  auto cpu = make_cpu_backend(Precision::F64, "gram64");
  std::mt19937_64 rng(21);
  for (DType dtype : {DType::BF16, DType::F16, DType::F32, DType::F64})
    for (bool conv1d : {false, true}) {
      const test::StoredBase s = test::stored_base(53, 38, conv1d, dtype, rng);
      const LowRankUpdate up = lora(s.analysed.rows, s.analysed.cols, 4, rng);
      const LowRankProblem pr = products_problem(s, 53, 38, conv1d, up, dtype);
      const std::unique_ptr<detail::LowRankProducts> p = cpu->lowrank_products(pr);
      for (Precision prec : {Precision::F32, Precision::F64})
        for (int64_t c : {1, 8, 9, 16, 40})
          EXPECT_LT(test::products_error(*p, s.analysed,
                                         random_vectors(s.analysed.rows, 38, rng, prec), c, rng),
                    1e-13)
              << dtype_name(dtype) << " conv1d " << conv1d << " " << precision_name(prec)
              << " c = " << c;
    }
}

TEST(LowRankProducts, NonFiniteBaseIsBadInputInStoredCoordinates) {
  std::mt19937_64 rng(13);
  test::StoredBase s = test::stored_bf16(40, 30, true, rng);
  const uint16_t nan = 0x7fc0;  // bf16 NaN at stored [3, 7]
  std::memcpy(s.bytes.data() + (3 * 30 + 7) * 2, &nan, 2);
  const LowRankUpdate up = lora(30, 40, 2, rng);
  const LowRankProblem pr = products_problem(s, 40, 30, true, up);
  auto cpu = make_cpu_backend(Precision::F32, "gram64");
  try {
    cpu->lowrank_products(pr);
    FAIL() << "no error";
  } catch (const BadInput& e) {
    EXPECT_EQ(std::string(e.what()),
              "base.safetensors: tensor 'w' holds a non-finite value at [3, 7]");
  }
  // The same for the types read as stored and the one copied (an fp32 +inf, an fp16 -inf).
  for (DType dtype : {DType::F32, DType::F16}) {
    test::StoredBase t = test::stored_base(40, 30, false, dtype, rng);
    const uint32_t inf32 = 0x7f800000;
    const uint16_t ninf16 = 0xfc00;
    if (dtype == DType::F32)
      std::memcpy(t.bytes.data() + (5 * 30 + 29) * 4, &inf32, 4);
    else
      std::memcpy(t.bytes.data() + (5 * 30 + 29) * 2, &ninf16, 2);
    const LowRankUpdate u2 = lora(40, 30, 2, rng);
    try {
      cpu->lowrank_products(products_problem(t, 40, 30, false, u2, dtype));
      FAIL() << "no error for " << dtype_name(dtype);
    } catch (const BadInput& e) {
      EXPECT_EQ(std::string(e.what()),
                "base.safetensors: tensor 'w' holds a non-finite value at [5, 29]");
    }
  }
}
