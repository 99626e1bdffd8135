#include "service/job_request.hpp"

#include <functional>
#include <map>

#include "indim/error.hpp"
#include "io/json_strict.hpp"
#include "plan/regex.hpp"
#include "service/api_error.hpp"

namespace indim::service {

namespace {

using Json = nlohmann::json;
// Checks one option's value and returns it in its canonical form; throws ApiError.
using Check = std::function<Json(const std::string& name, const Json& value)>;

[[noreturn]] void refuse(const std::string& name, const std::string& why) {
  throw ApiError(400, "options." + name + ": " + why);
}

Check whole(long long lo, long long hi) {
  return [=](const std::string& name, const Json& v) -> Json {
    if (!v.is_number_integer() || v.get<long long>() < lo || v.get<long long>() > hi)
      refuse(name, "must be a whole number from " + std::to_string(lo) + " to " +
                       std::to_string(hi) + ", not " + v.dump().substr(0, 40));
    return v;
  };
}

Check one_of(std::vector<std::string> choices) {
  return [=](const std::string& name, const Json& v) -> Json {
    for (const auto& c : choices)
      if (v.is_string() && v.get<std::string>() == c) return v;
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    refuse(name, "must be one of " + list + ", not " + v.dump().substr(0, 40));
  };
}

Json boolean(const std::string& name, const Json& v) {
  if (!v.is_boolean()) refuse(name, "must be true or false, not " + v.dump().substr(0, 40));
  return v;
}

// A string or a list of strings, each a pattern RE2 compiles.
Json patterns(const std::string& name, const Json& v) {
  Json list = v.is_string() ? Json::array({v}) : v;
  if (!list.is_array() || list.size() > 256) refuse(name, "must be a pattern or a list of them");
  std::vector<std::string> texts;
  for (const Json& p : list) {
    if (!p.is_string()) refuse(name, "must hold patterns (strings), not " + p.dump().substr(0, 40));
    texts.push_back(p.get<std::string>());
  }
  try {
    detail::compile_option_patterns(texts, name);
  } catch (const UsageError& e) {
    refuse(name, e.what());
  }
  return list;
}

// A number or a list of 1 ... 64 numbers, each in (0, 1].
Json eps_values(const std::string& name, const Json& v) {
  Json list = v.is_number() ? Json::array({v}) : v;
  if (!list.is_array() || list.empty() || list.size() > 64)
    refuse(name, "must be a number or a list of 1 to 64 numbers in (0, 1]");
  for (const Json& e : list)
    if (!e.is_number() || !(e.get<double>() > 0.0 && e.get<double>() <= 1.0))
      refuse(name, "values must lie in (0, 1], not " + e.dump().substr(0, 40));
  return list;
}

// The low-rank route's certificate bound: 0 (the default) or a number in (0, 1).
Json tolerance(const std::string& name, const Json& v) {
  if (!v.is_number() || !(v.get<double>() >= 0.0 && v.get<double>() < 1.0))
    refuse(name, "must be 0 (the default) or a number in (0, 1), not " + v.dump().substr(0, 40));
  return v;
}

struct Option {
  Json fallback;
  Check check;
};

const std::map<std::string, Option>& known_options() {
  static const std::map<std::string, Option> table = {
      {"k", {10, whole(1, 1 << 30)}},
      {"eps", {Json::array({0.5}), eps_values}},
      {"precision", {"fp32", one_of({"fp32", "fp64"})}},
      {"side", {"left", one_of({"left", "right", "both"})}},
      {"algo", {"auto", one_of(algo_choices())}},
      {"include", {Json::array(), patterns}},
      {"exclude", {Json::array(), patterns}},
      {"split_fused", {false, boolean}},
      {"html", {false, boolean}},
      {"plot_matrices", {Json::array(), patterns}},
      {"plot_top", {4, whole(0, 24)}},
      {"delta", {false, boolean}},
      {"lowrank", {true, boolean}},
      {"lowrank_tol", {0.0, tolerance}},
      {"noise_floor", {"auto", one_of({"auto", "on", "off"})}},
  };
  return table;
}

}  // namespace

Json check_job_options(const Json& given) {
  if (!given.is_object()) throw ApiError(400, "options must be an object");
  const auto& table = known_options();
  for (const auto& [name, value] : given.items())
    if (table.count(name) == 0) {
      std::string known;
      for (const auto& [n, opt] : table) known += (known.empty() ? "" : ", ") + n;
      throw ApiError(400, "unknown option \"" + name.substr(0, 64) + "\"; known: " + known);
    }
  Json out = Json::object();
  for (const auto& [name, opt] : table)
    out[name] = given.contains(name) ? opt.check(name, given.at(name)) : opt.fallback;
  return out;
}

namespace {

Json lambdas(const std::string& name, const Json& v) {
  Json list = v.is_number() ? Json::array({v}) : v;
  if (!list.is_array() || list.empty() || list.size() > 16)
    refuse(name, "must be a number or a list of 1 to 16 numbers in [0, 1]");
  for (const Json& l : list)
    if (!l.is_number() || !(l.get<double>() >= 0.0 && l.get<double>() <= 1.0))
      refuse(name, "values must lie in [0, 1], not " + l.dump().substr(0, 40));
  return list;
}

Json controls(const std::string& name, const Json& v) {
  if (!v.is_array() || v.size() > 2) refuse(name, "must be a list of shrink and rescale");
  for (const Json& c : v)
    if (c != "shrink" && c != "rescale")
      refuse(name, "holds shrink and rescale only, not " + c.dump().substr(0, 40));
  return v;
}

Json adapter_rank(const std::string& name, const Json& v) {
  if (v.is_number_integer() && v.get<long long>() >= 1 && v.get<long long>() <= (1 << 20))
    return std::to_string(v.get<long long>());
  if (v == "exact" || v == "r") return v;
  refuse(name, "must be \"exact\", \"r\" or a rank from 1, not " + v.dump().substr(0, 40));
}

const std::map<std::string, Option>& mitigation_options() {
  static const std::map<std::string, Option> table = {
      {"lambda", {Json::array({0.75}), lambdas}},
      {"controls", {Json::array({"shrink", "rescale"}), controls}},
      {"adapter_rank", {"exact", adapter_rank}},
  };
  return table;
}

}  // namespace

Json check_mitigation_options(const Json& given, Json& rest) {
  if (!given.is_object()) throw ApiError(400, "options must be an object");
  rest = Json::object();
  Json out = Json::object();
  const auto& table = mitigation_options();
  for (const auto& [name, value] : given.items())
    if (table.count(name) == 0) rest[name] = value;
  for (const auto& [name, opt] : table)
    out[name] = given.contains(name) ? opt.check(name, given.at(name)) : opt.fallback;
  return out;
}

namespace {

// The options of a job of `kind`: a mitigate job's mitigation options, checked apart, then
// the analysis' (side left, nothing split: the intervention scales whole left directions).
Json job_options_of(const std::string& kind, const Json& given) {
  if (kind == "analyze") return check_job_options(given);
  Json rest;
  Json out = check_mitigation_options(given, rest);
  Json analysis = check_job_options(rest);
  if (analysis.at("side") != "left")
    throw ApiError(400, "options.side: a mitigate job scales left directions");
  if (analysis.at("split_fused") == true)
    throw ApiError(400, "options.split_fused: a mitigate job treats fused matrices whole");
  out.update(analysis);
  return out;
}

std::string path_field(const Json& v, const std::string& what) {
  if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().size() > 4096)
    throw ApiError(400, what + " must be a path (a non-empty string of at most 4096 bytes)");
  return v.get<std::string>();
}

std::vector<std::string> strings(const Json& j) {
  std::vector<std::string> out;
  for (const Json& s : j) out.push_back(s.get<std::string>());
  return out;
}

}  // namespace

