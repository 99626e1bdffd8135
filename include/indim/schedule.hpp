// Spreading an analysis over several workers (GPUs, or CPU workers).
#pragma once

#include <cstdint>
#include <vector>

namespace indim {

/// @brief Work of analysing one base matrix [rows, cols] against `tuned` fine-tunes: flops of
/// its decompositions, up to a constant (m n min(m, n) each).
double matrix_cost(int64_t rows, int64_t cols, int tuned);

/// @brief Assigns items to `workers`: longest first, each onto the least-loaded worker (lowest
/// index on ties). Deterministic for the same costs; returns the worker of every item.
std::vector<int> assign_workers(const std::vector<double>& costs, int workers);

}  // namespace indim
