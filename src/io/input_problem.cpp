#include "indim/error.hpp"

namespace indim {

const char* input_problem_name(InputProblem p) {
  switch (p) {
    case InputProblem::NotFound:
      return "not-found";
    case InputProblem::NotAFile:
      return "not-a-file";
    case InputProblem::TooLarge:
      return "too-large";
    case InputProblem::Malformed:
      return "malformed";
    case InputProblem::Ambiguous:
      return "ambiguous";
    case InputProblem::Mismatch:
      return "mismatch";
    case InputProblem::Unsupported:
      return "unsupported";
    case InputProblem::NonFinite:
      return "non-finite";
    case InputProblem::Overflow:
      return "overflow";
    case InputProblem::Changed:
      return "changed";
    case InputProblem::NothingSelected:
      return "nothing-selected";
    case InputProblem::Forbidden:
      return "forbidden";
    default:
      return "other";
  }
}

}  // namespace indim
