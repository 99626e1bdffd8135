// Help text for --backend and --algo, read from the backend registry.
#pragma once

#include <string>

namespace indim::cli {

/// "cuda (CUDA devices) or cpu; auto: the first available".
std::string backends_help();
/// "gram64 (cuda, cpu; the default), gesvd (cuda), ...".
std::string algos_help();

}  // namespace indim::cli
