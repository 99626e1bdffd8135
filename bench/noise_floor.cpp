// How large the noise floor is (issue 31, section 2) on generated FP8 pairs: a base with a
// given spectrum, quantised as DeepSeek's weight_quant does (E4M3, amax / 448 per 128 x 128
// block), against (a) its noise floor, the base dequantised plus a dither of half a step and
// quantised again, and (b) a "fine-tune" that changed nothing but 1e-3 of the rms entry and was
// quantised on its own. Prints, per shape and spectrum, the FP8 rounding relative to the weight
// and both sides' intruder counts at eps 0.5 and smallest max |cos| among the top 10.
//   indim_bench_noise_floor [--shapes 1024x1024,2048x2048,2048x7168]
#include "pipeline/noise_floor.hpp"

#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/quant.hpp"

using namespace indim;

namespace {

std::vector<double> dequantised(const std::vector<double>& w, int64_t rows, int64_t cols) {
  const Quantised q = quantise_fp8(w, rows, cols, DType::F8_E4M3, 128, 128);
  QuantScales s;
  s.data = q.scales.data();
  s.block_rows = 128, s.block_cols = 128, s.grid_rows = q.grid_rows, s.grid_cols = q.grid_cols;
  std::vector<double> out;
  decode_quantised(q.codes.data(), DType::F8_E4M3, rows, cols, s, false, "w", out);
  return out;
}

struct Outcome {
  int count = 0;
  double min_maxcos = 1;
};

Outcome compare(Backend& b, const Decomposition& base, const std::vector<double>& w, int64_t rows,
                int64_t cols) {
  const Decomposition t = b.decompose(Dense<double>{rows, cols, w}, Side::Left, 10, "t");
  const MatrixResult r = intruder_record(b, t, base, Side::Left, 10, {0.5});
  Outcome o;
  o.count = r.count_at(0.5);
  for (double c : r.maxcos) o.min_maxcos = std::min(o.min_maxcos, c);
  return o;
}

double rel_fro(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]), n += b[i] * b[i];
  return std::sqrt(d / n);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes = "1024x1024,2048x2048,2048x7168";
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--shapes") shapes = argv[i + 1];
  auto b = make_cpu_backend(Precision::F64, "gram64");
  std::mt19937_64 rng(2031);
  std::normal_distribution<double> g(0.0, 1.0);
  std::printf(
      "| shape | spectrum | (sigma_0 - sigma_9) / sigma_0 | FP8 rounding, rel. Frobenius | noise "
      "floor: intruders at 0.5, min max\\|cos\\| | re-quantised no-op fine-tune: intruders, min "
      "max\\|cos\\| |\n| --- | --- | --- | --- | --- | --- |\n");
  std::istringstream list(shapes);
  for (std::string sh; std::getline(list, sh, ',');) {
    const int64_t rows = std::stoll(sh.substr(0, sh.find('x')));
    const int64_t cols = std::stoll(sh.substr(sh.find('x') + 1));
    const int64_t p = std::min(rows, cols);
    for (const char* spectrum : {"(i+1)^-0.6", "(i+1)^-0.3", "exp(-6 i / n)"}) {
      std::vector<double> s(static_cast<size_t>(p));
      for (int64_t i = 0; i < p; ++i)
        s[i] = spectrum[9] == '6'   ? std::pow(i + 1.0, -0.6)
               : spectrum[9] == '3' ? std::pow(i + 1.0, -0.3)
                                    : std::exp(-6.0 * double(i) / double(p));
      const Dense<double> w =
          compose_svd(random_orthonormal(rows, p, rng), s, random_orthonormal(cols, p, rng));
      const std::vector<double> w0 = dequantised(w.data, rows, cols);
      const Decomposition base = b->decompose(Dense<double>{rows, cols, w0}, Side::Left, 0, "b");
      detail::TargetFormat f;
      f.kind = detail::TargetFormat::Kind::Fp8;
      f.dtype = DType::F8_E4M3;
      const Outcome nf = compare(*b, base, detail::requantise(w0, rows, cols, f, 7), rows, cols);
      double ss = 0;
      for (double x : w.data) ss += x * x;
      const double rms = std::sqrt(ss / double(w.data.size()));
      std::vector<double> moved = w.data;
      for (double& x : moved) x += 1e-3 * rms * g(rng);
      const Outcome noop = compare(*b, base, dequantised(moved, rows, cols), rows, cols);
      std::printf("| %lldx%lld | %s | %.4f | %.4f | %d, %.3f | %d, %.3f |\n",
                  static_cast<long long>(rows), static_cast<long long>(cols), spectrum,
                  (base.sigma[0] - base.sigma[9]) / base.sigma[0], rel_fro(w0, w.data), nf.count,
                  nf.min_maxcos, noop.count, noop.min_maxcos);
      std::fflush(stdout);
    }
  }
  return 0;
}
