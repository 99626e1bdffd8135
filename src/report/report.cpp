#include "report/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <sstream>

#include "indim/error.hpp"
#include "report/records.hpp"
#include "report/totals.hpp"

namespace indim::detail {

namespace {

// How a record field appears in JSON: always; only when true (written) and false when absent
// (read); or always written, read with its default when absent (older journals).
enum class Presence { Always, WhenSet, Defaulted };

// The plain fields of a record, in the order report.json lists them, with their JSON names:
// one list that both directions read. `f(name, member, presence)`; R is MatrixResult or const
// MatrixResult.
template <typename R, typename F>
void identity_fields(R& r, F&& f) {
  f("tuned_index", r.tuned_index, Presence::Always);
  f("name", r.name, Presence::Always);
  f("tuned_name", r.tuned_name, Presence::Always);
  f("layer", r.layer, Presence::Always);
  f("type", r.type, Presence::Always);
  f("shape", r.shape, Presence::Always);
  f("conv1d", r.conv1d, Presence::WhenSet);
  f("dtype", r.dtype, Presence::Always);
  f("side", r.side, Presence::Always);
  f("k", r.k, Presence::Always);
  f("k_clamped", r.k_clamped, Presence::WhenSet);
  f("null_directions", r.null_directions, Presence::Defaulted);
  f("identical", r.identical, Presence::Always);
  f("base_cached", r.base_cached, Presence::Defaulted);
  f("route", r.route, Presence::Defaulted);
}

template <typename R, typename F>
void vector_fields(R& r, F&& f) {  // after maxcos, whose nulls need their own reading
  f("argmax", r.argmax, Presence::Always);
  f("sigma", r.sigma, Presence::Always);
  f("sigma_ratio", r.sigma_ratio, Presence::Always);
}

template <typename R, typename F>
void delta_fields(R& d, F&& f) {
  f("fro", d.fro, Presence::Always);
  f("rel_fro", d.rel_fro, Presence::Always);
  f("spectral", d.spectral, Presence::Always);
  f("rank", d.rank, Presence::Always);
  f("effective_rank", d.effective_rank, Presence::Always);
}

template <typename R, typename F>
void plot_fields(R& r, F&& f) {
  f("head_cols", r.head_cols, Presence::Always);
  f("cos_head", r.cos_head, Presence::Always);
  f("sigma_head", r.sigma_head, Presence::Always);
  f("base_sigma_head", r.base_sigma_head, Presence::Always);
}

struct Writer {
  nlohmann::ordered_json& j;
  template <typename T>
  void operator()(const char* name, const T& v, Presence p) const {
    if constexpr (std::is_same<T, bool>::value)
      if (p == Presence::WhenSet && !v) return;
    j[name] = v;
  }
};

struct Reader {
  const nlohmann::json& j;
  template <typename T>
  void operator()(const char* name, T& v, Presence p) const {
    if (p == Presence::Always)
      v = j.at(name).get<T>();
    else if (j.contains(name))
      v = j.at(name).get<T>();
  }
};

// A number that may be NaN (undefined): written as null, read back as NaN.
nlohmann::ordered_json maybe(double v) {
  return std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
}
double maybe_from(const nlohmann::json& j) {
  return j.is_null() ? std::numeric_limits<double>::quiet_NaN() : j.get<double>();
}

// The calibrated measures computed per record (kept in the journal).
void write_metrics(const MatrixResult& r, nlohmann::ordered_json& j) {
  j["update_energy"] = r.update_energy;
  nlohmann::ordered_json cosines = nlohmann::ordered_json::array();
  for (double c : r.principal_cos) cosines.push_back(maybe(c));
  j["principal_cos"] = cosines;
  j["subspace_overlap"] = maybe(r.subspace_overlap);
  j["null_maxcos"] = maybe(r.null_maxcos);
  j["update_fro"] = r.update_fro;
}

void read_metrics(const nlohmann::json& j, MatrixResult& r) {
  if (j.contains("update_energy"))
    r.update_energy = j.at("update_energy").get<std::vector<double>>();
  if (j.contains("principal_cos"))
    for (const auto& c : j.at("principal_cos")) r.principal_cos.push_back(maybe_from(c));
  if (j.contains("subspace_overlap")) r.subspace_overlap = maybe_from(j.at("subspace_overlap"));
  if (j.contains("null_maxcos")) r.null_maxcos = maybe_from(j.at("null_maxcos"));
  if (j.contains("update_fro")) r.update_fro = j.at("update_fro").get<double>();
}

// The measures at the primary eps and per eps of the grid (report.json only: they follow from
// the record's sigma, maxcos and update_energy).
void write_shares(const MatrixResult& r, double primary_eps, nlohmann::ordered_json& j) {
  j["intruder_sigma_share"] = r.sigma_share_at(primary_eps);
  j["intruder_update_share"] = r.update_share_at(primary_eps);
  nlohmann::ordered_json sigma = nlohmann::ordered_json::object(),
                         update = nlohmann::ordered_json::object();
  for (double e : r.eps) {
    sigma[eps_key(e)] = r.sigma_share_at(e);
    update[eps_key(e)] = r.update_share_at(e);
  }
  j["sigma_share"] = sigma;
  j["update_share"] = update;
}

nlohmann::ordered_json intruder_list(const MatrixResult& r, double primary_eps) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (int i = 0; i < r.k; ++i)
    if (r.maxcos[i] < primary_eps)
      list.push_back({{"j", i},
                      {"sigma", r.sigma[i]},
                      {"sigma_ratio", r.sigma_ratio[i]},
                      {"argmax", r.argmax[i]},
                      {"maxcos", r.maxcos[i]}});
  return {{"eps", primary_eps}, {"vectors", list}};
}

void check_lengths(const MatrixResult& r) {
  if (r.cos_head.size() != static_cast<size_t>(r.k) * static_cast<size_t>(r.head_cols))
    throw Error("plot data size differs from k x head_cols");
  if (r.maxcos.size() != static_cast<size_t>(r.k) || r.argmax.size() != r.maxcos.size() ||
      r.sigma.size() != r.maxcos.size() || r.sigma_ratio.size() != r.maxcos.size())
    throw Error("array lengths differ from k");
  if (!r.update_energy.empty() && r.update_energy.size() != r.maxcos.size())
    throw Error("update_energy's length differs from k");
  if (r.principal_cos.size() > r.maxcos.size()) throw Error("principal_cos is longer than k");
}

// The expert a record is, and its noise floor: written only where they apply.
void expert_noise_to_json(const MatrixResult& r, nlohmann::ordered_json& j) {
  if (r.expert >= 0) j["expert"] = r.expert;
  if (!r.has_noise_floor) return;
  nlohmann::ordered_json counts = nlohmann::ordered_json::object();
  for (size_t i = 0; i < r.eps.size() && i < r.noise_floor.counts.size(); ++i)
    counts[eps_key(r.eps[i])] = r.noise_floor.counts[i];
  j["noise_floor"] = {
      {"format", r.noise_floor.format}, {"maxcos", r.noise_floor.maxcos}, {"counts", counts}};
}

void expert_noise_from_json(const nlohmann::json& j, MatrixResult& r) {
  if (j.contains("expert")) r.expert = j.at("expert").get<int>();
  if (!j.contains("noise_floor")) return;
  const nlohmann::json& n = j.at("noise_floor");
  r.has_noise_floor = true;
  r.noise_floor.format = n.at("format").get<std::string>();
  for (const auto& m : n.at("maxcos"))
    r.noise_floor.maxcos.push_back(m.is_null() ? std::numeric_limits<double>::quiet_NaN()
                                               : m.get<double>());
  for (double e : r.eps) r.noise_floor.counts.push_back(n.at("counts").at(eps_key(e)).get<int>());
}

}  // namespace

