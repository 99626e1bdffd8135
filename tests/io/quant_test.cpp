// Quantised weights: every code of every minifloat format against its definition, the
// producers' rounding, and quantised checkpoints paired, decoded and refused as they should be.
#include "indim/quant.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "indim/checkpoint.hpp"
#include "indim/error.hpp"
#include "quant_util.hpp"
#include "reference.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

const DType kFormats[] = {DType::F8_E4M3,     DType::F8_E5M2, DType::F8_E4M3FNUZ,
                          DType::F8_E5M2FNUZ, DType::F8_E8M0, DType::F4};

std::string expect_bad_input(const std::function<void()>& f) {
  try {
    f();
  } catch (const BadInput& e) {
    return e.what();
  }
  ADD_FAILURE() << "no BadInput";
  return {};
}

std::vector<double> random_matrix(int64_t rows, int64_t cols, uint64_t seed, double sd = 0.02) {
  std::mt19937_64 rng(seed);
  return test::gaussian(rows, cols, sd, rng).data;
}

}  // namespace

TEST(Minifloat, EveryCodeOfEveryFormatMatchesItsDefinition) {
  for (DType t : kFormats) {
    SCOPED_TRACE(dtype_name(t));
    const int codes = t == DType::F4 ? 16 : 256;
    for (int c = 0; c < codes; ++c) {
      const double want = test::minifloat_by_formula(static_cast<unsigned>(c), t);
      const float got = minifloat_to_float(static_cast<uint8_t>(c), t);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << c;
      } else {
        EXPECT_EQ(static_cast<double>(got), want) << c;  // exact: every value fits fp32
        EXPECT_EQ(std::signbit(got), std::signbit(want)) << c;
      }
    }
  }
}

TEST(Minifloat, AnchorsFromTheSpecifications) {
  EXPECT_EQ(minifloat_to_float(0x7E, DType::F8_E4M3), 448.0f);  // E4M3 max, S.1111.110
  EXPECT_TRUE(std::isnan(minifloat_to_float(0x7F, DType::F8_E4M3)));
  EXPECT_TRUE(std::isnan(minifloat_to_float(0xFF, DType::F8_E4M3)));
  EXPECT_EQ(minifloat_to_float(0x01, DType::F8_E4M3), std::ldexp(1.0f, -9));
  EXPECT_EQ(minifloat_to_float(0x08, DType::F8_E4M3), std::ldexp(1.0f, -6));
  EXPECT_EQ(minifloat_to_float(0x7B, DType::F8_E5M2), 57344.0f);
  EXPECT_TRUE(std::isinf(minifloat_to_float(0x7C, DType::F8_E5M2)));
  EXPECT_TRUE(std::isinf(minifloat_to_float(0xFC, DType::F8_E5M2)));
  EXPECT_TRUE(std::isnan(minifloat_to_float(0x7D, DType::F8_E5M2)));
  EXPECT_EQ(minifloat_to_float(0x01, DType::F8_E5M2), std::ldexp(1.0f, -16));
  EXPECT_EQ(minifloat_to_float(0x7F, DType::F8_E4M3FNUZ), 240.0f);
  EXPECT_TRUE(std::isnan(minifloat_to_float(0x80, DType::F8_E4M3FNUZ)));
  EXPECT_EQ(minifloat_to_float(0x7F, DType::F8_E5M2FNUZ), 57344.0f);
  EXPECT_EQ(minifloat_to_float(0x7F, DType::F8_E8M0), 1.0f);
  EXPECT_EQ(minifloat_to_float(0x00, DType::F8_E8M0), std::ldexp(1.0f, -127));
  EXPECT_EQ(minifloat_to_float(0xFE, DType::F8_E8M0), std::ldexp(1.0f, 127));
  const float e2m1[] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(minifloat_to_float(static_cast<uint8_t>(c), DType::F4), e2m1[c]);
    EXPECT_EQ(minifloat_to_float(static_cast<uint8_t>(c | 8), DType::F4), -e2m1[c]);
  }
}

