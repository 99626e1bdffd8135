// The CUDA backend against the CPU backend (label gpu). Every test skips when no CUDA device
// is usable, so the suite passes on machines without a GPU and runs in full on one.
#include "cuda/cuda_backend.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <random>
#include <thread>
#include <tuple>

#include "cuda/check.hpp"
#include "cuda/kernels.cuh"
#include "gpu_util.hpp"
#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/error.hpp"
#include "lowrank_products_check.hpp"
#include "reference.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

struct Shape {
  int64_t out, in;
};

enum class Kind { Random, Clustered, RankDeficient };

// Test matrices: a decaying spectrum, a clustered top (gaps of 0.1%), or rank r/2.
Dense<double> make(Shape s, Kind kind, std::mt19937_64& rng) {
  const int64_t r = std::min(s.out, s.in);
  std::vector<double> sig(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) {
    sig[i] = std::pow(double(i + 1), -0.6);
    if (kind == Kind::Clustered && i < 12) sig[i] = 1.0 - 0.001 * i;
    if (kind == Kind::RankDeficient && i >= r / 2) sig[i] = 0.0;
  }
  return compose_svd(random_orthonormal(s.out, r, rng), sig, random_orthonormal(s.in, r, rng));
}

Decomposition run(Backend& b, const Dense<double>& w, Side side, int64_t keep) {
  if (b.precision() == Precision::F32) return b.decompose(test::cast<float>(w), side, keep, "t");
  return b.decompose(test::cast<double>(w), side, keep, "t");
}

// The first n columns of a vector set: the well-posed part of a rank-deficient base (its
// remaining columns span the null space, which every algorithm fills its own way).
Vectors first_columns(const Vectors& v, int64_t n) {
  Vectors o = Vectors::zeros(v.precision(), v.dim, std::min(n, v.count));
  std::visit(
      [&](auto& out) {
        using T = typename std::decay_t<decltype(out)>::value_type;
        for (int64_t i = 0; i < v.dim; ++i)
          for (int64_t j = 0; j < o.count; ++j)
            out[i * o.count + j] = v.values<T>()[i * v.count + j];
      },
      o.data);
  return o;
}

using Case = std::tuple<Shape, Kind, std::string, Precision>;

class CudaVsCpu : public ::testing::TestWithParam<Case> {};

std::string case_name(const Case& c) {
  const Shape s = std::get<0>(c);
  const char* kinds[] = {"random", "clustered", "rankdef"};
  return std::to_string(s.out) + "x" + std::to_string(s.in) + "_" +
         kinds[static_cast<int>(std::get<1>(c))] + "_" + std::get<2>(c) + "_" +
         precision_name(std::get<3>(c));
}

}  // namespace