nlohmann::ordered_json record_to_json(const MatrixResult& r, double primary_eps, bool plot) {
  nlohmann::ordered_json j;
  identity_fields(r, Writer{j});
  j["maxcos"] = r.maxcos;  // NaN (a null direction) is written as null
  vector_fields(r, Writer{j});
  nlohmann::ordered_json counts = nlohmann::ordered_json::object();
  for (size_t i = 0; i < r.eps.size(); ++i) counts[eps_key(r.eps[i])] = r.counts[i];
  j["counts"] = counts;
  if (primary_eps > 0) write_shares(r, primary_eps, j);
  write_metrics(r, j);
  if (primary_eps > 0) j["intruders"] = intruder_list(r, primary_eps);
  expert_noise_to_json(r, j);
  j["seconds"] = r.seconds;
  if (r.has_delta) delta_fields(r.delta, Writer{j["delta"]});
  if (plot) plot_fields(r, Writer{j["plot"]});
  return j;
}

MatrixResult record_from_json(const nlohmann::json& j) {
  try {
    MatrixResult r;
    identity_fields(r, Reader{j});
    for (const auto& m : j.at("maxcos"))  // null: a null direction, not tested
      r.maxcos.push_back(m.is_null() ? std::numeric_limits<double>::quiet_NaN() : m.get<double>());
    vector_fields(r, Reader{j});
    for (const auto& [key, n] : j.at("counts").items()) {
      r.eps.push_back(std::stod(key));
      r.counts.push_back(n.get<int>());
    }
    expert_noise_from_json(j, r);
    read_metrics(j, r);
    r.seconds = j.at("seconds").get<double>();
    if (j.contains("delta")) r.has_delta = true, delta_fields(r.delta, Reader{j.at("delta")});
    if (j.contains("plot")) plot_fields(r, Reader{j.at("plot")});
    check_lengths(r);
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("journal record: ") + e.what());
  } catch (const std::logic_error& e) {
    throw Error(std::string("journal record: ") + e.what());
  }
}

