// null_maxcos: where a direction with nothing in common with the base lands. By rotation
// invariance, max_i |<x, b_i>| for x uniform on the unit sphere of R^m against p orthonormal b_i
// has the law of max_{i<p} |z_i| / ||z|| for z standard normal in R^m, and ||z||^2 splits into
// the p coordinates' squares plus an independent chi-square with m - p degrees of freedom: a draw
// costs O(p), not O(m). The generators are our own on top of mt19937_64, whose output the
// standard fixes (its distributions it does not), so every build gives the same value.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

#include "indim/analyze.hpp"

namespace indim {

namespace {

constexpr int kDraws = 4000;
constexpr double kQuantile = 0.99;

class Draws {
 public:
  explicit Draws(uint64_t seed) : g_(seed) {}

  double uniform() {  // in (0, 1)
    return (static_cast<double>(g_() >> 11) + 0.5) * 0x1p-53;
  }

  double normal() {  // Marsaglia's polar method: two values per accepted pair
    if (spare_) {
      spare_ = false;
      return next_;
    }
    double u, v, s;
    do {
      u = 2 * uniform() - 1, v = 2 * uniform() - 1, s = u * u + v * v;
    } while (s >= 1 || s == 0);
    const double f = std::sqrt(-2 * std::log(s) / s);
    next_ = v * f, spare_ = true;
    return u * f;
  }

  // Gamma(a, 1) for a >= 1 (Marsaglia and Tsang).
  double gamma(double a) {
    const double d = a - 1.0 / 3, c = 1 / std::sqrt(9 * d);
    for (;;) {
      double x, v;
      do {
        x = normal(), v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const double u = uniform();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }

  double chi_square(int64_t dof) {
    if (dof > 64) return 2 * gamma(0.5 * static_cast<double>(dof));
    double s = 0;
    for (int64_t i = 0; i < dof; ++i) {
      const double z = normal();
      s += z * z;
    }
    return s;
  }

 private:
  std::mt19937_64 g_;
  double next_ = 0;
  bool spare_ = false;
};

double draw(Draws& d, int64_t m, int64_t p) {
  double top = 0, sq = 0;
  for (int64_t i = 0; i < p; ++i) {
    const double z = d.normal();
    sq += z * z;
    top = std::max(top, std::fabs(z));
  }
  sq += d.chi_square(m - p);
  return sq > 0 ? top / std::sqrt(sq) : 0.0;
}

// The q-quantile of `v` as numpy's default (linear between order statistics).
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double h = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(h);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (h - static_cast<double>(i)) * (v[i + 1] - v[i]);
}

double compute(int64_t m, int64_t p) {
  Draws d(0x9e3779b97f4a7c15ull ^
          (static_cast<uint64_t>(m) * 1000003ull + static_cast<uint64_t>(p)));
  std::vector<double> v(kDraws);
  for (double& x : v) x = draw(d, m, p);
  return quantile(std::move(v), kQuantile);
}

}  // namespace

double null_maxcos(int64_t m, int64_t p) {
  if (m < 1 || p < 1 || p > m) return std::numeric_limits<double>::quiet_NaN();
  static std::mutex mu;
  static std::map<std::pair<int64_t, int64_t>, double> known;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = known.find({m, p});
    if (it != known.end()) return it->second;
  }
  const double v = compute(m, p);  // outside the lock: workers on other shapes go on
  std::lock_guard<std::mutex> lock(mu);
  if (known.size() >= 4096) known.clear();  // a long-lived service meets many shapes
  known.emplace(std::make_pair(m, p), v);
  return v;
}

}  // namespace indim