TEST_P(CudaVsCpu, SameMaxcosAndSigma) {
  REQUIRE_GPU();
  const auto [shape, kind, algo, precision] = GetParam();
  std::mt19937_64 rng(shape.out * 31 + shape.in);
  Dense<double> w0 = make(shape, kind, rng);
  Dense<double> w = w0;
  Dense<double> upd = compose_svd(random_orthonormal(shape.out, 3, rng), {0.8, 0.6, 0.4},
                                  random_orthonormal(shape.in, 3, rng));
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += upd.data[i];
  auto cpu = make_cpu_backend(Precision::F64);
  auto gpu = make_cuda_backend(precision, algo, 0);
  for (Side side : {Side::Left, Side::Right}) {
    Decomposition cb = run(*cpu, w0, side, 0), ct = run(*cpu, w, side, 10);
    Decomposition gb = run(*gpu, w0, side, 0), gt = run(*gpu, w, side, 10);
    ASSERT_EQ(gb.sigma.size(), cb.sigma.size());
    for (size_t i = 0; i < 10 && i < cb.sigma.size(); ++i)
      EXPECT_NEAR(gt.sigma[i], ct.sigma[i], 1e-5 * ct.sigma[0]) << i;
    // The null space of a rank-deficient base is filled differently by each method, so a max
    // over it is not comparable: both sides compare against the first `rank` base vectors only
    // (a max over the null space would fail a correct backend most of the time). Vectors of
    // clustered singular values are ill-defined under any method: not compared.
    const int64_t rank = kind == Kind::RankDeficient ? std::min(shape.out, shape.in) / 2
                                                     : std::min(shape.out, shape.in);
    Similarity cs = cpu->compare(side == Side::Left ? ct.left : ct.right,
                                 first_columns(side == Side::Left ? cb.left : cb.right, rank), 10);
    Similarity gs = gpu->compare(side == Side::Left ? gt.left : gt.right,
                                 first_columns(side == Side::Left ? gb.left : gb.right, rank), 10);
    ASSERT_EQ(gs.maxcos.size(), cs.maxcos.size());
    const double tol = precision == Precision::F32 ? 1e-4 : 1e-8;
    for (size_t j = 0; j < cs.maxcos.size(); ++j) {
      if (kind == Kind::Clustered) continue;
      EXPECT_NEAR(gs.maxcos[j], cs.maxcos[j], tol) << side_name(side) << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Gpu, CudaVsCpu,
    ::testing::Combine(::testing::Values(Shape{96, 96}, Shape{200, 72}, Shape{72, 200},
                                         Shape{97, 131}),
                       ::testing::Values(Kind::Random, Kind::Clustered, Kind::RankDeficient),
                       ::testing::Values(std::string("gram64"), std::string("gesvd"),
                                         std::string("gesvdp"), std::string("gesvdj")),
                       ::testing::Values(Precision::F32, Precision::F64)),
    [](const auto& info) { return case_name(info.param); });

TEST(CudaKernels, SimilarityAgainstLoopsWithPoisonedOutputs) {
  REQUIRE_GPU();
  std::mt19937_64 rng(5);
  std::normal_distribution<double> g;
  const int64_t d = 77, ky = 21, k = 19, nb = 300, head_cols = 50;  // k > 16: two passes
  std::vector<float> y(d * ky), x(d * nb);
  for (auto& v : y) v = static_cast<float>(g(rng));
  for (auto& v : x) v = static_cast<float>(g(rng));
  x[5 * nb + 299] = 40.0f;  // a clear winner in the last, partly filled block
  float *dy, *dx, *dhead;
  double* dmax;
  int64_t* darg;
  void* scratch;
  ASSERT_EQ(cudaMalloc(&dy, y.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dhead, k * head_cols * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dmax, k * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&darg, k * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&scratch, cuda::similarity_scratch(k, nb)), cudaSuccess);
  cudaMemset(dhead, 0xFF, k * head_cols * 4);  // NaN everywhere: every value must be written
  cudaMemset(dmax, 0xFF, k * 8);
  cudaMemset(darg, 0xFF, k * 8);
  cudaMemset(scratch, 0xFF, cuda::similarity_scratch(k, nb));
  cudaMemcpy(dy, y.data(), y.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cuda::similarity<float>(dy, ky, dx, nb, d, k, dmax, darg, dhead, head_cols, scratch, nullptr);
  std::vector<double> maxcos(k);
  std::vector<int64_t> argmax(k);
  std::vector<float> head(k * head_cols);
  cudaMemcpy(maxcos.data(), dmax, k * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(argmax.data(), darg, k * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(head.data(), dhead, head.size() * 4, cudaMemcpyDeviceToHost);
  for (void* p : {(void*)dy, (void*)dx, (void*)dhead, (void*)dmax, (void*)darg, scratch})
    cudaFree(p);
  for (int64_t j = 0; j < k; ++j) {
    double best = -1;
    int64_t arg = 0;
    for (int64_t i = 0; i < nb; ++i) {
      double s = 0;
      for (int64_t r = 0; r < d; ++r) s += double(y[r * ky + j]) * double(x[r * nb + i]);
      if (i < head_cols) EXPECT_NEAR(head[j * head_cols + i], std::fabs(s), 1e-3) << j << " " << i;
      if (std::fabs(s) > best) best = std::fabs(s), arg = i;
    }
    EXPECT_NEAR(maxcos[j], best, 1e-3 * best) << j;
    EXPECT_EQ(argmax[j], arg) << j;
  }
}

TEST(CudaKernels, StoredBytesConvertOnTheDevice) {
  REQUIRE_GPU();
  const int64_t rows = 5, cols = 7;
  std::vector<float> vals(rows * cols);
  for (size_t i = 0; i < vals.size(); ++i) vals[i] = 0.37f * static_cast<float>(i) - 3.1f;
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16})
    for (bool transpose : {false, true}) {
      std::vector<uint8_t> bytes = encode_floats(vals, dt);
      std::vector<double> expect(vals.size());
      convert_elements(bytes.data(), dt, vals.size(), expect.data());
      void* src;
      double* dst;
      unsigned long long* bad;
      ASSERT_EQ(cudaMalloc(&src, bytes.size()), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&dst, vals.size() * 8), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&bad, 8), cudaSuccess);
      cudaMemset(dst, 0xFF, vals.size() * 8);
      cudaMemcpy(src, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
      const cuda::StoredType type = dt == DType::F32   ? cuda::StoredType::F32
                                    : dt == DType::F64 ? cuda::StoredType::F64
                                    : dt == DType::F16 ? cuda::StoredType::F16
                                                       : cuda::StoredType::BF16;
      cuda::convert_stored<double>(src, type, rows, cols, transpose, dst, bad, nullptr);
      std::vector<double> got(vals.size());
      unsigned long long first = 0;
      cudaMemcpy(got.data(), dst, got.size() * 8, cudaMemcpyDeviceToHost);
      cudaMemcpy(&first, bad, 8, cudaMemcpyDeviceToHost);
      EXPECT_EQ(first, ~0ull);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          EXPECT_EQ(transpose ? got[j * rows + i] : got[i * cols + j], expect[i * cols + j])
              << dtype_name(dt) << " " << i << "," << j;
      // A NaN reports its stored index.
      std::vector<float> with_nan = vals;
      with_nan[2 * cols + 3] = std::nanf("");
      bytes = encode_floats(with_nan, dt);
      cudaMemcpy(src, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
      cuda::convert_stored<double>(src, type, rows, cols, transpose, dst, bad, nullptr);
      cudaMemcpy(&first, bad, 8, cudaMemcpyDeviceToHost);
      EXPECT_EQ(first, static_cast<unsigned long long>(2 * cols + 3)) << dtype_name(dt);
      cudaFree(src), cudaFree(dst), cudaFree(bad);
    }
}

TEST(CudaPipeline, SameCountsAsCpuOnTheDemo) {
  REQUIRE_GPU();
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 96, d.intermediate = 256, d.kv_dim = 48, d.layers = 2, d.vocab = 64;
  DemoPaths p = generate_demo(dir.str(), d);
  for (Precision prec : {Precision::F32, Precision::F64}) {
    AnalyzeOptions o;
    o.base = p.base;
    o.tuned = {p.full, p.lora, p.lora_adapter};
    o.precision = prec;
    o.backend = "cpu";
    o.out_dir = dir / "cpu";
    AnalyzeResult cpu = analyze(o);
    o.backend = "cuda";
    // One stream, then two matrices in flight on two streams (inputs staged ahead either way).
    for (int streams : {1, 2}) {
      o.streams = streams;
      o.out_dir = dir / ("cuda" + std::to_string(streams));
      AnalyzeResult gpu = analyze(o);
      EXPECT_EQ(gpu.backend, "cuda");
      ASSERT_EQ(cpu.records.size(), gpu.records.size());
      const double tol = prec == Precision::F32 ? 1e-4 : 1e-8;
      for (size_t i = 0; i < cpu.records.size(); ++i) {
        const auto &c = cpu.records[i], &g = gpu.records[i];
        ASSERT_EQ(c.name, g.name);
        // The adapter's matrices take the low-rank route on either backend, or on neither.
        EXPECT_EQ(g.route.rfind("lowrank/", 0) == 0, c.route.rfind("lowrank/", 0) == 0)
            << c.name << ": cpu " << c.route << ", cuda " << g.route;
        bool near_edge = false;
        for (int j = 0; j < c.k; ++j) {
          EXPECT_NEAR(g.maxcos[j], c.maxcos[j], tol)
              << c.name << " " << j << " streams " << streams;
          for (double e : cpu.eps) near_edge |= std::fabs(c.maxcos[j] - e) < 1e-4;
        }
        if (!near_edge) EXPECT_EQ(g.counts, c.counts) << c.name << " streams " << streams;
      }
    }
  }
}

TEST(CudaPipeline, MergesOnTheDeviceLikeTheHost) {
  REQUIRE_GPU();
  // GPT-2 Conv1D weights with a DoRA adapter: the transposed merge, the rescaling by columns
  // and the transpose for the analysis all run on the device.
  test::TempDir dir;
  std::mt19937_64 rng(21);
  std::normal_distribution<double> g(0.0, 0.3);
  auto f32 = [](const std::string& name, std::vector<uint64_t> shape, const Dense<double>& m) {
    std::vector<float> v(m.data.begin(), m.data.end());
    return TensorData{name, DType::F32, shape, encode_floats(v, DType::F32)};
  };
  auto gauss = [&](int64_t r, int64_t c) {
    Dense<double> m{r, c, std::vector<double>(static_cast<size_t>(r * c))};
    for (auto& x : m.data) x = g(rng);
    return m;
  };
  std::filesystem::create_directories(dir / "gpt2");
  std::filesystem::create_directories(dir / "ad");
  write_safetensors(dir / "gpt2/model.safetensors",
                    {f32("h.0.attn.c_attn.weight", {48, 144}, random_weight(48, 144, 1.0, rng)),
                     f32("h.0.mlp.c_fc.weight", {48, 96}, random_weight(48, 96, 1.0, rng))});
  test::write_text(dir / "gpt2/config.json", R"({"model_type":"gpt2","n_head":4})");
  Dense<double> mag1 = gauss(144, 1), mag2 = gauss(96, 1);
  for (auto& x : mag1.data) x = std::fabs(x) + 0.5;
  for (auto& x : mag2.data) x = std::fabs(x) + 0.5;
  const std::string p = "base_model.model.h.0.";
  write_safetensors(dir / "ad/adapter_model.safetensors",
                    {f32(p + "attn.c_attn.lora_A.weight", {4, 48}, gauss(4, 48)),
                     f32(p + "attn.c_attn.lora_B.weight", {144, 4}, gauss(144, 4)),
                     f32(p + "attn.c_attn.lora_magnitude_vector", {144}, mag1),
                     f32(p + "mlp.c_fc.lora_A.weight", {4, 48}, gauss(4, 48)),
                     f32(p + "mlp.c_fc.lora_B.weight", {96, 4}, gauss(96, 4)),
                     f32(p + "mlp.c_fc.lora_magnitude_vector", {96}, mag2)});
  test::write_text(dir / "ad/adapter_config.json",
                   R"({"peft_type":"LORA","r":4,"lora_alpha":8,"use_dora":true})");
  for (Precision prec : {Precision::F32, Precision::F64}) {
    AnalyzeOptions o;
    o.base = dir / "gpt2";
    o.tuned = {dir / "ad"};
    o.precision = prec;
    o.backend = "cpu";
    o.out_dir = dir / "cpu";
    AnalyzeResult cpu = analyze(o);
    o.backend = "cuda";
    o.out_dir = dir / "cuda";
    AnalyzeResult gpu = analyze(o);
    ASSERT_EQ(cpu.records.size(), 2u);
    ASSERT_EQ(gpu.records.size(), 2u);
    for (size_t i = 0; i < 2; ++i)
      for (int j = 0; j < cpu.records[i].k; ++j)
        EXPECT_NEAR(gpu.records[i].maxcos[j], cpu.records[i].maxcos[j],
                    prec == Precision::F32 ? 1e-4 : 1e-8)
            << cpu.records[i].name << " " << j;
  }
}

TEST(CudaBackend, NoDeviceIsAClearError) {
  if (test::have_gpu()) GTEST_SKIP() << "a device is present";
  try {
    make_cuda_backend(Precision::F32, "gram64", 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no usable CUDA device"), std::string::npos) << e.what();
  }
}

TEST(CudaStaging, StagedInputsDecomposeLikeDirectUploads) {
  REQUIRE_GPU();
  // Three bf16 matrices in two plan entries, staged ahead by one backend and uploaded directly
  // by another: the same singular values and vectors, and the staged copies really used.
  std::mt19937_64 rng(9);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 200}, {200, 300}, {128, 128}};
  std::vector<std::vector<uint8_t>> stored;
  for (const auto& [r, c] : shapes) {
    const Dense<double> w = random_weight(r, c, 1.0, rng);
    stored.push_back(encode_floats(std::vector<float>(w.data.begin(), w.data.end()), DType::BF16));
  }
  auto range = [&](size_t i) { return ByteRange{stored[i].data(), stored[i].size()}; };
  auto direct = make_cuda_backend(Precision::F32, "gram64", 0);
  auto staged = make_cuda_backend(Precision::F32, "gram64", 0);
  staged->stream_inputs({{range(0), range(1)}, {range(2)}});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the loader get ahead
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto [r, c] = shapes[i];
    const Decomposition a =
        direct->decompose_stored(stored[i].data(), DType::BF16, r, c, false, Side::Left, 10, "t");
    const Decomposition b =
        staged->decompose_stored(stored[i].data(), DType::BF16, r, c, false, Side::Left, 10, "t");
    ASSERT_EQ(a.sigma.size(), b.sigma.size());
    for (size_t j = 0; j < a.sigma.size(); ++j) EXPECT_NEAR(a.sigma[j], b.sigma[j], 1e-9) << i;
    for (int64_t j = 0; j < 10; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < r; ++k) dot += a.left.at(k, j) * b.left.at(k, j);
      EXPECT_NEAR(std::fabs(dot), 1.0, 1e-6) << i << " " << j;
    }
    if (i == 1) staged->release_inputs(0);
  }
  staged->release_inputs(1);
  EXPECT_NE(staged->staging_summary().find(": 3 inputs found staged"), std::string::npos)
      << staged->staging_summary();
  EXPECT_EQ(direct->staging_summary(), "");
}

