// Compute backends: decompose a matrix into singular vectors, and compare two vector sets.
// Host-only interface; the CUDA backend implements it behind the same types.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "indim/dtype.hpp"

namespace indim {

enum class Precision { F32, F64 };
const char* precision_name(Precision p);

/// @brief Which singular vectors a decomposition keeps.
enum class Side { Left, Right, Both };
const char* side_name(Side s);
/// @brief The inverse of side_name ("left", "right", "both"); nullopt for anything else.
std::optional<Side> parse_side(const std::string& name);

/// @brief A dense row-major matrix.
template <typename T>
struct Dense {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<T> data;
  T& at(int64_t r, int64_t c) { return data[static_cast<size_t>(r * cols + c)]; }
  const T& at(int64_t r, int64_t c) const { return data[static_cast<size_t>(r * cols + c)]; }
};

/// @brief Singular vectors as columns of a row-major [dim, count] matrix, in the precision of
/// the decomposition: the storage is one vector of float or of double, never both.
struct Vectors {
  int64_t dim = 0;
  int64_t count = 0;
  std::variant<std::vector<float>, std::vector<double>> data;
  /// 0, or a process-unique id (new_vectors_id()) given by an owner that keeps these values
  /// unchanged while the id is set (a base decomposition shared by its units): a backend may
  /// then keep a copy of them (on its device) and reuse it for every call with that id.
  uint64_t id = 0;

