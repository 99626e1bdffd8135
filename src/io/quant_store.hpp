// What a checkpoint keeps for its quantised weights: the logical entries of MXFP4 weights, each
// weight's QuantRef, the scale tensors set aside, and what pairing warned about.
#pragma once

#include <deque>
#include <map>
#include <string>
#include <vector>

#include "indim/quant.hpp"

namespace indim::detail {

struct QuantStore {
  QuantConfig config;
  std::deque<TensorInfo> logical;  // deque: the TensorRefs point into it
  std::deque<QuantRef> refs;
  std::map<std::string, TensorRef> scales;
  std::vector<std::string> warnings;
};

}  // namespace indim::detail
