// Error types of the indim library. The CLI maps them to exit codes:
// UsageError -> 1, BadInput -> 2, any other Error (or std::exception) -> 3.
#pragma once

#include <stdexcept>
#include <string>

namespace indim {

/// @brief Base of every error the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief The caller asked for something that cannot be done as asked (bad option, bad flag mix).
class UsageError : public Error {
 public:
  using Error::Error;
};

/// @brief An input file is malformed or inconsistent; the message names the file, the tensor and
/// the problem.
class BadInput : public Error {
 public:
  using Error::Error;
};

/// @brief A run stopped by its CancelToken: the finished records are in its journal, and
/// `--resume` completes it.
class Cancelled : public Error {
 public:
  using Error::Error;
};

/// @brief A CUDA runtime call failed; the message holds the call, file:line and status name.
class CudaError : public Error {
 public:
  using Error::Error;
};

/// @brief A cuBLAS call failed.
class CublasError : public Error {
 public:
  using Error::Error;
};

/// @brief A cuSOLVER call failed, or a solver reported a failure (info) for a matrix.
class CusolverError : public Error {
 public:
  using Error::Error;
};

/// @brief Process exit codes documented in the README and used by the CLI.
enum ExitCode : int { kExitOk = 0, kExitUsage = 1, kExitBadInput = 2, kExitRuntime = 3 };

}  // namespace indim