  /// @brief dim x count zeros of precision p.
  static Vectors zeros(Precision p, int64_t dim, int64_t count) {
    Vectors v;
    v.dim = dim, v.count = count;
    const size_t n = static_cast<size_t>(dim * count);
    if (p == Precision::F32)
      v.data = std::vector<float>(n);
    else
      v.data = std::vector<double>(n);
    return v;
  }
  Precision precision() const { return data.index() == 0 ? Precision::F32 : Precision::F64; }
  size_t size() const {
    return std::visit([](const auto& x) { return x.size(); }, data);
  }
  double at(int64_t i, int64_t j) const {
    const size_t idx = static_cast<size_t>(i * count + j);
    return std::visit([idx](const auto& x) { return static_cast<double>(x[idx]); }, data);
  }
  /// @brief The storage of element type T (float or double); std::bad_variant_access when the
  /// vectors hold the other.
  template <typename T>
  std::vector<T>& values() {
    return std::get<std::vector<T>>(data);
  }
  template <typename T>
  const std::vector<T>& values() const {
    return std::get<std::vector<T>>(data);
  }
};

/// @brief A new Vectors::id, never 0 and never given before in this process. Thread-safe.
uint64_t new_vectors_id();

/// @brief Economy SVD of an [out, in] weight: singular values (descending; all min(out, in) of
/// them, except that a decomposition asked for its top `keep` only may hold just the leading
/// max(keep, 50), those beyond `keep` to about 1e-3 sigma_1, as spectra plots need) and the
/// kept left (U, dim = out) and/or right (V, dim = in) vectors.
struct Decomposition {
  std::vector<double> sigma;
  Vectors left;
  Vectors right;
  /// How the backend computed it: "gesdd", "gesvd", "gesvdp", "gesvdj", "gram64/syevd",
  /// "gram64/subspace, N sweeps" or "gram64/tridiagonal" (the top k after a reduction).
  std::string route;
  /// The low-rank route's vectors in the coordinates of the base's, per side: row-major
  /// [keep, p], entry (j, i) = <y_j, x_i> for its vector y_j and the base's x_i, read off the
  /// eigenvectors it solved for (DESIGN.md, Backends); empty from every other route. The
  /// records then take maxcos from them instead of comparing the vectors.
  std::vector<double> left_in_base, right_in_base;
};

/// @brief Per tuned vector j < k: max_i |<y_j, x_i>| over all base vectors, and its argmax;
/// optionally the block |<y_j, x_i>| for i < head_cols, kept for plots.
struct Similarity {
  std::vector<double> maxcos;
  std::vector<int64_t> argmax;
  int64_t head_cols = 0;
  std::vector<float> head;  ///< row-major [k, head_cols]
};

/// @brief The Similarity of k tuned vectors from their cosines `c` (row-major [k, nb]) with
/// nb base vectors: per row the largest |c| and its index, and |c| for the first head_cols.
Similarity similarity_of(const std::vector<double>& c, int64_t k, int64_t nb, int64_t head_cols);

/// @brief A low-rank update merged into a stored base before decomposing, as PEFT merges a
/// LoRA: W = W0 + scale * B A in the stored orientation (when `transposed`, W0 is stored
/// [in, out] and receives (B A)^T), then, when `magnitude` is not empty, DoRA's rescaling of
/// output o by magnitude[o] / ||W[o]||.
struct LowRankUpdate {
  Dense<double> a;  ///< [r, in]
  Dense<double> b;  ///< [out, r]
  double scale = 1;
  bool transposed = false;
  std::vector<double> magnitude;
};

/// @brief The exact low-rank route's problem: the tuned matrix W = W0 + scale B A of a LoRA
/// (`update`, in the stored orientation, as decompose_merged takes it) whose base W0 (stored
/// bytes) is already decomposed (`base`: every min(out, in) vector on `side`, with sigma).
struct LowRankProblem {
  const void* base_bytes = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;  ///< the base as stored
  const LowRankUpdate* update = nullptr;
  bool conv1d = false;  ///< analysed transposed
  const Decomposition* base = nullptr;
  Side side = Side::Left;
  int64_t keep = 10;
  /// Certificate bound: every top-keep ||W W^T u_j - theta_j u_j|| at most tol theta_1 on
  /// the real W. 0: the default of the working precision (kLowRankTolF32 or kLowRankTolF64).
  double tol = 0;
  std::string base_label, label;
};
constexpr double kLowRankTolF32 = 1e-6, kLowRankTolF64 = 1e-10;

/// @brief Bytes of one input of a decomposition (a tensor's stored bytes, usually inside a
/// mapped checkpoint file).
struct ByteRange {
  const void* data = nullptr;
  size_t bytes = 0;
};

/// @brief An input announced for staging: its bytes and, for a base a cache may hold, the
/// question a backend asks just before it would copy them: `cached()` true means the cache
/// serves that base, so its bytes will not be read and are not copied. Asking may hash the
/// bytes (it runs on the backend's loader thread, overlapping the decompositions before it).
struct StagedInput {
  ByteRange range;
  std::function<bool()> cached;
  StagedInput(ByteRange r = {}, std::function<bool()> c = {})  // NOLINT: a range converts
      : range(r), cached(std::move(c)) {}
};

/// @brief Applies `u` to `w` (stored orientation) on the host. Throws indim::BadInput
/// "<label>: merging the adapter gives a non-finite value at [i, j]".
template <typename T>
void apply_update(Dense<T>& w, const LowRankUpdate& u, const std::string& label);

class CancelToken;
struct QuantScales;
namespace detail {
struct LowRankWorkspace;
class LowRankProducts;
}  // namespace detail

/// @brief A compute backend. Implementations may keep workspaces between calls.
class Backend {
 public:
  virtual ~Backend() = default;
  /// @brief Long iterations (the Gram route's subspace sweeps) check `token` between sweeps
  /// and throw indim::Cancelled once it asks to stop now (CancelToken::stop_now).
  void watch(const CancelToken* token) { cancel_ = token; }
  virtual std::string name() const = 0;
  /// @brief The decomposition algorithm in use ("gesdd", "gram64", "gesvd", "gesvdp", "gesvdj").
  virtual std::string algo() const = 0;
  virtual Precision precision() const = 0;
  /// @brief Economy SVD of `w` ([out, in], row-major, as stored by nn.Linear), keeping the
  /// first `keep` vectors on `side` (keep <= 0 or > min(out, in): all). `label` names the
  /// tensor in errors. `w` is consumed as workspace.
  virtual Decomposition decompose(Dense<float>&& w, Side side, int64_t keep,
                                  const std::string& label) = 0;
  virtual Decomposition decompose(Dense<double>&& w, Side side, int64_t keep,
                                  const std::string& label) = 0;
  /// @brief Decomposes a tensor from its stored bytes: little-endian `dtype` (F32, F64, F16,
  /// BF16), row-major [rows, cols], analysed as [cols, rows] when `transposed` (Conv1D). The
  /// default converts on the host; the CUDA backend copies the stored bytes to the device and
  /// converts there. A non-finite value is indim::BadInput: "<label> holds a non-finite value
  /// at [i, j]" (stored coordinates).
  virtual Decomposition decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                         bool transposed, Side side, int64_t keep,
                                         const std::string& label);
  /// @brief As decompose_stored, for quantised codes (`dtype` an FP8 dtype, or F4 for MXFP4
  /// packed two per byte, low nibble first) times their `scales` (indim/quant.hpp). The
  /// default decodes on the host; the CUDA backend copies codes and scales in their stored
  /// width and decodes in its conversion on the device. A non-finite code or a bad scale is
  /// indim::BadInput naming the tensor (or scale tensor) and position.
  virtual Decomposition decompose_quantised(const void* codes, DType dtype, int64_t rows,
                                            int64_t cols, bool transposed,
                                            const QuantScales& scales, Side side, int64_t keep,
                                            const std::string& label);
  /// @brief As decompose_stored, for the base bytes merged with `update` first; `conv1d`
  /// transposes the merged matrix for the analysis. The default merges on the host; the CUDA
  /// backend merges on the device. `base_label` names the base in errors, `label` the merge.
  virtual Decomposition decompose_merged(const void* base_bytes, DType dtype, int64_t rows,
                                         int64_t cols, const LowRankUpdate& update, bool conv1d,
                                         Side side, int64_t keep, const std::string& base_label,
                                         const std::string& label);
  /// @brief The tuned side of a LoRA-adapted matrix by the exact low-rank route: in the basis
  /// [U0 | orth((I - U0 U0^T) B)] the Gram of W is diag(sigma0^2) plus a term of rank <= 2r,
  /// whose top eigenpairs (block Krylov on the implicit operator, or dense for small orders)
  /// give sigma and the vectors in O(m n r), certified by the residual on the real W (see
  /// LowRankProblem::tol). Returns nullopt with `why` saying why when the route does not apply
  /// (DoRA, a base decomposition that does not fit) or its certificate fails: the caller then
  /// takes the full route. Runs in fp64: the products with the base and its vectors where
  /// lowrank_products places them, the rest on the host.
  virtual std::optional<Decomposition> decompose_lowrank(const LowRankProblem& problem,
                                                         std::string* why);
  /// @brief The low-rank route's products with the base W0 (from `problem`'s stored bytes,
  /// checked for non-finite values as decompose_stored checks them) and its vectors, the
  /// route's O(m n r) work (backend/lowrank_products.hpp). The default: the host's kernels on
  /// the stored bytes (backend/thin_products.hpp); the CUDA backend: cuBLAS on the device.
  virtual std::unique_ptr<detail::LowRankProducts> lowrank_products(const LowRankProblem& problem);
  /// @brief The tuned side of the full route without the Gram: a block Krylov iteration on
  /// the implicit W W^T (or W^T W) started from `base`'s top vectors of that side, certified by
  /// its own residuals (1e-12 theta_1) on the real W. `load` gives W ([out, in] as analysed, in
  /// fp64) and is called only where the route applies. nullopt where it does not apply (`why`
  /// untouched) or was tried and did not converge (`why` says so): the caller then takes the
  /// Gram route. The default: nullopt (the CUDA backend's Gram route is its fastest); the CPU
  /// backend with gram64 runs it (backend/warm_krylov.hpp) on orders of four blocks or more.
  virtual std::optional<Decomposition> decompose_warm(const std::function<Dense<double>()>& load,
                                                      int64_t rows, int64_t cols,
                                                      const Decomposition& base, Side side,
                                                      int64_t keep, const std::string& label,
                                                      std::string* why);
  /// @brief Whether decompose_warm would try its iteration on a [rows, cols] matrix keeping
  /// `keep` (the full route's cost, which the low-rank route's automatic choice weighs).
  virtual bool warm_applies(int64_t rows, int64_t cols, int64_t keep) const;
  /// @brief Announces the stored inputs of the plan entries this backend will be given, in
  /// order of use (each entry: the byte ranges later passed to decompose_stored or
  /// decompose_merged). A backend may copy them ahead of use: the CUDA backend stages them on
  /// the device from a loader thread through pinned buffers on a copy stream, skipping an input
  /// whose `cached()` says the cache serves it. Default: none.
  virtual void stream_inputs(const std::vector<std::vector<StagedInput>>& entries) {
    (void)entries;
  }
  /// @brief Entries 0..entry of the announced plan are finished; what was staged for them may
  /// be freed.
  virtual void release_inputs(size_t entry) { (void)entry; }
  /// @brief The announced entries are done with, or the run stops: a backend that stages stops
  /// its loader and waits for it, and frees what it staged. Once this returns, no announced
  /// range is read again unless passed in a call, so the caller may unmap the inputs. Never
  /// throws; staging_summary() stays readable.
  virtual void end_inputs() noexcept {}
  /// @brief Whether stream_inputs copies inputs ahead (the run then tells it, per base, how to
  /// ask whether the cache serves it).
  virtual bool stages_inputs() const { return false; }
  /// @brief What staging did, for a note: empty when the backend does not stage.
  virtual std::string staging_summary() const { return {}; }
  /// @brief The first k columns of `tuned` against every column of `base` (same dim); also
  /// keeps |cos| against the first `head_cols` base vectors when head_cols > 0.
  virtual Similarity compare(const Vectors& tuned, const Vectors& base, int64_t k,
                             int64_t head_cols = 0) = 0;

