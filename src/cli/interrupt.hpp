// Ctrl-C during a run: the first SIGINT (or SIGTERM) cancels the run between units, so the
// finished records stay in a resumable journal; a second stops the units in flight at their
// next sweep (the journal stays resumable); a third ends the process.
#pragma once

#include "indim/analyze.hpp"

namespace indim::cli {

/// Installs the handlers for its lifetime (one scope at a time) and restores the previous ones.
class InterruptScope {
 public:
  InterruptScope();
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
  const CancelToken& token() const;
};

}  // namespace indim::cli
