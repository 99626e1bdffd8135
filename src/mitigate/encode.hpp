// fp64 values written back as a checkpoint's stored dtype, rounded once (to nearest, ties to
// even) straight from fp64, so that a value that came from the dtype goes back to its own bits.
#pragma once

#include <cstdint>
#include <vector>

#include "indim/dtype.hpp"

namespace indim::detail {

/// True for the dtypes encode_values writes: F64, F32, F16, BF16.
bool encodable(DType t);

/// `n` values as little-endian `t` at `out` (n * bytes per element). Throws indim::Error for a
/// dtype encodable() refuses.
void encode_values(const double* values, size_t n, DType t, uint8_t* out);

/// The first of `values` that is finite but beyond `t`'s range once rounded to it (it would be
/// written as an infinity), or values.size() when every one fits.
size_t first_overflow(const std::vector<double>& values, DType t);

/// The same into a fresh buffer.
std::vector<uint8_t> encode_values(const std::vector<double>& values, DType t);

}  // namespace indim::detail
