#include "report/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <sstream>

#include "indim/error.hpp"
#include "report/records.hpp"

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
  nlohmann::ordered_json tuned = nlohmann::ordered_json::array();
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    nlohmann::ordered_json totals = nlohmann::ordered_json::object();
    for (size_t e = 0; e < res.eps.size(); ++e)
      totals[eps_key(res.eps[e])] = res.tuned[t].totals[e];
    tuned.push_back({{"index", t},
                     {"path", res.tuned[t].path},
                     {"matrices", res.tuned[t].matrices},
                     {"intruders", totals},
                     {"null_directions", res.tuned[t].null_directions}});
  }
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
  out << "tuned_index,name,side,j,sigma,sigma_ratio,maxcos,argmax,null,intruder\n";
  for (const auto& r : res.records)
    for (int j = 0; j < r.k; ++j) {
      const bool null = std::isnan(r.maxcos[j]);
      out << r.tuned_index << "," << csv_field(r.name) << "," << r.side << "," << j << ","
          << num(r.sigma[j]) << "," << num(r.sigma_ratio[j]) << "," << cell(r.maxcos[j]) << ","
          << (null ? std::string() : std::to_string(r.argmax[j])) << ","
          << (null ? "true" : "false") << "," << (r.maxcos[j] < primary_eps ? "true" : "false")
          << "\n";
    }
  return out.str();
}

}  // namespace indim::detail