namespace {

// Seconds of work (summed over the shards of a merged run, with each shard's and the slowest).
nlohmann::ordered_json timing_json(const AnalyzeResult& res) {
  nlohmann::ordered_json t = {{"seconds", res.seconds}, {"resumed_records", res.resumed}};
  if (res.shard_times.empty()) return t;
  nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  const AnalyzeResult::ShardTime* slowest = &res.shard_times.front();
  for (const auto& s : res.shard_times) {
    shards.push_back({{"index", s.index}, {"seconds", s.seconds}, {"matrices", s.matrices}});
    if (s.seconds > slowest->seconds) slowest = &s;
  }
  t["shards"] = shards;
  t["slowest_shard"] = {{"index", slowest->index}, {"seconds", slowest->seconds}};
  return t;
}

// A group's figures at the primary eps (docs/report-schema.md, "tuned[]").
nlohmann::ordered_json group_json(const GroupTotals& g) {
  return {{"matrices", g.matrices},
          {"intruders", g.intruders},
          {"intruder_sigma_share", g.sigma_share},
          {"intruder_update_share", g.update_share},
          {"subspace_overlap", maybe(g.subspace_overlap)},
          {"null_maxcos", g.null_maxcos}};
}

nlohmann::ordered_json per_eps(const std::vector<double>& eps, const std::vector<double>& v) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (size_t e = 0; e < eps.size() && e < v.size(); ++e) o[eps_key(eps[e])] = v[e];
  return o;
}

