#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "indim/report.hpp"
#include "report/totals.hpp"

namespace indim {

namespace {

std::string short_type(const std::string& type, const std::vector<std::string>& all) {
  const auto dot = type.rfind('.');
  if (dot == std::string::npos) return type;
  const std::string tail = type.substr(dot + 1);
  int same = 0;
  for (const auto& t : all)
    same += (t.size() >= tail.size() && t.rfind(tail) == t.size() - tail.size()) ? 1 : 0;
  return same == 1 ? tail : type;
}

void pad(std::ostringstream& o, const std::string& s, size_t w) {
  o << std::string(w > s.size() ? w - s.size() : 0, ' ') << s;
}

void layer_table(std::ostringstream& o, const AnalyzeResult& res, int t, double eps) {
  std::vector<std::string> types;
  std::map<int, std::map<std::string, int>> grid;  // layer -> type -> count (sides summed)
  for (const auto& r : res.records) {
    if (r.tuned_index != t) continue;
    if (std::find(types.begin(), types.end(), r.type) == types.end()) types.push_back(r.type);
    grid[r.layer][r.type] += r.count_at(eps);
  }
  std::vector<std::string> labels;
  for (const auto& ty : types) labels.push_back(short_type(ty, types));
  o << "  " << std::string(5, ' ') << "layer";
  for (const auto& l : labels) pad(o, l, std::max<size_t>(l.size(), 4) + 2);
  o << "   total\n";
  std::map<std::string, int> col_total;
  int grand = 0;
  for (const auto& [layer, row] : grid) {
    o << "  ";
    pad(o, layer < 0 ? "-" : std::to_string(layer), 10);
    int sum = 0;
    for (size_t i = 0; i < types.size(); ++i) {
      auto it = row.find(types[i]);
      std::string cell = it == row.end() ? "." : std::to_string(it->second);
      if (it != row.end()) sum += it->second, col_total[types[i]] += it->second;
      pad(o, cell, std::max<size_t>(labels[i].size(), 4) + 2);
    }
    grand += sum;
    pad(o, std::to_string(sum), 8);
    o << "\n";
  }
  o << "  ";
  pad(o, "total", 10);
  for (size_t i = 0; i < types.size(); ++i)
    pad(o, std::to_string(col_total[types[i]]), std::max<size_t>(labels[i].size(), 4) + 2);
  pad(o, std::to_string(grand), 8);
  o << "\n";
}

// The noise floor of fine-tune t: intruders at eps, how many of them the noise floor explains
// (per matrix the smaller of its count and its noise floor's), and both by matrix type.
void noise_floor_lines(std::ostringstream& o, const AnalyzeResult& res, int t, double eps) {
  std::map<std::string, std::array<int, 3>> by_type;  // intruders, noise floor, explained
  std::set<std::string> formats;
  for (const auto& r : res.records) {
    if (r.tuned_index != t || !r.has_noise_floor) continue;
    auto& c = by_type[r.type];
    const int n = r.count_at(eps), nf = r.noise_floor_at(eps);
    c[0] += n, c[1] += nf, c[2] += std::min(n, nf);
    formats.insert(r.noise_floor.format);
  }
  if (by_type.empty()) return;
  std::array<int, 3> all{};
  for (const auto& [_, c] : by_type)
    for (int i = 0; i < 3; ++i) all[i] += c[i];
  std::string fmts;
  for (const auto& f : formats) fmts += (fmts.empty() ? "" : ", ") + f;
  o << "  " << all[0] << " intruders at eps " << eps_key(eps) << ", of which the noise floor "
    << "explains " << all[2] << " (the base re-quantised as " << fmts << " alone shows " << all[1]
    << ")\n";
  if (by_type.size() < 2) return;
  char line[320];
  std::snprintf(line, sizeof line, "  %-42s %9s %12s %10s\n", "noise floor by matrix type",
                "intruders", "noise floor", "explained");
  o << line;
  for (const auto& [type, c] : by_type) {
    std::snprintf(line, sizeof line, "    %-40s %9d %12d %10d\n", type.c_str(), c[0], c[1], c[2]);
    o << line;
  }
}

std::string fixed(double v, const char* f = "%.3f") {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The calibrated measures of one fine-tune at `eps`: overall, then per matrix type.
void measures_table(std::ostringstream& o, const AnalyzeResult& res, int t, double eps) {
  const auto types = detail::totals_by_type(res, t, eps);
  detail::GroupTotals all;
  for (const auto& r : res.records)
    if (r.tuned_index == t) all.add(r, eps);
  all.finish();
  o << "  at eps " << eps_key(eps) << ": intruder_sigma_share " << fixed(all.sigma_share)
    << ", intruder_update_share " << fixed(all.update_share) << ", subspace_overlap "
    << fixed(all.subspace_overlap) << " (means over matrices), null_maxcos up to "
    << fixed(all.null_maxcos) << "\n";
  std::vector<std::string> names;
  for (const auto& [type, g] : types) names.push_back(type);
  size_t w = 4;
  for (const auto& n : names) w = std::max(w, short_type(n, names).size());
  o << "  ";
  pad(o, "type", w);
  o << "  matrices  intruders  sigma_share  update_share  overlap  null_maxcos\n";
  for (const auto& [type, g] : types) {
    o << "  ";
    pad(o, short_type(type, names), w);
    pad(o, std::to_string(g.matrices), 10);
    pad(o, std::to_string(g.intruders), 11);
    pad(o, fixed(g.sigma_share), 13);
    pad(o, fixed(g.update_share), 14);
    pad(o, fixed(g.subspace_overlap), 9);
    pad(o, fixed(g.null_maxcos), 13);
    o << "\n";
  }
}

// Where an eps the user gave lies below null_maxcos: a direction as unrelated to the base as a
// random one scores up to null_maxcos, so at that eps it would not count as an intruder.
void null_warnings(std::ostringstream& o, const AnalyzeResult& res) {
  const MatrixResult* worst = nullptr;
  for (const auto& r : res.records)
    if (!std::isnan(r.null_maxcos) && (worst == nullptr || r.null_maxcos > worst->null_maxcos))
      worst = &r;
  if (worst == nullptr) return;
  std::set<std::string> said;
  for (double e : res.header.eps) {
    if (!(e < worst->null_maxcos) || !said.insert(eps_key(e)).second) continue;
    int below = 0;
    for (const auto& r : res.records) below += e < r.null_maxcos ? 1 : 0;
    o << "\nwarning: eps " << eps_key(e) << " lies below null_maxcos for " << below
      << " matrices (up to " << fixed(worst->null_maxcos) << ", " << worst->name << " ["
      << worst->shape[0] << " x " << worst->shape[1] << "]): a random direction scores up to "
      << "that against their base, so at this eps even a direction as new as a random one is "
         "not counted as an intruder\n";
  }
}

}  // namespace

std::string format_summary(const AnalyzeResult& res, double primary_eps, int k) {
  std::ostringstream o;
  char head[160];
  std::snprintf(head, sizeof head,
                "Intruder dimensions: top k=%d tuned vectors with max |cos| < eps=%s, backend "
                "%s, %.2f s\n",
                k, eps_key(primary_eps).c_str(), res.backend.c_str(), res.seconds);
  o << head;
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    o << "\n[" << t << "] " << res.tuned[t].path << " (" << res.tuned[t].matrices << " matrices";
    if (res.tuned[t].null_directions > 0)
      o << "; " << res.tuned[t].null_directions
        << " null directions of rank-deficient matrices, not tested";
    o << ")";
    if (res.tuned.size() > 1) o << ", step " << res.tuned[t].step;
    o << "\n";
    layer_table(o, res, static_cast<int>(t), primary_eps);
    measures_table(o, res, static_cast<int>(t), primary_eps);
    noise_floor_lines(o, res, static_cast<int>(t), primary_eps);
  }
  o << "\nIntruders summed over all matrices, by eps:\n";
  o << "  tuned";
  for (double e : res.eps) pad(o, eps_key(e), 7);
  o << "\n";
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    o << "  ";
    pad(o, "[" + std::to_string(t) + "]", 5);
    for (int n : res.tuned[t].totals) pad(o, std::to_string(n), 7);
    o << "\n";
  }
  null_warnings(o, res);
  return o.str();
}

}  // namespace indim
