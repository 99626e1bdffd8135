#include "mitigate/mitigation_report.hpp"

#include <cmath>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "report/html_util.hpp"

namespace indim::detail {

namespace {

nlohmann::ordered_json variant_json(const MitigatedMatrix& m, const VariantSpec& v, bool adapter) {
  nlohmann::ordered_json j = {{"variant", v.folder()},        {"kind", m.variant},
                              {"lambda", m.lambda},           {"factor", m.factor},
                              {"sigma_after", m.sigma_after}, {"update_fro", m.update_fro},
                              {"rel_change", m.rel_change}};
  if (adapter) j["rank"] = m.rank, j["truncation_error"] = m.truncation_error;
  return j;
}

nlohmann::ordered_json record_json(const MitigationRecord& r,
                                   const std::vector<VariantSpec>& specs) {
  nlohmann::ordered_json intruders = nlohmann::ordered_json::array();
  for (size_t i = 0; i < r.intruders.size(); ++i)
    intruders.push_back({{"j", r.intruders[i]}, {"sigma", r.sigma[i]}, {"maxcos", r.maxcos[i]}});
  nlohmann::ordered_json variants = nlohmann::ordered_json::array();
  for (size_t i = 0; i < r.variants.size(); ++i)
    variants.push_back(variant_json(r.variants[i], specs[i], r.adapter));
  nlohmann::ordered_json j = {{"name", r.name},
                              {"tuned_name", r.tuned_name},
                              {"layer", r.layer},
                              {"type", r.type},
                              {"shape", r.shape},
                              {"conv1d", r.conv1d},
                              {"embedding", r.embedding},
                              {"adapter", r.adapter},
                              {"intruders", intruders},
                              {"update_fro", r.update_fro},
                              {"weight_fro", r.weight_fro}};
  if (r.adapter) j["rank"] = r.rank;
  j["variants"] = variants;
  return j;
}

std::string when() {
  char buf[32];
  std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

}  // namespace

nlohmann::ordered_json mitigation_json(const MitigationResult& r, const MitigateOptions& o,
                                       const std::vector<VariantSpec>& specs) {
  const AnalyzeOptions& a = o.analysis;
  const RunHeader& h = r.analysis.header;
  nlohmann::ordered_json variants = nlohmann::ordered_json::array();
  for (size_t i = 0; i < specs.size(); ++i) {
    int changed = 0;
    for (const auto& rec : r.records) changed += rec.variants[i].rel_change > 0 ? 1 : 0;
    variants.push_back({{"name", specs[i].folder()},
                        {"kind", specs[i].kind},
                        {"lambda", specs[i].lambda},
                        {"path", i < r.variant_dirs.size() ? r.variant_dirs[i] : std::string()},
                        {"matrices_changed", changed}});
  }
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  for (const auto& rec : r.records) records.push_back(record_json(rec, specs));
  return {{"mitigation_version", "1.0"},
          {"tool", {{"name", "indim"}, {"version", INDIM_VERSION}}},
          {"created", when()},
          {"base", h.base.path},
          {"tuned", h.tuned.empty() ? std::string() : h.tuned.front().path},
          {"tuned_kind", h.tuned.empty() ? std::string() : h.tuned.front().kind},
          {"settings",
           {{"k", a.k},
            {"eps", a.eps.front()},
            {"lambdas", o.lambdas},
            {"controls", o.controls},
            {"adapter_rank", o.adapter_rank},
            {"include", a.select.include},
            {"exclude", a.select.exclude},
            {"precision", precision_name(a.precision)}}},
          {"analysis", "report.json"},
          {"seconds", r.seconds},
          {"variants", variants},
          {"matrices", records}};
}

std::string mitigation_html(const MitigationResult& r, const std::vector<VariantSpec>& specs) {
  using html::esc;
  using html::fmt;
  std::ostringstream o;
  o << "<section id=\"mitigation\"><h2>Mitigation</h2><p>Each intruder's sigma scaled by lambda "
       "(<b>intruders</b>), the whole update shrunk to the same ||W - W0||<sub>F</sub> "
       "(<b>shrink</b>), or the scaled update brought back to the original norm "
       "(<b>rescale</b>). Folders:";
  for (size_t i = 0; i < specs.size(); ++i)
    o << " <code>"
      << esc(i < r.variant_dirs.size()
                 ? std::filesystem::path(r.variant_dirs[i]).filename().string()
                 : specs[i].folder())
      << "</code>";
  o << ".</p><table class=\"grid sortable\" id=\"mitigation-table\"><thead><tr><th>variant</th>"
       "<th>matrix</th><th>intruders (j: sigma before &#8594; after)</th><th>||dW|| before</th>"
       "<th>||dW|| after</th><th>relative change of W</th><th>rank</th><th>truncation "
       "error</th></tr></thead><tbody>";
  for (const auto& rec : r.records)
    for (size_t i = 0; i < rec.variants.size(); ++i) {
      const MitigatedMatrix& m = rec.variants[i];
      std::string sig;
      for (size_t q = 0; q < rec.intruders.size(); ++q)
        sig += (q ? ", " : "") + std::to_string(rec.intruders[q]) + ": " +
               fmt("%.4g", rec.sigma[q]) + " &#8594; " +
               fmt("%.4g", q < m.sigma_after.size() ? m.sigma_after[q] : NAN);
      o << "<tr class=\"mitigation-row\"><td>" << esc(specs[i].folder()) << "</td><td>"
        << esc(rec.name) << "</td><td>" << sig << "</td><td>" << fmt("%.4g", rec.update_fro)
        << "</td><td>" << fmt("%.4g", m.update_fro) << "</td><td>" << fmt("%.3g", m.rel_change)
        << "</td><td>" << (rec.adapter ? std::to_string(m.rank) : std::string("-")) << "</td><td>"
        << (rec.adapter ? fmt("%.3g", m.truncation_error) : std::string("-")) << "</td></tr>";
    }
  o << "</tbody></table>";
  if (r.records.empty())
    o << "<p>No matrix has intruders at this eps: every variant is the fine-tune.</p>";
  o << "</section>\n";
  return o.str();
}

}  // namespace indim::detail