 protected:
  /// Throws indim::Cancelled naming `label` when the watched token asks to stop now.
  void check_stop(const std::string& label) const;

 private:
  const CancelToken* cancel_ = nullptr;
  /// The host's low-rank products' large buffers (W0 and U0 in fp64), kept between calls
  /// for the backend's life (one run): touched once per run instead of once per matrix.
  std::shared_ptr<detail::LowRankWorkspace> lowrank_workspace_;
};

/// @brief The LAPACK/BLAS backend with `algo` "gesdd" (falling back to gesvd when it does not
/// converge) or "gram64" (fp64 Gram eigenvectors, the top `keep` only where fewer are asked).
/// Throws indim::UsageError for another name.
std::unique_ptr<Backend> make_cpu_backend(Precision precision, const std::string& algo = "gesdd");

/// @brief True when this build has the CUDA backend.
bool cuda_built();
/// @brief Usable CUDA devices; 0 without a driver or device (`why` says which). Never throws.
int cuda_device_count(std::string* why);
/// @brief The name of CUDA device `device` ("NVIDIA H200"), empty when there is none. Never
/// throws.
std::string cuda_device_name(int device);
/// @brief A CUDA device's memory as the driver reports it now.
struct DeviceMemoryInfo {
  int device = 0;
  uint64_t free_bytes = 0, total_bytes = 0;
};
/// @brief Every usable device's memory; empty without CUDA. Never throws.
std::vector<DeviceMemoryInfo> cuda_memory_info();
/// @brief The CUDA backend on `device` with algorithm "gram64" (fp64 Gram + syevd; the tuned
/// side's top k by subspace iteration, else sytrd + a host tridiagonal solve + ormtr), "gesvd",
/// "gesvdp" (polar decomposition) or "gesvdj" (Jacobi), within `gpu_mem` bytes of device memory
/// (0: 90% of the free memory at start), of which up to 1 GiB (an eighth when smaller) holds
/// inputs staged ahead. A matrix too large for its algorithm within the budget falls back to
/// gesvd; one too large for gesvd is an indim::Error naming it. Throws indim::Error when there
/// is no such device, indim::UsageError in a build without CUDA.
std::unique_ptr<Backend> make_cuda_backend(Precision precision, const std::string& algo, int device,
                                           uint64_t gpu_mem = 0);