// One fine-tune's totals: counts and mean shares per eps, and its layers and matrix types.
nlohmann::ordered_json tuned_json(const AnalyzeResult& res, int t, double primary_eps) {
  const TunedSummary& s = res.tuned[t];
  nlohmann::ordered_json totals = nlohmann::ordered_json::object();
  for (size_t e = 0; e < res.eps.size(); ++e) totals[eps_key(res.eps[e])] = s.totals[e];
  nlohmann::ordered_json layers = nlohmann::ordered_json::array(),
                         types = nlohmann::ordered_json::array();
  for (const auto& [layer, g] : totals_by_layer(res, t, primary_eps)) {
    nlohmann::ordered_json row = {{"layer", layer}};
    row.update(group_json(g));
    layers.push_back(row);
  }
  for (const auto& [type, g] : totals_by_type(res, t, primary_eps)) {
    nlohmann::ordered_json row = {{"type", type}};
    row.update(group_json(g));
    types.push_back(row);
  }
  GroupTotals all;
  for (const MatrixResult& r : res.records)
    if (r.tuned_index == t) all.add(r, primary_eps);
  all.finish();
  return {{"index", t},
          {"path", s.path},
          {"step", s.step},
          {"matrices", s.matrices},
          {"intruders", totals},
          {"null_directions", s.null_directions},
          {"intruder_sigma_share", all.sigma_share},
          {"intruder_update_share", all.update_share},
          {"subspace_overlap", maybe(s.subspace_overlap)},
          {"null_maxcos", s.null_maxcos},
          {"sigma_share", per_eps(res.eps, s.sigma_share)},
          {"update_share", per_eps(res.eps, s.update_share)},
          {"by_layer", layers},
          {"by_type", types}};
}

}  // namespace

nlohmann::ordered_json build_report(const AnalyzeResult& res, double primary_eps) {
  const nlohmann::json header = header_to_json(res.header);
  nlohmann::ordered_json j;
  j["schema_version"] = header.at("schema_version");
  j["tool"] = {{"name", "indim"}, {"version", INDIM_VERSION}};
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  j["created"] = when;
  j["inputs"] = header.at("inputs");
  j["settings"] = header.at("settings");
  j["settings"]["primary_eps"] = primary_eps;
  if (header.contains("shard")) j["shard"] = header.at("shard");
  j["timing"] = timing_json(res);
  j["steps_from"] = res.steps_from.empty() ? "order" : res.steps_from;
  nlohmann::ordered_json tuned = nlohmann::ordered_json::array();
  for (size_t t = 0; t < res.tuned.size(); ++t)
    tuned.push_back(tuned_json(res, static_cast<int>(t), primary_eps));
  j["tuned"] = tuned;
  nlohmann::ordered_json mats = nlohmann::ordered_json::array();
  for (const auto& r : res.records) mats.push_back(record_to_json(r, primary_eps, false));
  j["matrices"] = mats;
  return j;
}

