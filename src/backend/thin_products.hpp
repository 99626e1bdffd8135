// Thin products with a row-major matrix kept in its stored element type: y = S x and
// y = S^T x for x of a few fp64 columns, each element of S widened to fp64 as it is read (bf16
// and fp32 values are fp64 values) and every sum kept in fp64. The low-rank route's passes over
// W0 and U0 (lowrank_products.cpp) use them instead of an fp64 copy of either and OpenBLAS,
// which repacks the large operand on every call of so few columns (bench/RESULTS.md, "LoRA
// low-rank route: products in the stored type").
#pragma once

#include <cstdint>

#include "indim/dtype.hpp"

namespace indim::detail {

/// A row-major [rows, cols] matrix of `dtype` elements (one thin_supports).
struct StoredMatrix {
  const void* data = nullptr;
  DType dtype = DType::F64;
  int64_t rows = 0, cols = 0;
};

/// True for the element types the products read as stored: BF16, F32 and F64.
bool thin_supports(DType dtype);

/// @brief y [rows, c] = S x for x [cols, c]; x and y row-major fp64, c >= 1.
void thin_times(const StoredMatrix& s, const double* x, int64_t c, double* y);

/// @brief y [cols, c] = S^T x for x [rows, c]; x and y row-major fp64, c >= 1.
void thin_times_transposed(const StoredMatrix& s, const double* x, int64_t c, double* y);

}  // namespace indim::detail
