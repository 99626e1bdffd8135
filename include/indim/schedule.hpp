// What a plan's units cost, and spreading an analysis over several workers (GPUs, or CPU
// workers) by those costs.
#pragma once

#include <cstdint>
#include <vector>

namespace indim {

/// @brief Work of analysing one base matrix [rows, cols] against `tuned` fine-tunes: flops of
/// its decompositions, up to a constant (m n min(m, n) each).
double matrix_cost(int64_t rows, int64_t cols, int tuned);

/// @brief Work of one LoRA adapter of rank `rank` on a [rows, cols] matrix by the exact
/// low-rank route, in matrix_cost's units: m n (a + b r), from the route's and the Gram's
/// times measured on the CPU backend (bench/RESULTS.md, "LoRA low-rank route").
double lowrank_cost(int64_t rows, int64_t cols, int64_t rank);

/// @brief The largest LoRA rank for which the low-rank route is cheaper than the full route
/// on an [rows, cols] matrix, the full route being the Gram's or (`warm_full`) the
/// warm-started iteration's (measured: bench/RESULTS.md, "LoRA low-rank route").
int64_t lowrank_max_rank(int64_t rows, int64_t cols, bool warm_full);

/// @brief Assigns items to `workers`: longest first, each onto the least-loaded worker (lowest
/// index on ties). Deterministic for the same costs; returns the worker of every item.
std::vector<int> assign_workers(const std::vector<double>& costs, int workers);

}  // namespace indim