TEST(Minifloat, EncoderRoundsToNearestEvenAndSaturates) {
  for (DType t : kFormats) {
    SCOPED_TRACE(dtype_name(t));
    const int codes = t == DType::F4 ? 16 : 256;
    for (int c = 0; c < codes; ++c) {
      const float v = minifloat_to_float(static_cast<uint8_t>(c), t);
      if (!std::isfinite(v)) continue;
      EXPECT_EQ(minifloat_to_float(float_to_minifloat(v, t), t), v) << c;
    }
  }
  // Between 1 (0x38) and 1.125 (0x39) in E4M3: the tie goes to the even code.
  EXPECT_EQ(float_to_minifloat(1.0625f, DType::F8_E4M3), 0x38);
  EXPECT_EQ(float_to_minifloat(1.0626f, DType::F8_E4M3), 0x39);
  EXPECT_EQ(float_to_minifloat(1.1875f, DType::F8_E4M3), 0x3A);  // 1.125 / 1.25 tie: even 0x3A
  EXPECT_EQ(float_to_minifloat(1e6f, DType::F8_E4M3), 0x7E);
  EXPECT_EQ(float_to_minifloat(-1e6f, DType::F8_E4M3), 0xFE);
  EXPECT_EQ(float_to_minifloat(5.0f, DType::F4), 0x6);  // 4 / 6 tie: even (4)
  EXPECT_EQ(float_to_minifloat(7.0f, DType::F4), 0x7);
  EXPECT_EQ(float_to_minifloat(-0.25f, DType::F4), 0x0);  // ties to +0, no negative zero
}

TEST(Quantise, Fp8BlocksFollowTheProducersQuantiser) {
  const int64_t rows = 300, cols = 200;  // ragged: blocks of 128 leave 44 rows and 72 columns
  const std::vector<double> w = random_matrix(rows, cols, 1);
  const Quantised q = quantise_fp8(w, rows, cols, DType::F8_E4M3, 128, 128);
  ASSERT_EQ(q.grid_rows, 3);
  ASSERT_EQ(q.grid_cols, 2);
  const std::vector<double> s = test::f32_values(q.scales);
  for (int64_t bi = 0; bi < 3; ++bi)
    for (int64_t bj = 0; bj < 2; ++bj) {
      double amax = 0;
      for (int64_t i = bi * 128; i < std::min<int64_t>(rows, bi * 128 + 128); ++i)
        for (int64_t j = bj * 128; j < std::min<int64_t>(cols, bj * 128 + 128); ++j)
          amax = std::max(amax, std::fabs(w[i * cols + j]));
      EXPECT_FLOAT_EQ(s[bi * 2 + bj], amax / 448);
    }
  const Dense<double> back = test::dequantise_fp8(q, DType::F8_E4M3, rows, cols, 128, 128);
  for (size_t i = 0; i < w.size(); ++i)  // 3 mantissa bits: within half a step, 2^-4 relative
    EXPECT_LE(std::fabs(back.data[i] - w[i]), std::fabs(w[i]) / 16 + 448 * 1e-9) << i;
  // ue8m0 rounds each scale up to a power of two.
  const Quantised p = quantise_fp8(w, rows, cols, DType::F8_E4M3, 128, 128, true);
  for (double v : test::f32_values(p.scales)) {
    int e = 0;
    EXPECT_EQ(std::frexp(v, &e), 0.5);
  }
}

TEST(Quantise, Mxfp4SharesAnExponentPer32) {
  const int64_t rows = 4, cols = 64;
  const std::vector<double> w = random_matrix(rows, cols, 2, 1.0);
  const Quantised q = quantise_mxfp4(w, rows, cols);
  ASSERT_EQ(q.codes.size(), 128u);
  ASSERT_EQ(q.scales.size(), 8u);
  const Dense<double> back = test::dequantise_mxfp4(q, rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t b = 0; b < 2; ++b) {
      double amax = 0;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(w[i * cols + b * 32 + k]));
      const int e = static_cast<int>(std::floor(std::log2(amax))) - 2;
      EXPECT_EQ(q.scales[i * 2 + b], e + 127);
      // Rounding costs at most a unit of the scale (E2M1 steps are at most 2 apart), the
      // saturation at 6 of values up to amax < 8 scale units at most 2 (as OCP MX specifies).
      for (int k = 0; k < 32; ++k)
        EXPECT_LE(std::fabs(back.at(i, b * 32 + k) - w[i * cols + b * 32 + k]), std::ldexp(2.0, e));
    }
}