namespace {
// A text cell. One that a spreadsheet would run as a formula (it starts with = + - @, a tab or
// a carriage return: OWASP's CSV injection) is written as text: a leading ' and quoted.
std::string csv_field(const std::string& s) {
  const bool formula = !s.empty() && std::string("=+-@\t\r").find(s[0]) != std::string::npos;
  if (!formula && s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = formula ? "\"'" : "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A number for pandas: NaN (a null direction) as an empty cell.
std::string cell(double v) { return std::isnan(v) ? std::string() : num(v); }

// A measure for pandas, read as a float even when every value is whole ("0.0", not "0").
std::string real(double v) {
  std::string s = cell(v);
  if (!s.empty() && s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

double min_tested_maxcos(const MatrixResult& r) {
  double m = std::numeric_limits<double>::quiet_NaN();
  for (double c : r.maxcos)
    if (!std::isnan(c) && !(c >= m)) m = c;
  return m;
}

// The matrices.csv columns of experts and the noise floor: `expert` (empty for a matrix that
// is none) and, where any record has a noise floor, its count at each eps.
bool any_noise_floor(const AnalyzeResult& res) {
  return std::any_of(res.records.begin(), res.records.end(),
                     [](const MatrixResult& r) { return r.has_noise_floor; });
}

std::string expert_noise_header(const AnalyzeResult& res, bool noise) {
  std::string h = ",expert";
  if (noise)
    for (double e : res.eps) h += ",noise_floor_eps_" + eps_key(e);
  return h;
}

std::string expert_noise_cells(const AnalyzeResult& res, const MatrixResult& r, bool noise) {
  std::string c = "," + (r.expert >= 0 ? std::to_string(r.expert) : std::string());
  if (noise)
    for (double e : res.eps)
      c += "," + (r.has_noise_floor ? std::to_string(r.noise_floor_at(e)) : std::string());
  return c;
}

}  // namespace

std::string build_matrices_csv(const AnalyzeResult& res) {
  std::ostringstream out;
  out << "tuned_index,tuned_path,name,tuned_name,layer,type,rows,cols,dtype,side,k,"
         "null_directions,identical,seconds,route,min_maxcos";
  for (double e : res.eps) out << ",intruders_eps_" << eps_key(e);
  out << ",step,intruder_sigma_share,intruder_update_share,subspace_overlap,null_maxcos,"
         "update_fro";
  for (double e : res.eps) out << ",sigma_share_eps_" << eps_key(e);
  for (double e : res.eps) out << ",update_share_eps_" << eps_key(e);
  const double primary = res.header.eps.empty() ? 0.5 : res.header.eps.front();
  const bool deltas = std::any_of(res.records.begin(), res.records.end(),
                                  [](const MatrixResult& r) { return r.has_delta; });
  if (deltas) out << ",delta_fro,delta_rel_fro,delta_spectral,delta_rank,delta_effective_rank";
  const bool noise = any_noise_floor(res);
  out << expert_noise_header(res, noise) << "\n";
  for (const auto& r : res.records) {
    out << r.tuned_index << "," << csv_field(res.tuned[r.tuned_index].path) << ","
        << csv_field(r.name) << "," << csv_field(r.tuned_name) << "," << r.layer << ","
        << csv_field(r.type) << "," << r.shape[0] << "," << r.shape[1] << "," << r.dtype << ","
        << r.side << "," << r.k << "," << r.null_directions << ","
        << (r.identical ? "true" : "false") << "," << num(r.seconds) << "," << csv_field(r.route)
        << "," << cell(min_tested_maxcos(r));
    for (double e : res.eps) out << "," << r.count_at(e);
    out << "," << res.tuned[r.tuned_index].step << "," << real(r.sigma_share_at(primary)) << ","
        << real(r.update_share_at(primary)) << "," << real(r.subspace_overlap) << ","
        << real(r.null_maxcos) << "," << real(r.update_fro);
    for (double e : res.eps) out << "," << real(r.sigma_share_at(e));
    for (double e : res.eps) out << "," << real(r.update_share_at(e));
    if (deltas) {
      if (r.has_delta)
        out << "," << num(r.delta.fro) << "," << num(r.delta.rel_fro) << ","
            << num(r.delta.spectral) << "," << r.delta.rank << "," << num(r.delta.effective_rank);
      else
        out << ",,,,,";
    }
    out << expert_noise_cells(res, r, noise) << "\n";
  }
  return out.str();
}

std::string build_vectors_csv(const AnalyzeResult& res, double primary_eps) {
  std::ostringstream out;
  out << "tuned_index,name,side,j,sigma,sigma_ratio,maxcos,argmax,null,intruder,update_share,"
         "principal_cos\n";
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& r : res.records)
    for (int j = 0; j < r.k; ++j) {
      const bool null = std::isnan(r.maxcos[j]);
      const size_t i = static_cast<size_t>(j);
      out << r.tuned_index << "," << csv_field(r.name) << "," << r.side << "," << j << ","
          << num(r.sigma[j]) << "," << num(r.sigma_ratio[j]) << "," << cell(r.maxcos[j]) << ","
          << (null ? std::string() : std::to_string(r.argmax[j])) << ","
          << (null ? "true" : "false") << "," << (r.maxcos[j] < primary_eps ? "true" : "false")
          << "," << real(i < r.update_energy.size() ? r.update_energy[i] : nan) << ","
          << real(i < r.principal_cos.size() ? r.principal_cos[i] : nan) << "\n";
    }
  return out.str();
}

}  // namespace indim::detail
