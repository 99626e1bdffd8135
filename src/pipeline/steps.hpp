// Fine-tunes as a trajectory: the training step of each, from the numbers in their names
// (checkpoint-500, checkpoint-1000, ...), else their order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace indim::detail {

/// The number a fine-tune's name carries: the last run of digits in the last path component
/// (less `.safetensors` / `.safetensors.index.json` / `.json`), or in the folder above when the
/// file's own name has none (run/checkpoint-500/model.safetensors: 500); -1 when neither has one.
int64_t step_in_name(const std::string& path);

/// The steps of `paths` in order: their numbers when every one has a number and no two are
/// equal (`from` = "names"), else their positions 0, 1, ... (`from` = "order").
std::vector<int64_t> fine_tune_steps(const std::vector<std::string>& paths, std::string* from);

}  // namespace indim::detail
