// mitigation.json and the mitigation section of report.html: per changed matrix, the
// intruders scaled, their sigma before and after, ||dW||_F before and after, the relative
// change of W and (adapters) the rank written and the truncation error, per variant.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "indim/mitigate.hpp"
#include "mitigate/variants.hpp"

namespace indim::detail {

nlohmann::ordered_json mitigation_json(const MitigationResult& r, const MitigateOptions& o,
                                       const std::vector<VariantSpec>& specs);

std::string mitigation_html(const MitigationResult& r, const std::vector<VariantSpec>& specs);

}  // namespace indim::detail
