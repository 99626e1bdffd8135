// Typed kinds of bad input: each class of hostile or inconsistent input is told apart by its
// InputProblem, not by message text (what a service maps to a status).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <functional>
#include <limits>

#include "indim/analyze.hpp"
#include "indim/checkpoint.hpp"
#include "indim/error.hpp"
#include "indim/safetensors.hpp"
#include "test_util.hpp"

using namespace indim;

namespace {

InputProblem problem_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const BadInput& e) {
    return e.problem();
  }
  ADD_FAILURE() << "no BadInput";
  return InputProblem::Other;
}

TensorData matrix(const std::string& name, size_t rows, size_t cols, float v = 0.5f,
                  DType dtype = DType::F32) {
  std::vector<float> x(rows * cols);
  for (size_t i = 0; i < x.size(); ++i) x[i] = v + 0.01f * static_cast<float>(i % 97);
  return {name, dtype, {rows, cols}, encode_floats(x, dtype)};
}

const char* kName = "model.layers.0.mlp.up_proj.weight";

AnalyzeOptions options(const std::string& base, const std::string& tuned,
                       const test::TempDir& dir) {
  AnalyzeOptions o;
  o.base = base;
  o.tuned = {tuned};
  o.out_dir = dir / "out";
  o.backend = "cpu";
  return o;
}

}  // namespace

TEST(InputProblem, FilesTheReadersRefuse) {
  test::TempDir dir;
  EXPECT_EQ(problem_of([&] { Checkpoint::open(dir / "missing"); }), InputProblem::NotFound);
  ASSERT_EQ(::mkfifo((dir / "fifo.safetensors").c_str(), 0600), 0);
  EXPECT_EQ(problem_of([&] { Checkpoint::open(dir / "fifo.safetensors"); }),
            InputProblem::NotAFile);
  test::write_text(dir / "bad.safetensors", std::string("\x08\0\0\0\0\0\0\0{\"a\":1}xx", 17));
  EXPECT_EQ(problem_of([&] { Checkpoint::open(dir / "bad.safetensors"); }),
            InputProblem::Malformed);
  EXPECT_EQ(problem_of([&] { Checkpoint::open(dir.str()); }), InputProblem::Ambiguous)
      << "a folder of two unrelated files";
  EXPECT_STREQ(input_problem_name(InputProblem::NonFinite), "non-finite");
}

TEST(InputProblem, PairsTheRunRefuses) {
  test::TempDir dir;
  const std::string base = dir / "base.safetensors";
  write_safetensors(base, {matrix(kName, 8, 6)});
  const std::string other = dir / "other.safetensors";
  write_safetensors(other, {matrix(kName, 6, 8)});
  EXPECT_EQ(problem_of([&] { analyze(options(base, other, dir)); }), InputProblem::Mismatch);

  const std::string nan = dir / "nan.safetensors";
  TensorData t = matrix(kName, 8, 6);
  std::vector<float> x(48, 1.0f);
  x[13] = std::numeric_limits<float>::quiet_NaN();
  t.bytes = encode_floats(x, DType::F32);
  write_safetensors(nan, {t});
  EXPECT_EQ(problem_of([&] { analyze(options(base, nan, dir)); }), InputProblem::NonFinite);

  const std::string huge = dir / "huge.safetensors";
  write_safetensors(huge, {matrix(kName, 8, 6, 3e38f)});
  AnalyzeOptions fp32 = options(base, huge, dir);
  fp32.algo = "gesdd";  // in fp32: the Gram route would work in fp64
  EXPECT_EQ(problem_of([&] { analyze(fp32); }), InputProblem::Overflow);

  const std::string unrelated = dir / "unrelated.safetensors";
  write_safetensors(unrelated, {matrix("lm_head.weight", 8, 6)});
  EXPECT_EQ(problem_of([&] { analyze(options(base, unrelated, dir)); }),
            InputProblem::NothingSelected);
}
