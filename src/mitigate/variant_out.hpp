// Where one variant's tensors go: a full checkpoint's files copied into the variant's folder and
// patched in place (same names, dtypes, shards and index; untouched bytes as they were), or a
// PEFT adapter rewritten with new factors and rank/alpha patterns.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/tuned.hpp"
#include "mitigate/variants.hpp"

namespace indim::detail {

class VariantOut {
 public:
  virtual ~VariantOut() = default;
  /// `n` bytes of tensor `t` from `offset` (relative to its data), as the variant holds them now.
  virtual std::vector<uint8_t> read(const TensorRef& t, uint64_t offset, size_t n) = 0;
  /// Overwrites them.
  virtual void write(const TensorRef& t, uint64_t offset, const std::vector<uint8_t>& bytes) = 0;
  /// An adapter's module: new factors in the stored orientation (`a` [rank, in], `b` [out,
  /// rank]; nullptr: the stored ones kept) and the lora_alpha that gives its scale at `rank`.
  virtual void set_module(const LoraModule& m, const Dense<double>* a, const Dense<double>* b,
                          int64_t rank, double alpha) = 0;
  /// Writes what is held in memory and renames the folder into place.
  virtual void publish() = 0;
  virtual const std::string& final_path() const = 0;
};

/// The variant `v` of `tuned` under `out_dir`, its folder prepared (files copied).
std::unique_ptr<VariantOut> make_variant_out(const std::string& out_dir, const VariantSpec& v,
                                             const TunedInput& tuned);

}  // namespace indim::detail