TEST(CudaGram64, TopKByIterationMatchesTheCpu) {
  REQUIRE_GPU();
  // Grams of 300 and more: the tuned side's top 10 by subspace iteration on the device, against
  // the CPU's fp64 gesdd (decaying spectrum plus a LoRA-like update; tall and wide).
  for (const auto [out, in] : {std::pair<int64_t, int64_t>{420, 300}, {300, 700}}) {
    std::mt19937_64 rng(out + in);
    Dense<double> w = random_weight(out, in, 1.0, rng);
    const Dense<double> upd = compose_svd(random_orthonormal(out, 3, rng), {0.8, 0.6, 0.4},
                                          random_orthonormal(in, 3, rng));
    for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += upd.data[i];
    auto gpu = make_cuda_backend(Precision::F64, "gram64", 0);
    auto cpu = make_cpu_backend(Precision::F64, "gesdd");
    const Decomposition g = run(*gpu, w, Side::Both, 10), c = run(*cpu, w, Side::Both, 0);
    ASSERT_EQ(g.sigma.size(), 50u) << "the iterative route keeps the 50 leading values";
    for (size_t j = 0; j < 50; ++j)
      EXPECT_NEAR(g.sigma[j], c.sigma[j], (j < 10 ? 1e-10 : 1e-3) * c.sigma[0]) << j;
    for (int64_t j = 0; j < 10; ++j) {
      double left = 0, right = 0;
      for (int64_t i = 0; i < out; ++i) left += g.left.at(i, j) * c.left.at(i, j);
      for (int64_t i = 0; i < in; ++i) right += g.right.at(i, j) * c.right.at(i, j);
      EXPECT_NEAR(std::fabs(left), 1.0, 1e-10) << out << "x" << in << " " << j;
      EXPECT_NEAR(std::fabs(right), 1.0, 1e-10) << out << "x" << in << " " << j;
    }
  }
}

