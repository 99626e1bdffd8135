// The intervention and its controls on one matrix, in fp64 and in the matrix's analysed
// orientation ([out, in]; left singular vectors u_i of the intruders I, U = [u_i], q = |I|):
//   intruders-L: W_L = W + (L - 1) U U^T W  (= W + (L - 1) sum sigma_i u_i v_i^T)
//   shrink-L:    W0 + c dW, c = ||W_L - W0||_F / ||dW||_F
//   rescale-L:   W0 + r (W_L - W0), r = ||dW||_F / ||W_L - W0||_F
// on a dense W (a full fine-tune), or on a LoRA's factors (dW = s B A), where W_L's update is
// again a product of factors of rank r + q: [B | -(L - 1)... U] [A; U^T W], exact.
#pragma once

#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/mitigate.hpp"

namespace indim::detail {

struct VariantSpec {
  std::string kind;  ///< "intruders", "shrink", "rescale"
  double lambda = 1;
  std::string folder() const;  ///< "intruders-0.75"
};

/// Every variant of the options, per lambda: intruders, then the controls asked for.
std::vector<VariantSpec> variant_specs(const MitigateOptions& o);

/// What every variant of a matrix starts from: U (row-major [m, q]), G = U^T W and G0 = U^T W0
/// (row-major [q, n]), ||dW||_F, ||W||_F.
struct MatrixStart {
  int64_t m = 0, n = 0, q = 0;
  std::vector<double> u, g, g0;
  double dw_fro = 0, w_fro = 0;
};

/// A full fine-tune's matrix: W0 and W as analysed.
MatrixStart dense_start(const Dense<double>& w0, const Dense<double>& w, std::vector<double> u,
                        int64_t q);
/// W_new of `v` as analysed, and its figures in `out`.
Dense<double> dense_variant(const MatrixStart& s, const Dense<double>& w0, const Dense<double>& w,
                            const VariantSpec& v, MitigatedMatrix& out);

/// A LoRA's update as analysed: dW = scale * b a, b [m, r], a [r, n].
struct Factors {
  Dense<double> b, a;
  double scale = 1;
  int64_t rank() const { return b.cols; }
};

/// An adapter's module: W0 as analysed and its factors.
MatrixStart factor_start(const Dense<double>& w0, const Factors& f, std::vector<double> u,
                         int64_t q);
/// The factors of `v` (rank r + q for a variant with intruders scaled, r for shrink), cut to
/// rank `max_rank` (0: none) as PEFT cuts them (the top singular triplets, sqrt(sigma) on each
/// side), and their figures in `out` (truncation_error relative to the untruncated update).
Factors factor_variant(const MatrixStart& s, const Factors& f, const VariantSpec& v,
                       int64_t max_rank, MitigatedMatrix& out);

/// ||scale * b a||_F without forming b a.
double factors_fro(const Factors& f);

}  // namespace indim::detail
