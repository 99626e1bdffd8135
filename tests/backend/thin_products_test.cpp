// The thin products with a matrix in its stored type (backend/thin_products.hpp) against plain
// fp64 loops: bf16, fp32 and fp64, both products, column counts around the kernels' chunks of 8
// and 16, row counts off their blocks of 4 and 8, a matrix large enough to be split over
// threads, and stored bytes that start at an odd address.
#include "backend/thin_products.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "indim/safetensors.hpp"

using namespace indim;

namespace {

struct Case {
  std::vector<uint8_t> bytes;  // one leading pad byte, then the matrix
  std::vector<double> values;  // the stored values, widened
  int64_t rows, cols;
};

Case stored(int64_t rows, int64_t cols, DType dtype, std::mt19937_64& rng) {
  std::normal_distribution<float> g;
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = g(rng);
  Case c{{0}, std::vector<double>(v.size()), rows, cols};
  const std::vector<uint8_t> b = encode_floats(v, dtype);
  c.bytes.insert(c.bytes.end(), b.begin(), b.end());
  convert_elements(b.data(), dtype, v.size(), c.values.data());
  return c;
}

// The worst |y - loops| over max |loops| of one product.
double product_error(const Case& m, DType dtype, bool transpose, int64_t c, std::mt19937_64& rng) {
  const int64_t in = transpose ? m.rows : m.cols, out = transpose ? m.cols : m.rows;
  std::normal_distribution<double> g;
  std::vector<double> x(static_cast<size_t>(in * c)), y(static_cast<size_t>(out * c), -7.0);
  for (double& e : x) e = g(rng);
  const detail::StoredMatrix s{m.bytes.data() + 1, dtype, m.rows, m.cols};
  (transpose ? detail::thin_times_transposed : detail::thin_times)(s, x.data(), c, y.data());
  std::vector<double> want(y.size(), 0.0);
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t j = 0; j < m.cols; ++j) {
      const double a = m.values[i * m.cols + j];
      for (int64_t l = 0; l < c; ++l) {
        if (transpose)
          want[j * c + l] += a * x[i * c + l];
        else
          want[i * c + l] += a * x[j * c + l];
      }
    }
  double top = 0, diff = 0;
  for (size_t i = 0; i < y.size(); ++i)
    top = std::max(top, std::fabs(want[i])), diff = std::max(diff, std::fabs(y[i] - want[i]));
  return diff / top;
}

}  // namespace

TEST(ThinProducts, MatchLoopsForEveryStoredTypeAndWidth) {
  std::mt19937_64 rng(3);
  for (DType dtype : {DType::BF16, DType::F32, DType::F64}) {
    ASSERT_TRUE(detail::thin_supports(dtype));
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 3}, {37, 61}, {130, 9}}) {
      const Case m = stored(rows, cols, dtype, rng);
      for (bool transpose : {false, true})
        for (int64_t c : {1, 7, 8, 9, 16, 17, 40})
          EXPECT_LT(product_error(m, dtype, transpose, c, rng), 1e-14)
              << dtype_name(dtype) << " " << rows << "x" << cols << " transpose " << transpose
              << " c = " << c;
    }
  }
  EXPECT_FALSE(detail::thin_supports(DType::F16));
}

TEST(ThinProducts, MatchLoopsWhenSplitOverThreads) {
  // 1030 x 2100 is past the size and row counts at which the rows are split over threads (each
  // bound a multiple of 8, the transposed product summing one block per thread).
  std::mt19937_64 rng(4);
  const Case m = stored(1030, 2100, DType::BF16, rng);
  for (bool transpose : {false, true})
    for (int64_t c : {10, 32})
      EXPECT_LT(product_error(m, DType::BF16, transpose, c, rng), 1e-13)
          << "transpose " << transpose << " c = " << c;
}