TEST(CudaLowRank, DeviceProductsMatchLoops) {
  REQUIRE_GPU();
  // The route's products on the device (cuda/lowrank_products.cpp): W0 from bf16 bytes stored
  // [300, 170], as stored and as a Conv1D's transpose, and U0 of either side in the backend's
  // precision, against plain loops.
  for (bool conv1d : {false, true}) {
    std::mt19937_64 rng(conv1d ? 21 : 22);
    const test::StoredBase s = test::stored_bf16(300, 170, conv1d, rng);
    LowRankUpdate up;
    up.a = test::gaussian(4, s.analysed.cols, 0.1, rng);
    up.b = test::gaussian(s.analysed.rows, 4, 0.1, rng);
    LowRankProblem pr;
    pr.base_bytes = s.bytes.data();
    pr.dtype = DType::BF16;
    pr.rows = 300, pr.cols = 170;
    pr.conv1d = conv1d;
    pr.update = &up;
    pr.base_label = "base";
    for (Precision prec : {Precision::F32, Precision::F64}) {
      auto gpu = make_cuda_backend(prec, "gram64", 0);
      const std::unique_ptr<detail::LowRankProducts> p = gpu->lowrank_products(pr);
      ASSERT_EQ(p->rows(), s.analysed.rows);
      ASSERT_EQ(p->cols(), s.analysed.cols);
      for (int64_t dim : {s.analysed.rows, s.analysed.cols}) {
        Vectors v = Vectors::zeros(prec, dim, 170);
        std::normal_distribution<double> g;
        std::visit(
            [&](auto& x) {
              for (auto& e : x) e = static_cast<float>(g(rng));
            },
            v.data);
        EXPECT_LT(test::products_error(*p, s.analysed, v, 7, rng), 1e-13)
            << "conv1d " << conv1d << ", " << precision_name(prec) << ", dimension " << dim;
      }
    }
  }
}

