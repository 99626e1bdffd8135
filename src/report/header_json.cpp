// The run header (RunHeader) as JSON: the journal's first line, and report.json's inputs and
// settings. The field names are schema 1.x's.
#include <nlohmann/json.hpp>

#include "indim/error.hpp"
#include "report/records.hpp"

namespace indim::detail {

namespace {

nlohmann::json input_json(const InputInfo& in) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : in.files)
    files.push_back({{"path", f.path}, {"bytes", f.bytes}, {"mtime", f.mtime}});
  nlohmann::json j = {{"path", in.path},
                      {"kind", in.kind},
                      {"tensors", in.tensors},
                      {"bytes", in.bytes},
                      {"files", files}};
  if (in.is_lora)
    j["lora"] = {{"r", in.lora.r},
                 {"lora_alpha", in.lora.alpha},
                 {"use_rslora", in.lora.use_rslora},
                 {"use_dora", in.lora.use_dora},
                 {"modules", in.lora.modules},
                 {"full_tensors", in.lora.full_tensors}};
  if (!in.hub.id.empty())
    j["hub"] = {{"id", in.hub.id},
                {"repo", in.hub.repo},
                {"revision", in.hub.revision},
                {"commit", in.hub.commit},
                {"subfolder", in.hub.subfolder}};
  return j;
}

nlohmann::json shard_json(const RunHeader::Shard& s) {
  nlohmann::json plan = nlohmann::json::array();
  for (const auto& e : s.plan)
    plan.push_back({{"name", e.name}, {"shard", e.shard}, {"tuned", e.tuned}});
  return {{"index", s.index}, {"count", s.count}, {"plan_hash", s.plan_hash}, {"plan", plan}};
}

InputInfo input_from_json(const nlohmann::json& j) {
  InputInfo in;
  in.path = j.at("path").get<std::string>();
  in.kind = j.at("kind").get<std::string>();
  in.tensors = j.at("tensors").get<size_t>();
  in.bytes = j.at("bytes").get<uint64_t>();
  for (const auto& f : j.at("files"))
    in.files.push_back({f.at("path").get<std::string>(), f.at("bytes").get<uint64_t>(),
                        f.at("mtime").get<int64_t>()});
  if (j.contains("lora")) {
    const auto& l = j.at("lora");
    in.is_lora = true;
    in.lora = {l.at("r").get<int>(),           l.at("lora_alpha").get<double>(),
               l.at("use_rslora").get<bool>(), l.at("use_dora").get<bool>(),
               l.at("modules").get<size_t>(),  l.at("full_tensors").get<size_t>()};
  }
  if (j.contains("hub")) {
    const auto& h = j.at("hub");
    in.hub = {h.at("id").get<std::string>(), h.at("repo").get<std::string>(),
              h.at("revision").get<std::string>(), h.at("commit").get<std::string>(),
              h.at("subfolder").get<std::string>()};
  }
  return in;
}

}  // namespace

RunHeader::Shard shard_from_json(const nlohmann::json& j) {
  RunHeader::Shard s;
  s.index = j.at("index").get<int>();
  s.count = j.at("count").get<int>();
  s.plan_hash = j.at("plan_hash").get<std::string>();
  for (const auto& e : j.at("plan"))
    s.plan.push_back({e.at("name").get<std::string>(), e.at("shard").get<int>(),
                      e.at("tuned").get<std::vector<int>>()});
  return s;
}

RunHeader header_from_json(const nlohmann::json& j) {
  try {
    RunHeader h;
    h.schema_version = j.at("schema_version").get<std::string>();
    h.base = input_from_json(j.at("inputs").at("base"));
    for (const auto& t : j.at("inputs").at("tuned")) h.tuned.push_back(input_from_json(t));
    const auto& s = j.at("settings");
    h.k = s.at("k").get<int>();
    h.eps = s.at("eps").get<std::vector<double>>();
    h.eps_grid = s.at("eps_grid").get<std::vector<double>>();
    h.precision = s.at("precision").get<std::string>();
    h.side = s.at("side").get<std::string>();
    h.backend = s.at("backend").get<std::string>();
    h.algo = s.at("algo").get<std::string>();
    h.include = s.at("include").get<std::vector<std::string>>();
    h.exclude = s.at("exclude").get<std::vector<std::string>>();
    h.delta = s.at("delta").get<bool>();
    h.lowrank = s.value("lowrank", true);  // journals before the low-rank route had none
    h.lowrank_tol = s.value("lowrank_tol", 0.0);
    h.layout = j.at("layout").get<std::string>();
    if (j.contains("shard")) h.shard = shard_from_json(j.at("shard"));
    return h;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("run header: ") + e.what());
  }
}

nlohmann::json header_to_json(const RunHeader& h) {
  nlohmann::json tuned = nlohmann::json::array();
  for (const auto& t : h.tuned) tuned.push_back(input_json(t));
  nlohmann::json j = {{"indim_journal", 1},
                      {"schema_version", h.schema_version},
                      {"inputs", {{"base", input_json(h.base)}, {"tuned", tuned}}},
                      {"settings",
                       {{"k", h.k},
                        {"eps", h.eps},
                        {"eps_grid", h.eps_grid},
                        {"precision", h.precision},
                        {"side", h.side},
                        {"backend", h.backend},
                        {"algo", h.algo},
                        {"include", h.include},
                        {"exclude", h.exclude},
                        {"delta", h.delta},
                        {"lowrank", h.lowrank},
                        {"lowrank_tol", h.lowrank_tol}}},
                      {"layout", h.layout}};
  if (h.shard.count > 1) j["shard"] = shard_json(h.shard);
  return j;
}

}  // namespace indim::detail