/// @brief `streams` CUDA backends on one device, each with its own stream and handles, sharing
/// its `gpu_mem` budget: each decomposition leases what it needs and waits while the others
/// hold too much, so a large matrix waits for room instead of failing against a fixed share.
std::vector<std::unique_ptr<Backend>> make_cuda_backends(Precision precision,
                                                         const std::string& algo, int device,
                                                         uint64_t gpu_mem, int streams);

/// @brief Device bytes a decomposition of an [rows, cols] matrix needs with `algo` (a CUDA
/// algorithm), keeping `keep` vectors, in `precision`, its input crossing as elements of
/// `stored_width` bytes (the checkpoint's dtype; 0: the working precision's): the estimate the
/// budget uses.
uint64_t cuda_bytes_needed(const std::string& algo, Precision precision, int64_t rows, int64_t cols,
                           int64_t keep, int stored_width = 0);

/// @brief How many backends of a kind to build, and where (see make_fleet).
struct FleetOptions {
  Precision precision = Precision::F32;
  std::string algo = "auto";  ///< one of the backend's algorithms, or "auto": its first
  std::vector<int> devices;   ///< device backends: one worker set per device; empty: device 0
  uint64_t gpu_mem = 0;       ///< device backends: memory budget per device; 0: 90% of free
  int workers = 1;            ///< host backends: matrices decomposed in parallel
  int streams = 1;            ///< device backends: matrices in flight per device
};