TEST(CudaLowRank, RouteOnTheCudaBackendMatchesTheCpuFullRoute) {
  REQUIRE_GPU();
  // A LoRA of rank 16 on a decaying base, tall and wide, both sides: the low-rank route as the
  // CUDA backend runs it, from the CUDA backend's own base decomposition, against the CPU's
  // fp64 full route on the merged matrix.
  for (const auto [out, in] : {std::pair<int64_t, int64_t>{480, 300}, {300, 480}}) {
    std::mt19937_64 rng(out * 5 + in);
    const Dense<double> w0 = random_weight(out, in, 1.0, rng);
    LowRankUpdate up;
    up.a = compose_svd(random_orthonormal(16, 16, rng), std::vector<double>(16, 1.0),
                       random_orthonormal(in, 16, rng));
    std::vector<double> strength(16);
    for (size_t j = 0; j < strength.size(); ++j) strength[j] = 0.3 * std::pow(0.8, double(j));
    up.b = compose_svd(random_orthonormal(out, 16, rng), strength, random_orthonormal(16, 16, rng));
    up.scale = 2.0;
    Dense<double> w = w0;
    apply_update(w, up, "merged");
    auto cpu = make_cpu_backend(Precision::F64, "gesdd");
    for (Precision prec : {Precision::F32, Precision::F64}) {
      auto gpu = make_cuda_backend(prec, "gram64", 0);
      const Decomposition base = run(*gpu, w0, Side::Both, 0);
      const std::vector<double> w0_bytes = w0.data;
      LowRankProblem pr;
      pr.base_bytes = w0_bytes.data();
      pr.dtype = DType::F64;
      pr.rows = out, pr.cols = in;
      pr.update = &up;
      pr.base = &base;
      pr.side = Side::Both;
      pr.keep = 10;
      pr.base_label = "base", pr.label = "adapter";
      std::string why;
      const std::optional<Decomposition> low = gpu->decompose_lowrank(pr, &why);
      ASSERT_TRUE(low.has_value()) << why;
      EXPECT_EQ(low->route.rfind("lowrank/", 0), 0u) << low->route;
      const Decomposition ref = run(*cpu, w, Side::Both, 0);
      const double tol = prec == Precision::F32 ? 1e-5 : 1e-9;
      for (int64_t j = 0; j < 10; ++j) {
        EXPECT_NEAR(low->sigma[j], ref.sigma[j], tol * ref.sigma[0]) << j;
        double left = 0, right = 0;
        for (int64_t i = 0; i < out; ++i) left += low->left.at(i, j) * ref.left.at(i, j);
        for (int64_t i = 0; i < in; ++i) right += low->right.at(i, j) * ref.right.at(i, j);
        EXPECT_NEAR(std::fabs(left), 1.0, tol) << out << "x" << in << " " << j;
        EXPECT_NEAR(std::fabs(right), 1.0, tol) << out << "x" << in << " " << j;
      }
    }
  }
}

