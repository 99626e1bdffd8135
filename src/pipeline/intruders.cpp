// The definition (DESIGN.md): y_j = U[:, j] for j < k; maxcos_j = max_i |<y_j, U0[:, i]>| over
// all base vectors; y_j is an intruder at eps iff maxcos_j < eps.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "indim/analyze.hpp"
#include "indim/error.hpp"

namespace indim {

std::vector<double> eps_sweep() { return {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}; }

std::vector<double> eps_grid(const std::vector<double>& user_eps) {
  std::vector<double> all = eps_sweep();
  for (double e : user_eps) all.push_back(e);
  std::sort(all.begin(), all.end());
  std::vector<double> out;
  for (double e : all)
    if (out.empty() || eps_key(e) != eps_key(out.back())) out.push_back(e);
  return out;
}

std::string eps_key(double eps) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", eps);
  return buf;
}

int MatrixResult::count_at(double e) const {
  for (size_t i = 0; i < eps.size(); ++i)
    if (eps_key(eps[i]) == eps_key(e)) return counts[i];
  int n = 0;
  for (double m : maxcos) n += m < e ? 1 : 0;
  return n;
}

int MatrixResult::noise_floor_at(double e) const {
  if (!has_noise_floor) return 0;
  for (size_t i = 0; i < eps.size() && i < noise_floor.counts.size(); ++i)
    if (eps_key(eps[i]) == eps_key(e)) return noise_floor.counts[i];
  int n = 0;
  for (double m : noise_floor.maxcos) n += m < e ? 1 : 0;
  return n;
}

double MatrixResult::sigma_share_at(double e) const {
  double all = 0, in = 0;
  for (size_t j = 0; j < sigma.size(); ++j) {
    all += sigma[j] * sigma[j];
    if (j < maxcos.size() && maxcos[j] < e) in += sigma[j] * sigma[j];
  }
  return all > 0 ? in / all : 0.0;
}

double MatrixResult::update_share_at(double e) const {
  double in = 0;
  for (size_t j = 0; j < update_energy.size() && j < maxcos.size(); ++j)
    if (maxcos[j] < e) in += update_energy[j];
  return std::min(in, 1.0);
}

void count_intruders(MatrixResult& r, const std::vector<double>& eps) {
  r.eps = eps;
  r.counts.clear();
  for (double e : eps) {
    int n = 0;
    for (double m : r.maxcos) n += m < e ? 1 : 0;
    r.counts.push_back(n);
  }
}

double null_floor(int64_t rows, int64_t cols, Precision precision) {
  const double unit = precision == Precision::F32 ? 1.1920929e-7 : 2.220446049250313e-16;
  return std::max(1e-7, static_cast<double>(std::max(rows, cols)) * unit);
}

void mark_null_directions(MatrixResult& r, double floor, const std::vector<double>& eps) {
  r.null_directions = 0;
  const double s0 = r.sigma.empty() ? 0.0 : r.sigma[0];
  for (int j = 0; j < r.k; ++j)
    if (!(r.sigma[j] >= floor * s0) || s0 == 0) {
      r.maxcos[j] = std::numeric_limits<double>::quiet_NaN();
      r.argmax[j] = -1;
      ++r.null_directions;
    }
  count_intruders(r, eps);  // NaN < eps is false: null directions are never counted
}

MatrixResult intruder_record(Backend& backend, const Decomposition& tuned,
                             const Decomposition& base, Side side, int k,
                             const std::vector<double>& eps) {
  const Vectors& t = side == Side::Right ? tuned.right : tuned.left;
  const Vectors& b = side == Side::Right ? base.right : base.left;
  const std::vector<double>& in_base =
      side == Side::Right ? tuned.right_in_base : tuned.left_in_base;
  // The low-rank route's coordinates along the base's vectors are these cosines already.
  const bool coords = !in_base.empty() && in_base.size() == static_cast<size_t>(t.count * b.count);
  Similarity s = coords ? similarity_of(in_base, std::min<int64_t>(k, t.count), b.count, kPlotHead)
                        : backend.compare(t, b, k, kPlotHead);
  MatrixResult r;
  r.side = side_name(side);
  r.k = static_cast<int>(s.maxcos.size());
  r.maxcos = s.maxcos;
  r.argmax = s.argmax;
  const double s0 = tuned.sigma.empty() ? 0.0 : tuned.sigma[0];
  for (int j = 0; j < r.k; ++j) {
    const double sj = j < static_cast<int>(tuned.sigma.size()) ? tuned.sigma[j] : 0.0;
    r.sigma.push_back(sj);
    r.sigma_ratio.push_back(s0 > 0 ? sj / s0 : 0.0);
  }
  count_intruders(r, eps);
  r.head_cols = static_cast<int>(s.head_cols);
  r.cos_head = std::move(s.head);
  const size_t h = kPlotHead;
  r.sigma_head.assign(tuned.sigma.begin(), tuned.sigma.begin() + std::min(h, tuned.sigma.size()));
  r.base_sigma_head.assign(base.sigma.begin(), base.sigma.begin() + std::min(h, base.sigma.size()));
  return r;
}

namespace detail {

MatrixResult identical_record(const Decomposition& base, Side side, int k,
                              const std::vector<double>& eps) {
  MatrixResult r;
  r.side = side_name(side);
  r.identical = true;
  r.k = static_cast<int>(std::min<size_t>(k, base.sigma.size()));
  for (int j = 0; j < r.k; ++j) {
    r.maxcos.push_back(1.0);
    r.argmax.push_back(j);
    r.sigma.push_back(base.sigma[j]);
    r.sigma_ratio.push_back(base.sigma[0] > 0 ? base.sigma[j] / base.sigma[0] : 0.0);
  }
  count_intruders(r, eps);
  r.head_cols = static_cast<int>(std::min<size_t>(kPlotHead, base.sigma.size()));
  r.cos_head.assign(static_cast<size_t>(r.k * r.head_cols), 0.0f);
  for (int j = 0; j < r.k && j < r.head_cols; ++j) r.cos_head[j * r.head_cols + j] = 1.0f;
  const size_t h = std::min<size_t>(kPlotHead, base.sigma.size());
  r.sigma_head.assign(base.sigma.begin(), base.sigma.begin() + h);
  r.base_sigma_head = r.sigma_head;
  return r;
}

}  // namespace detail

}  // namespace indim
