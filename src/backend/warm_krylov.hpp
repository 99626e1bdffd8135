// The full route's tuned side without the Gram: a block Krylov iteration (block_krylov.hpp) on
// the implicit operator W W^T (W^T W for the right side), a product being W (W^T x) at 4 m n
// flops a vector in fp64, started from the base's top vectors of that side, which a fine-tune
// moves little. Its Ritz residuals are computed from the real products, so a converged result
// is certified on the real W. Measured against the Gram route in bench/RESULTS.md (issue 12,
// item 5): 1.6-2.7x on one Llama-shaped layer's shapes, agreeing to 3e-15.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "indim/backend.hpp"

namespace indim::detail {

/// Below this min(out, in) the Gram route is as fast (measured on the CPU, k = 10: 320 x 320
/// 0.9x, 512 x 512 1.2x, 1024 x 1024 1.7x, 2048 x 2048 2.7x; bench/RESULTS.md).
constexpr int64_t kWarmMinOrder = 512;

struct WarmOptions {
  Side side = Side::Left;
  int64_t keep = 10;
  Precision precision = Precision::F64;  ///< of the vectors returned
  /// 0: max(min(out, in) / 4, four blocks): the Gram's own products cost m n min(out, in)
  /// flops, a product here 4 m n a vector; about three blocks are needed (bench/RESULTS.md).
  int64_t max_products = 0;
  std::function<void()> between_steps;
};

/// @brief Whether the iteration is tried at all for a [rows, cols] matrix: min(rows, cols) at
/// least kWarmMinOrder, and keep at most half of it, as the Gram route's subspace sweeps.
bool warm_applies(int64_t rows, int64_t cols, int64_t keep);

/// @brief The top keep of `w` ([m, n], analysed orientation) on the asked side(s), started from
/// `base`'s vectors of that side; sigma holds the leading max(keep, 50) values (those past keep
/// unchecked). nullopt with `why` when the base lacks the side's vectors or the iteration does
/// not reach 1e-12 theta_1 within its budget.
std::optional<Decomposition> warm_top(const Dense<double>& w, const Decomposition& base,
                                      const WarmOptions& options, std::string* why);

}  // namespace indim::detail