JobSpec parse_job_spec(std::string_view body) {
  Json j;
  try {
    j = detail::parse_json_strict(body, "request body");
  } catch (const BadInput& e) {
    throw ApiError(400, e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  for (const auto& [key, value] : j.items())
    if (key != "base" && key != "tuned" && key != "options" && key != "kind")
      throw ApiError(400, "unknown field \"" + key.substr(0, 64) +
                              "\"; a job has kind, base, tuned and options");
  JobSpec spec;
  if (j.contains("kind")) {
    if (j.at("kind") != "analyze" && j.at("kind") != "mitigate")
      throw ApiError(400, "\"kind\" must be \"analyze\" or \"mitigate\"");
    spec.kind = j.at("kind").get<std::string>();
  }
  if (!j.contains("base")) throw ApiError(400, "a job needs \"base\"");
  if (!j.contains("tuned") || !j.at("tuned").is_array() || j.at("tuned").empty() ||
      j.at("tuned").size() > 1024)
    throw ApiError(400, "\"tuned\" must be a list of 1 to 1024 paths");
  spec.base = path_field(j.at("base"), "base");
  for (const Json& t : j.at("tuned")) spec.tuned.push_back(path_field(t, "each of tuned"));
  if (spec.kind == "mitigate" && spec.tuned.size() != 1)
    throw ApiError(400, "a mitigate job takes one fine-tune in \"tuned\"");
  spec.options = job_options_of(spec.kind, j.value("options", Json::object()));
  return spec;
}

Json spec_to_json(const JobSpec& spec) {
  Json j = {{"base", spec.base}, {"tuned", spec.tuned}, {"options", spec.options}};
  if (spec.kind != "analyze") j["kind"] = spec.kind;
  return j;
}

JobSpec spec_from_json(const Json& j) {
  JobSpec spec;
  spec.kind = j.value("kind", "analyze");
  spec.base = j.at("base").get<std::string>();
  spec.tuned = strings(j.at("tuned"));
  spec.options = j.at("options");
  return spec;
}

void apply_job_options(const Json& opt, AnalyzeOptions& o) {
  o.k = opt.at("k").get<int>();
  o.eps.clear();
  for (const Json& e : opt.at("eps")) o.eps.push_back(e.get<double>());
  o.precision = opt.at("precision") == "fp64" ? Precision::F64 : Precision::F32;
  const std::string side = opt.at("side").get<std::string>();
  o.side = parse_side(side).value_or(Side::Left);  // checked by the field table
  o.algo = opt.at("algo").get<std::string>();
  o.select.include = strings(opt.at("include"));
  o.select.exclude = strings(opt.at("exclude"));
  o.select.split_fused = opt.at("split_fused").get<bool>();
  o.html = opt.at("html").get<bool>();
  o.plot_matrices = strings(opt.at("plot_matrices"));
  o.plot_top = opt.at("plot_top").get<int>();
  o.delta = opt.at("delta").get<bool>();
  o.lowrank = opt.at("lowrank").get<bool>();
  o.lowrank_tol = opt.at("lowrank_tol").get<double>();
  const std::string floor = opt.at("noise_floor").get<std::string>();
  o.noise_floor = floor == "on"    ? AnalyzeOptions::NoiseFloorMode::On
                  : floor == "off" ? AnalyzeOptions::NoiseFloorMode::Off
                                   : AnalyzeOptions::NoiseFloorMode::Auto;
}

void apply_mitigation_options(const Json& opt, MitigateOptions& m) {
  m.lambdas.clear();
  for (const Json& l : opt.at("lambda")) m.lambdas.push_back(l.get<double>());
  m.controls = strings(opt.at("controls"));
  m.adapter_rank = opt.at("adapter_rank").get<std::string>();
}

}  // namespace indim::service