namespace {

// The device's free memory now, after everything queued on it has finished.
size_t device_free() {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  size_t free_bytes = 0, total = 0;
  EXPECT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  return free_bytes;
}

uint64_t default_pool_reserved() {
  cudaMemPool_t pool = nullptr;
  uint64_t reserved = 0;
  EXPECT_EQ(cudaDeviceGetDefaultMemPool(&pool, 0), cudaSuccess);
  EXPECT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved),
            cudaSuccess);
  return reserved;
}

// A full fine-tune's unit on `b`: base and tuned decomposed and compared, the base vectors
// carrying an id as a run gives them.
Similarity one_unit(Backend& b, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Dense<double> w0 = random_weight(n, n, 1.0, rng);
  Dense<double> w = w0;
  const Dense<double> upd =
      compose_svd(random_orthonormal(n, 3, rng), {0.8, 0.6, 0.4}, random_orthonormal(n, 3, rng));
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += upd.data[i];
  Decomposition base = run(b, w0, Side::Left, 0);
  base.left.id = new_vectors_id();
  const Decomposition tuned = run(b, w, Side::Left, 10);
  return b.compare(tuned.left, base.left, 10, 8);
}

}  // namespace

TEST(CudaMemory, AFinishedRunGivesItsDeviceMemoryBack) {
  REQUIRE_GPU();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  // Once with the loop's configuration, for what the process keeps after a first run: the
  // kernels it loaded (lazily) and the context's local-memory reservation.
  one_unit(*make_cuda_backend(Precision::F64, "gram64", 0), 2048, 1);
  const size_t before = device_free();
  const uint64_t reserved = default_pool_reserved();
  for (int run = 0; run < 3; ++run) {
    auto b = make_cuda_backend(Precision::F64, "gram64", 0);
    one_unit(*b, 2048, 2 + run);
  }
  EXPECT_GE(device_free() + (64ull << 20), before)
      << "the runs' pool kept its peak: the next run's budget and PyTorch beside it would shrink";
  EXPECT_EQ(default_pool_reserved(), reserved) << "indim allocated from the device's default pool";
}