TEST(QuantCheckpoint, BlockScaledFp8PairsAndDecodesExactly) {
  test::TempDir dir;
  const int64_t rows = 300, cols = 200;
  const std::vector<double> w = random_matrix(rows, cols, 3);
  const Quantised q = quantise_fp8(w, rows, cols, DType::F8_E4M3, 128, 128);
  write_safetensors(
      dir / "model.safetensors",
      test::fp8_tensors("model.layers.0.mlp.down_proj.weight", q, DType::F8_E4M3, rows, cols));
  test::write_text(dir / "config.json",
                   R"({"model_type":"deepseek_v3","quantization_config":{"quant_method":"fp8",)"
                   R"("fmt":"e4m3","activation_scheme":"dynamic","weight_block_size":[128,128]}})");
  const Checkpoint c = Checkpoint::open(dir.str());
  ASSERT_EQ(c.tensors().size(), 1u);  // the scale is set aside
  EXPECT_EQ(c.scale_tensors().size(), 1u);
  const TensorRef& r = c.tensors().begin()->second;
  ASSERT_NE(r.quant, nullptr);
  EXPECT_EQ(r.quant->format, QuantFormat::Fp8Block);
  EXPECT_EQ(r.quant->describe(),
            "fp8-block 128x128, scale model.layers.0.mlp.down_proj.weight_scale_inv F32 [3, 2]");
  std::vector<double> got;
  decode_quantised(r.file->data(*r.info), r.info->dtype, rows, cols,
                   r.quant->scales_for(-1, rows, cols), false, "w", got);
  const Dense<double> want = test::dequantise_fp8(q, DType::F8_E4M3, rows, cols, 128, 128);
  EXPECT_EQ(got, want.data);  // bit-exact in fp64
  std::vector<double> t;
  decode_quantised(r.file->data(*r.info), r.info->dtype, rows, cols,
                   r.quant->scales_for(-1, rows, cols), true, "w", t);
  EXPECT_EQ(t, test::transpose(want).data);
}

TEST(QuantCheckpoint, CompressedTensorsChannelAndTensorScales) {
  test::TempDir dir;
  const int64_t rows = 64, cols = 48;
  const std::vector<double> w = random_matrix(rows, cols, 4);
  const Quantised ch = quantise_fp8(w, rows, cols, DType::F8_E4M3, 1, cols);
  const Quantised all = quantise_fp8(w, rows, cols, DType::F8_E4M3, rows, cols);
  std::vector<TensorData> t = test::fp8_tensors("model.layers.0.a.weight", ch, DType::F8_E4M3, rows,
                                                cols, "_scale", {64, 1});
  for (auto& x :
       test::fp8_tensors("model.layers.0.b.weight", all, DType::F8_E4M3, rows, cols, "_scale", {1}))
    t.push_back(x);
  t.push_back({"model.layers.0.b.input_scale", DType::F32, {1}, encode_floats({1.0f}, DType::F32)});
  write_safetensors(dir / "model.safetensors", t);
  const Checkpoint c = Checkpoint::open(dir / "model.safetensors");
  ASSERT_EQ(c.tensors().size(), 2u);
  EXPECT_EQ(c.scale_tensors().size(), 3u);
  const TensorRef& a = *c.find("model.layers.0.a.weight");
  const TensorRef& b = *c.find("model.layers.0.b.weight");
  EXPECT_EQ(a.quant->format, QuantFormat::Fp8Channel);
  EXPECT_EQ(b.quant->format, QuantFormat::Fp8Tensor);
  std::vector<double> ga, gb;
  decode_quantised(a.file->data(*a.info), DType::F8_E4M3, rows, cols,
                   a.quant->scales_for(-1, rows, cols), false, "a", ga);
  decode_quantised(b.file->data(*b.info), DType::F8_E4M3, rows, cols,
                   b.quant->scales_for(-1, rows, cols), false, "b", gb);
  EXPECT_EQ(ga, test::dequantise_fp8(ch, DType::F8_E4M3, rows, cols, 1, cols).data);
  EXPECT_EQ(gb, test::dequantise_fp8(all, DType::F8_E4M3, rows, cols, rows, cols).data);
}

TEST(QuantCheckpoint, Mxfp4ExpertsBecomeOneLogicalStack) {
  test::TempDir dir;
  const int64_t experts = 3, rows = 8, cols = 64;
  std::vector<uint8_t> blocks, scales;
  std::vector<Quantised> q;
  for (int64_t e = 0; e < experts; ++e) {
    q.push_back(quantise_mxfp4(random_matrix(rows, cols, 10 + e, 0.5), rows, cols));
    blocks.insert(blocks.end(), q.back().codes.begin(), q.back().codes.end());
    scales.insert(scales.end(), q.back().scales.begin(), q.back().scales.end());
  }
  const std::string n = "model.layers.0.mlp.experts.down_proj";
  write_safetensors(dir / "model.safetensors", {{n + "_blocks", DType::U8, {3, 8, 2, 16}, blocks},
                                                {n + "_scales", DType::U8, {3, 8, 2}, scales}});
  const Checkpoint c = Checkpoint::open(dir / "model.safetensors");
  ASSERT_EQ(c.tensors().size(), 1u);
  const TensorRef& r = *c.find(n);
  EXPECT_EQ(r.info->dtype, DType::F4);
  EXPECT_EQ(r.info->shape, (std::vector<uint64_t>{3, 8, 64}));
  ASSERT_EQ(r.quant->format, QuantFormat::Mxfp4);
  for (int64_t e = 0; e < experts; ++e) {
    std::vector<float> got;
    decode_quantised(r.file->data(*r.info) + e * rows * cols / 2, DType::F4, rows, cols,
                     r.quant->scales_for(e, rows, cols), false, "x", got);
    const Dense<double> want = test::dequantise_mxfp4(q[e], rows, cols);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want.data[i]) << e << " " << i;
  }
}

