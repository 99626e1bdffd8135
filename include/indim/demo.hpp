// Generated checkpoints for `indim demo`, the tests and the benchmarks.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/dtype.hpp"

namespace indim {

/// @brief A random [rows, cols] matrix with orthonormal columns (rows >= cols), from the QR of
/// a Gaussian matrix; deterministic for a given generator state.
Dense<double> random_orthonormal(int64_t rows, int64_t cols, std::mt19937_64& rng);

/// @brief U diag(s) V^T for row-major U [out, r], V [in, r].
Dense<double> compose_svd(const Dense<double>& u, const std::vector<double>& s,
                          const Dense<double>& v);

/// @brief A weight [out, in] with a decaying spectrum like a trained layer's:
/// sigma_i = scale * (i + 1)^-0.6, random singular vectors.
Dense<double> random_weight(int64_t out, int64_t in, double scale, std::mt19937_64& rng);

struct DemoOptions {
  int hidden = 256;
  int intermediate = 688;
  int kv_dim = 128;  ///< grouped-query k/v projections: [kv_dim, hidden]
  int layers = 4;
  int vocab = 512;
  int lora_rank = 8;
  int base_shards = 2;  ///< base written as a sharded checkpoint when > 1
  DType dtype = DType::BF16;
  uint64_t seed = 20241028;
};

struct DemoPaths {
  std::string base;          ///< directory
  std::string full;          ///< directory: dense small change to every matrix
  std::string lora;          ///< directory: rank-r change of large norm to q_proj and v_proj only
  std::string lora_adapter;  ///< the same change as a PEFT adapter folder (lora_alpha = 2 r)
};

/// @brief Writes a Llama-style base, a full fine-tune and a LoRA-style fine-tune (merged) under
/// `dir`, as safetensors in `options.dtype`.
DemoPaths generate_demo(const std::string& dir, const DemoOptions& options = {});

}  // namespace indim
