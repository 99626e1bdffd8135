// Records the library does not expose: a tuned matrix whose bytes equal its base's.
#pragma once

#include "indim/analyze.hpp"

namespace indim::detail {

/// A tuned tensor equal to its base keeps every direction: maxcos 1 at its own index.
MatrixResult identical_record(const Decomposition& base, Side side, int k,
                              const std::vector<double>& eps);

}  // namespace indim::detail