/// @brief One entry of the backend registry: its name, algorithms (the first is the default),
/// what it can do, and how to build the workers of a run. A new backend is one file with its
/// Backend subclass plus one entry in src/backend/registry.cpp; the CLI's option lists and the
/// analysis read the registry.
struct BackendSpec {
  std::string name;                ///< "cpu", "cuda": the --backend value
  std::string title;               ///< "CPU", "CUDA": as messages name it
  std::string library;             ///< "LAPACK", "cuSOLVER": what does its decompositions
  std::string unit;                ///< what `available` counts: "CUDA device", "CPU"
  std::vector<std::string> algos;  ///< --algo values it accepts; the first is the default
  bool device = false;             ///< an accelerator: --devices, --gpu-mem and --streams apply
  /// How many units (devices) are usable now; 0 with `why` saying why. Never throws.
  std::function<int(std::string* why)> available;
  /// The workers of one run with a resolved algorithm (never "auto").
  std::function<std::vector<std::unique_ptr<Backend>>(const FleetOptions&)> make;
};

/// @brief Every backend this build knows, in the order "auto" prefers them (device backends
/// first). Entries of backends this build lacks stay listed: their `available` says so.
const std::vector<BackendSpec>& backend_registry();
/// @brief The entry named `name`, or nullptr.
const BackendSpec* find_backend(const std::string& name);
/// @brief "auto" and every registered name: what --backend accepts.
std::vector<std::string> backend_choices();
/// @brief "auto" and every algorithm of any backend, each once: what --algo accepts.
std::vector<std::string> algo_choices();

/// @brief The workers of a run: `name` ("auto" or a registered name) resolved against `algo`
/// ("auto" or an algorithm), built per FleetOptions. "auto" takes the first registered backend
/// that is available and runs `algo`; when it passes over a device backend, `note` receives a
/// line for stderr. Throws indim::UsageError for an unknown or mismatched name or algorithm,
/// indim::Error when a named backend is unusable.
std::vector<std::unique_ptr<Backend>> make_fleet(const std::string& name,
                                                 const FleetOptions& options, std::string* note);

/// @brief One backend: make_fleet with a single worker on `device`.
std::unique_ptr<Backend> make_backend(const std::string& name, Precision precision,
                                      std::string* note, const std::string& algo = "auto",
                                      uint64_t gpu_mem = 0, int device = 0);

}  // namespace indim
