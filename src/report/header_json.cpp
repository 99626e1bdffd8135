// The run header (RunHeader) as JSON: the journal's first line, and report.json's inputs and
// settings. The field names are schema 1.x's.
#include <nlohmann/json.hpp>

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

}  // namespace

nlohmann::json header_to_json(const RunHeader& h) {
  nlohmann::json tuned = nlohmann::json::array();
  for (const auto& t : h.tuned) tuned.push_back(input_json(t));
  return {{"indim_journal", 1},
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
            {"delta", h.delta}}},
          {"layout", h.layout}};
}

}  // namespace indim::detail
