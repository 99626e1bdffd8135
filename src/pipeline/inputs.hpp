// The load stage: a run's checkpoints and adapters opened, matched against the base, checked
// (shapes, dtypes, something selected), and described for the run header.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "indim/hub.hpp"
#include "indim/tuned.hpp"

namespace indim::detail {

struct RunInputs {
  /// Opens and matches everything `o` names; warnings of the readers go to `note`. Throws
  /// indim::BadInput for a mismatched shape, an unanalysable dtype or an empty selection.
  RunInputs(const AnalyzeOptions& o, const std::function<void(const std::string&)>& note);
  RunInputs(const RunInputs&) = delete;
  RunInputs& operator=(const RunInputs&) = delete;

  InputPath base_path;                 ///< o.base, resolved (a hub id to its snapshot)
  std::vector<InputPath> tuned_paths;  ///< o.tuned, resolved
  Checkpoint base;
  ModelLayout layout;
  std::vector<TunedInput> tuned;
  std::vector<MatchTable> tables;
};

/// The run header: inputs as read, settings as resolved (the backend's name and algorithm).
RunHeader make_header(const AnalyzeOptions& o, const RunInputs& in, const Backend& backend);

}  // namespace indim::detail
