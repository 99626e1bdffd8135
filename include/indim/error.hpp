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

/// @brief What kind of problem a BadInput is, for callers that act on it (a service maps it to
/// a status; tests match it instead of message text).
enum class InputProblem {
  Other,
  NotFound,         ///< no such file or directory
  NotAFile,         ///< a FIFO, device, directory or symbolic-link loop where a file belongs
  TooLarge,         ///< over a size limit (headers, indexes, configs)
  Malformed,        ///< a header, index, JSON or config that does not parse or validate
  Ambiguous,        ///< a folder holding no checkpoint, or more than one
  Mismatch,         ///< base and tuned (or adapter) tensors that do not fit each other
  Unsupported,      ///< valid but not analysable (a dtype, DoRA on an embedding, a layout)
  NonFinite,        ///< a NaN or infinity in a tensor, or produced by a merge
  Overflow,         ///< finite values whose decomposition overflows the working precision
  Changed,          ///< a file changed or shrank while being read
  NothingSelected,  ///< no matrix selected for analysis
  Forbidden,        ///< a path, or a file read through it, outside the folders it is confined to
};
/// @brief "not-found", "not-a-file", ...: the kind as JSON and logs spell it.
const char* input_problem_name(InputProblem p);

/// @brief An input file is malformed or inconsistent; the message names the file, the tensor and
/// the problem.
class BadInput : public Error {
 public:
  explicit BadInput(const std::string& what, InputProblem problem = InputProblem::Other)
      : Error(what), problem_(problem) {}
  BadInput(InputProblem problem, const std::string& what) : Error(what), problem_(problem) {}
  InputProblem problem() const { return problem_; }

 private:
  InputProblem problem_;
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