TEST(CudaErrors, AFailedCallDoesNotFailTheNextJobOnTheThread) {
  REQUIRE_GPU();
  auto b = make_cuda_backend(Precision::F32, "gram64", 0);
  void* p = nullptr;
  EXPECT_THROW(INDIM_CUDA_CHECK(cudaMalloc(&p, size_t(1) << 60)), CudaError);  // out of memory
  const Similarity s = one_unit(*b, 256, 9);
  EXPECT_EQ(s.maxcos.size(), 10u);
}

TEST(CudaCompare, ABaseKeptOnTheDeviceGivesTheSameAnswersAndIsUploadedOnce) {
  REQUIRE_GPU();
  // Three tuned checkpoints against one base whose left and right vectors have ids, alternating
  // sides as --side both does: each side uploaded once, then reused; then the same values
  // without ids (uploaded each time): identical results throughout.
  for (Precision prec : {Precision::F32, Precision::F64}) {
    auto b = make_cuda_backend(prec, "gram64", 0);
    auto* cuda = dynamic_cast<cuda::CudaBackend*>(b.get());
    ASSERT_NE(cuda, nullptr);
    std::mt19937_64 rng(17);
    const Dense<double> w0 = random_weight(300, 200, 1.0, rng);
    Decomposition base = run(*b, w0, Side::Both, 0);
    base.left.id = new_vectors_id(), base.right.id = new_vectors_id();
    std::vector<Decomposition> tuned;
    for (int t = 0; t < 3; ++t) {
      Dense<double> w = w0;
      const Dense<double> upd =
          compose_svd(random_orthonormal(300, 2, rng), {0.9, 0.5}, random_orthonormal(200, 2, rng));
      for (size_t i = 0; i < w.data.size(); ++i) w.data[i] += upd.data[i];
      tuned.push_back(run(*b, w, Side::Both, 10));
    }
    std::vector<Similarity> kept;
    for (const Decomposition& t : tuned) {
      kept.push_back(b->compare(t.left, base.left, 10, 5));
      kept.push_back(b->compare(t.right, base.right, 10, 5));
    }
    EXPECT_EQ(cuda->base_uploads(), 2u) << "each side's vectors once";
    Vectors plain_left = base.left, plain_right = base.right;
    plain_left.id = plain_right.id = 0;
    for (size_t t = 0; t < tuned.size(); ++t) {
      const Similarity l = b->compare(tuned[t].left, plain_left, 10, 5);
      const Similarity r = b->compare(tuned[t].right, plain_right, 10, 5);
      for (const auto& [a, c] : {std::pair{&kept[2 * t], &l}, std::pair{&kept[2 * t + 1], &r}}) {
        EXPECT_EQ(a->maxcos, c->maxcos) << t;
        EXPECT_EQ(a->argmax, c->argmax) << t;
        EXPECT_EQ(a->head, c->head) << t;
      }
    }
    EXPECT_EQ(cuda->base_uploads(), 8u) << "vectors without an id are uploaded every time";
    b->release_inputs(0);  // the entry ends: its copies go
    b->compare(tuned[0].left, base.left, 10, 5);
    EXPECT_EQ(cuda->base_uploads(), 9u);
  }
}

