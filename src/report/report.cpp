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

nlohmann::ordered_json record_to_json(const MatrixResult& r, double primary_eps, bool plot) {
  nlohmann::ordered_json j;
  j["tuned_index"] = r.tuned_index;
  j["name"] = r.name;
  j["tuned_name"] = r.tuned_name;
  j["layer"] = r.layer;
  j["type"] = r.type;
  j["shape"] = r.shape;
  if (r.conv1d) j["conv1d"] = true;
  j["dtype"] = r.dtype;
  j["side"] = r.side;
  j["k"] = r.k;
  if (r.k_clamped) j["k_clamped"] = true;
  j["null_directions"] = r.null_directions;
  j["identical"] = r.identical;
  j["base_cached"] = r.base_cached;
  j["route"] = r.route;
  j["maxcos"] = r.maxcos;
  j["argmax"] = r.argmax;
  j["sigma"] = r.sigma;
  j["sigma_ratio"] = r.sigma_ratio;
  nlohmann::ordered_json counts = nlohmann::ordered_json::object();
  for (size_t i = 0; i < r.eps.size(); ++i) counts[eps_key(r.eps[i])] = r.counts[i];
  j["counts"] = counts;
  if (primary_eps > 0) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (int i = 0; i < r.k; ++i)
      if (r.maxcos[i] < primary_eps)
        list.push_back({{"j", i},
                        {"sigma", r.sigma[i]},
                        {"sigma_ratio", r.sigma_ratio[i]},
                        {"argmax", r.argmax[i]},
                        {"maxcos", r.maxcos[i]}});
    j["intruders"] = {{"eps", primary_eps}, {"vectors", list}};
  }
  j["seconds"] = r.seconds;
  if (r.has_delta)
    j["delta"] = {{"fro", r.delta.fro},
                  {"rel_fro", r.delta.rel_fro},
                  {"spectral", r.delta.spectral},
                  {"rank", r.delta.rank},
                  {"effective_rank", r.delta.effective_rank}};
  if (plot)
    j["plot"] = {{"head_cols", r.head_cols},
                 {"cos_head", r.cos_head},
                 {"sigma_head", r.sigma_head},
                 {"base_sigma_head", r.base_sigma_head}};
  return j;
}

MatrixResult record_from_json(const nlohmann::json& j) {
  try {
    MatrixResult r;
    r.tuned_index = j.at("tuned_index").get<int>();
    r.name = j.at("name").get<std::string>();
    r.tuned_name = j.at("tuned_name").get<std::string>();
    r.layer = j.at("layer").get<int>();
    r.type = j.at("type").get<std::string>();
    r.shape = j.at("shape").get<std::vector<int64_t>>();
    r.conv1d = j.value("conv1d", false);
    r.dtype = j.at("dtype").get<std::string>();
    r.side = j.at("side").get<std::string>();
    r.k = j.at("k").get<int>();
    r.k_clamped = j.value("k_clamped", false);
    r.null_directions = j.value("null_directions", 0);
    r.identical = j.at("identical").get<bool>();
    r.base_cached = j.value("base_cached", false);
    r.route = j.value("route", std::string());
    for (const auto& m : j.at("maxcos"))  // null: a null direction, not tested
      r.maxcos.push_back(m.is_null() ? std::numeric_limits<double>::quiet_NaN() : m.get<double>());
    r.argmax = j.at("argmax").get<std::vector<int64_t>>();
    r.sigma = j.at("sigma").get<std::vector<double>>();
    r.sigma_ratio = j.at("sigma_ratio").get<std::vector<double>>();
    for (const auto& [key, n] : j.at("counts").items()) {
      r.eps.push_back(std::stod(key));
      r.counts.push_back(n.get<int>());
    }
    r.seconds = j.at("seconds").get<double>();
    if (j.contains("delta")) {
      const auto& d = j.at("delta");
      r.has_delta = true;
      r.delta = {d.at("fro").get<double>(), d.at("rel_fro").get<double>(),
                 d.at("spectral").get<double>(), d.at("rank").get<int64_t>(),
                 d.at("effective_rank").get<double>()};
    }
    if (j.contains("plot")) {
      const auto& p = j.at("plot");
      r.head_cols = p.at("head_cols").get<int>();
      r.cos_head = p.at("cos_head").get<std::vector<float>>();
      r.sigma_head = p.at("sigma_head").get<std::vector<double>>();
      r.base_sigma_head = p.at("base_sigma_head").get<std::vector<double>>();
      if (r.cos_head.size() != static_cast<size_t>(r.k) * static_cast<size_t>(r.head_cols))
        throw Error("plot data size differs from k x head_cols");
    }
    if (r.maxcos.size() != static_cast<size_t>(r.k) || r.argmax.size() != r.maxcos.size() ||
        r.sigma.size() != r.maxcos.size() || r.sigma_ratio.size() != r.maxcos.size())
      throw Error("array lengths differ from k");
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("journal record: ") + e.what());
  } catch (const std::logic_error& e) {
    throw Error(std::string("journal record: ") + e.what());
  }
}

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
  j["timing"] = {{"seconds", res.seconds}, {"resumed_records", res.resumed}};
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
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
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

}  // namespace

std::string build_matrices_csv(const AnalyzeResult& res) {
  std::ostringstream out;
  out << "tuned_index,tuned_path,name,tuned_name,layer,type,rows,cols,dtype,side,k,"
         "null_directions,identical,seconds,route,min_maxcos";
  for (double e : res.eps) out << ",intruders_eps_" << eps_key(e);
  const bool deltas = std::any_of(res.records.begin(), res.records.end(),
                                  [](const MatrixResult& r) { return r.has_delta; });
  if (deltas) out << ",delta_fro,delta_rel_fro,delta_spectral,delta_rank,delta_effective_rank";
  out << "\n";
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
    out << "\n";
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