TEST(QuantCheckpoint, ScaleProblemsNameWeightAndScale) {
  test::TempDir dir;
  const int64_t rows = 256, cols = 256;
  const Quantised q =
      quantise_fp8(random_matrix(rows, cols, 5), rows, cols, DType::F8_E4M3, 128, 128);
  // A scale grid of the wrong shape.
  auto t = test::fp8_tensors("model.layers.0.q.weight", q, DType::F8_E4M3, rows, cols, "_scale_inv",
                             {3, 2});
  t[1].bytes.resize(24);
  // A weight without its scale, in a checkpoint whose other weights have theirs.
  t.push_back({"model.layers.0.k.weight", DType::F8_E4M3, {256, 256}, q.codes});
  write_safetensors(dir / "model.safetensors", t);
  const Checkpoint c = Checkpoint::open(dir / "model.safetensors");
  const QuantRef& bad_shape = *c.find("model.layers.0.q.weight")->quant;
  EXPECT_EQ(bad_shape.format, QuantFormat::NoScale);
  EXPECT_TRUE(bad_shape.malformed);
  EXPECT_NE(bad_shape.problem.find("'model.layers.0.q.weight'"), std::string::npos);
  EXPECT_NE(bad_shape.problem.find("'model.layers.0.q.weight_scale_inv' F32 [3, 2]"),
            std::string::npos)
      << bad_shape.problem;
  const QuantRef& missing = *c.find("model.layers.0.k.weight")->quant;
  EXPECT_TRUE(missing.malformed);
  EXPECT_NE(missing.problem.find("'model.layers.0.k.weight_scale_inv'"), std::string::npos);
  EXPECT_NE(missing.problem.find("is missing"), std::string::npos);
}

TEST(QuantCheckpoint, CodesWithoutAnyScaleConventionAreRefused) {
  test::TempDir dir;
  write_safetensors(
      dir / "model.safetensors",
      {{"model.layers.0.q.weight", DType::F8_E5M2, {4, 4}, std::vector<uint8_t>(16)}});
  const Checkpoint c = Checkpoint::open(dir / "model.safetensors");
  const QuantRef& q = *c.find("model.layers.0.q.weight")->quant;
  EXPECT_EQ(q.format, QuantFormat::NoScale);
  EXPECT_FALSE(q.malformed);
  EXPECT_NE(q.problem.find("no scale convention"), std::string::npos) << q.problem;
}

TEST(QuantCheckpoint, BadCodesAndScalesAreBadInput) {
  const int64_t rows = 4, cols = 4;
  std::vector<uint8_t> codes(16, 0x38);
  float one = 1.0f, neg = -2.0f, third = 0.3f;
  QuantScales s;
  s.data = reinterpret_cast<const uint8_t*>(&one);
  s.block_rows = 4, s.block_cols = 4;
  s.label = "f: tensor 'w_scale_inv'";
  std::vector<double> out;
  codes[6] = 0x7F;  // E4M3 NaN
  std::string m = expect_bad_input(
      [&] { decode_quantised(codes.data(), DType::F8_E4M3, rows, cols, s, false, "f: w", out); });
  EXPECT_NE(m.find("f: w holds a non-finite value at [1, 2]"), std::string::npos) << m;
  codes[6] = 0x38;
  s.data = reinterpret_cast<const uint8_t*>(&neg);
  m = expect_bad_input(
      [&] { decode_quantised(codes.data(), DType::F8_E4M3, rows, cols, s, false, "f: w", out); });
  EXPECT_NE(m.find("'w_scale_inv' holds the scale -2"), std::string::npos) << m;
  s.data = reinterpret_cast<const uint8_t*>(&third);
  s.pow2 = true;
  m = expect_bad_input(
      [&] { decode_quantised(codes.data(), DType::F8_E4M3, rows, cols, s, false, "f: w", out); });
  EXPECT_NE(m.find("not a power of two"), std::string::npos) << m;
}