TEST(CudaDevices, AThreadKnowsWhetherItHasAContext) {
  REQUIRE_GPU();
  // The driver's answer the scope relies on, reached through the runtime: a new thread has no
  // context until it uses a device; device 0 is in use by then.
  bool before = true, after = false;
  std::thread([&] {
    before = cuda::RuntimeDevices().has_context();
    EXPECT_EQ(cudaSetDevice(0), cudaSuccess);
    EXPECT_EQ(cudaFree(nullptr), cudaSuccess);
    after = cuda::RuntimeDevices().has_context();
  }).join();
  EXPECT_FALSE(before);
  EXPECT_TRUE(after);
  EXPECT_TRUE(cuda::device_in_use(0));
}

TEST(CudaGesvdp, TheFallbackDecisionDoesNotDependOnTheMatrixScale) {
  REQUIRE_GPU();
  // gesvdp on a rank-deficient matrix and on the same matrix times 1000: h_err_sigma is read as
  // an absolute shift of sigma, compared with 8 eps sigma_1, so both must take the same route.
  // Were it relative, the decisions would differ; the routes (printed) carry the raw values.
  std::mt19937_64 rng(23);
  Dense<double> w = make(Shape{96, 96}, Kind::RankDeficient, rng);
  Dense<double> big = w;
  for (double& x : big.data) x *= 1000;
  for (Precision prec : {Precision::F32, Precision::F64}) {
    auto gpu = make_cuda_backend(prec, "gesvdp", 0);
    const Decomposition a = run(*gpu, w, Side::Left, 10), b = run(*gpu, big, Side::Left, 10);
    std::cout << precision_name(prec) << ": " << a.route << " | x1000: " << b.route << "\n";
    EXPECT_EQ(a.route.rfind("gesvd (", 0) == 0, b.route.rfind("gesvd (", 0) == 0)
        << a.route << " | " << b.route;
    for (int j = 0; j < 10; ++j) EXPECT_NEAR(b.sigma[j], 1000 * a.sigma[j], 1e-3 * b.sigma[0]);
  }
}

TEST(CudaInputs, Fp64ValuesBeyondTheFp32RangeAreRefusedAsOnTheCpu) {
  REQUIRE_GPU();
  std::mt19937_64 rng(5);
  Dense<double> w = random_weight(40, 30, 1.0, rng);
  w.at(7, 11) = 1e300;  // finite in fp64, infinite in fp32
  std::vector<uint8_t> bytes(w.data.size() * sizeof(double));
  std::memcpy(bytes.data(), w.data.data(), bytes.size());
  for (const std::string& algo : {"gram64", "gesvd"}) {
    auto gpu = make_cuda_backend(Precision::F32, algo, 0);
    auto cpu = make_cpu_backend(Precision::F32, "gram64");
    for (Backend* b : {gpu.get(), cpu.get()}) {
      try {
        b->decompose_stored(bytes.data(), DType::F64, 40, 30, false, Side::Left, 5, "w");
        ADD_FAILURE() << b->name() << ":" << algo << " took it";
      } catch (const BadInput& e) {
        EXPECT_EQ(e.problem(), InputProblem::NonFinite) << b->name();
        EXPECT_NE(std::string(e.what()).find("[7, 11]"), std::string::npos) << e.what();
      }
    }
  }
}
