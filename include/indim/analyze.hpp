// The analysis: per matrix records of intruder dimensions, and the end-to-end run.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/cache.hpp"
#include "indim/match.hpp"

namespace indim {

namespace detail {
class FileSource;
}  // namespace detail

/// @brief The eps values every summary shows: 0.1, 0.2, ..., 0.9.
std::vector<double> eps_sweep();
/// @brief The user's eps values merged with the sweep, sorted, duplicates removed.
std::vector<double> eps_grid(const std::vector<double>& user_eps);
/// @brief Canonical text of an eps value, used as a JSON key and CSV column suffix ("0.5").
std::string eps_key(double eps);

/// @brief The result for one matrix of one tuned checkpoint on one side.
struct MatrixResult {
  int tuned_index = 0;  ///< position of the tuned checkpoint on the command line
  std::string name;     ///< base tensor name
  std::string tuned_name;
  int layer = -1;
  std::string type;            ///< e.g. "self_attn.q_proj"
  std::vector<int64_t> shape;  ///< [out, in] as analysed
  bool conv1d = false;         ///< stored [in, out] (Conv1D) and transposed for the analysis
  std::string dtype;           ///< tuned tensor's dtype
  std::string side = "left";
  int k = 0;               ///< tuned vectors tested: min(--k, out, in)
  bool k_clamped = false;  ///< --k asked for more vectors than the matrix has
  /// Of the top k, how many have sigma_j below the null floor (null_floor()): directions of a
  /// rank-deficient matrix that any algorithm fills differently. They are the last ones (sigma
  /// descends), are not tested (maxcos NaN, written as null; argmax -1) and count neither as
  /// intruders nor as matches.
  int null_directions = 0;
  bool identical = false;    ///< tuned bytes equal base bytes: no decomposition needed
  bool base_cached = false;  ///< the base decomposition came from the cache
  std::string route;  ///< how the tuned side was decomposed (Decomposition::route; "identical")
  std::vector<double> maxcos;  ///< per tuned vector j < k
  std::vector<int64_t> argmax;
  std::vector<double> sigma;        ///< tuned sigma_j, j < k
  std::vector<double> sigma_ratio;  ///< sigma_j / sigma_0
  std::vector<double> eps;          ///< eps grid the counts refer to
  std::vector<int> counts;          ///< intruders at each eps: #{j : maxcos_j < eps}
  double seconds = 0;
  // Plot data, kept in the journal and drawn in the HTML report (not in report.json): |cos|
  // of the top-k tuned vectors against the first head_cols base vectors (row-major
  // [k, head_cols]), and the leading singular values of the tuned and the base matrix.
  int head_cols = 0;
  std::vector<float> cos_head;
  std::vector<double> sigma_head;
  std::vector<double> base_sigma_head;
  /// With --delta: the update W - W0 itself (absent when identical or not asked for).
  struct Delta {
    double fro = 0;             ///< ||W - W0||_F
    double rel_fro = 0;         ///< ||W - W0||_F / ||W0||_F
    double spectral = 0;        ///< largest singular value of W - W0
    int64_t rank = 0;           ///< singular values above 1e-3 of the largest
    double effective_rank = 0;  ///< exp(entropy of sigma_i / sum sigma) (Roy and Vetterli)
  };
  bool has_delta = false;
  Delta delta;
  /// The expert this matrix is, in a mixture of experts: the slice of a 3-D expert stack, or
  /// N of an `experts.N.` name; -1 for any other matrix.
  int expert = -1;
  /// The noise floor (AnalyzeOptions::noise_floor): the base against an independent
  /// re-quantisation of itself in the tuned side's format (the base plus a dither of half a
  /// quantisation step, quantised as the producer does), what a fine-tune that changed
  /// nothing but was quantised on its own would show. Written only when computed.
  struct NoiseFloor {
    std::string format;          ///< the tuned side's format it was quantised in
    std::vector<double> maxcos;  ///< per tuned vector j < k
    std::vector<int> counts;     ///< per eps of the record's grid
  };
  bool has_noise_floor = false;
  NoiseFloor noise_floor;
  /// @brief The noise floor's count at eps e (0 without one).
  int noise_floor_at(double e) const;
  // Calibrated measures (docs/report-schema.md), computed on the host from the decompositions
  // whatever the backend or route.
  /// Per tested vector j < k: ||y_j^T (W - W0)||^2 / ||W - W0||_F^2 (right side:
  /// ||(W - W0) y_j||^2 / ...), the share of the update's energy along y_j; 0 when W = W0.
  std::vector<double> update_energy;
  double update_fro = 0;  ///< ||W - W0||_F
  /// ||Y_t^T X_t||_F^2 / t over the t = k - null_directions tested vectors Y and the base's
  /// top t vectors X: the mean squared cosine of their principal angles; NaN when t = 0.
  double subspace_overlap = 0;
  std::vector<double> principal_cos;  ///< those t cosines, descending
  /// 99th percentile of max |cos| of a random unit vector against the base's vectors on this
  /// side (null_maxcos(dim, count)): where "entirely new" lies for this shape.
  double null_maxcos = 0;
  int count_at(double e) const;
  /// Sum of sigma_j^2 over the intruders at e, over the sum of sigma_j^2 over j < k.
  double sigma_share_at(double e) const;
  /// Sum of update_energy over the intruders at e: ||U_I U_I^T (W - W0)||_F^2 / ||W - W0||_F^2.
  double update_share_at(double e) const;
};

/// @brief Base vectors and singular values kept per matrix for plots.
constexpr int kPlotHead = 50;

/// @brief The relative singular value under which a tuned direction is null (not tested):
/// max(1e-7, max(rows, cols) * machine epsilon of the working precision), as numpy's
/// matrix_rank, and no lower than the 1e-7 under which the gram64 route returns no vector.
double null_floor(int64_t rows, int64_t cols, Precision precision);
/// @brief Marks the top-k directions with sigma_j < floor * sigma_0 as null (see MatrixResult)
/// and recounts.
void mark_null_directions(MatrixResult& r, double floor, const std::vector<double>& eps);

/// @brief Where a direction with nothing in common with the base lands: the 99th percentile of
/// max_i |<x, b_i>| for x uniformly random on the unit sphere of R^m against p orthonormal
/// vectors b_i (1 <= p <= m). It depends on (m, p) only; computed once per pair and process from
/// 4000 fixed-seed draws (the same value on every machine). NaN outside that range.
double null_maxcos(int64_t m, int64_t p);

/// @brief Fills eps/counts of `r` from its maxcos for the given eps grid.
void count_intruders(MatrixResult& r, const std::vector<double>& eps);

/// @brief Progress of a run: matrices done, total, and the matrix just finished.
using ProgressFn = std::function<void(int done, int total, const std::string& what)>;

/// @brief The estimated work of a unit (one tuned checkpoint's matrix, or part of one): flops
/// of its decompositions (m n min(m, n) each, the order of every route; the base's is carried
/// by the first unit of its matrix) and the stored bytes it reads.
struct UnitCost {
  double flops = 0;
  uint64_t bytes = 0;
  UnitCost& operator+=(const UnitCost& o) {
    flops += o.flops, bytes += o.bytes;
    return *this;
  }
};

/// @brief A unit as an observer hears of it.
struct UnitEvent {
  int tuned_index = 0;
  std::string name;  ///< base tensor name, "[part]" for a part
  UnitCost cost;
  bool resumed = false;  ///< taken from the journal: finished without being started
};

/// @brief Told of a run's progress, for any front end (the CLI's bar, the service's job
/// status). Calls are serialised; they come from worker threads and must not throw.
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  /// Once, before any unit: how many units the plan holds and their summed cost.
  virtual void planned(int units, const UnitCost& total) { (void)units, (void)total; }
  virtual void unit_started(const UnitEvent& unit) { (void)unit; }
  /// Every unit of the plan exactly once, resumed units first, unless the run fails or is
  /// cancelled before it.
  virtual void unit_finished(const UnitEvent& unit) { (void)unit; }
};

/// @brief Stops a run. cancel(): between units: the units in flight finish and are journalled,
/// then analyze() throws indim::Cancelled and `--resume` completes the run. stop_now(): also
/// abandons the units in flight at their next sweep of a long iteration (the journal keeps the
/// finished ones). Both are safe to call from a signal handler (lock-free atomic stores).
class CancelToken {
 public:
  void cancel() noexcept { flag_.store(true, std::memory_order_relaxed); }
  void stop_now() noexcept {
    now_.store(true, std::memory_order_relaxed);
    cancel();
  }
  bool cancelled() const noexcept { return flag_.load(std::memory_order_relaxed); }
  bool stop_requested() const noexcept { return now_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> flag_{false}, now_{false};
};

/// @brief One slice of a run spread over `count` processes (--shard I/N): a deterministic,
/// cost-balanced share of the plan's base matrices (see shards.hpp). count 1: the whole run.
struct ShardSpec {
  int index = 0;
  int count = 1;
};

struct AnalyzeOptions {
  std::string base;
  std::vector<std::string> tuned;
  std::string out_dir;
  int k = 10;
  std::vector<double> eps{0.5};
  Precision precision = Precision::F32;
  Side side = Side::Left;
  std::string backend = "auto";
  std::string algo = "auto";  ///< see make_backend
  std::vector<int> devices;   ///< CUDA devices, one worker each; empty: device 0
  uint64_t gpu_mem = 0;       ///< GPU memory budget per device in bytes; 0: 90% of free
  /// CPU backend: matrices decomposed in parallel; 0 ("auto", the CLI's default): chosen from
  /// the plan's matrix sizes, the cores and the memory (pipeline/auto_workers.hpp).
  int workers = 1;
  int streams = 1;  ///< CUDA backend: matrices in flight per device, each on its own stream and
                    ///< handles, sharing the device's gpu_mem
  SelectOptions select;
  bool resume = false;
  ShardSpec shard;     ///< run only this shard's base matrices (every fine-tune's units of them)
  bool delta = false;  ///< also describe each update W - W0 (costs one more SVD per matrix)
  /// The noise floor per matrix (MatrixResult::NoiseFloor; one more top-k decomposition per
  /// matrix): Auto computes it where either side is quantised.
  enum class NoiseFloorMode { Auto, On, Off };
  NoiseFloorMode noise_floor = NoiseFloorMode::Auto;
  /// PEFT LoRA units take the exact low-rank route (Backend::decompose_lowrank) where it
  /// applies and pays; false: always the full route on the merged matrix (--no-lowrank).
  bool lowrank = true;
  double lowrank_tol = 0;  ///< its certificate bound (LowRankProblem::tol); 0: the default
  /// Hub caches where ORG/NAME[@REV] ids resolve (see hub.hpp); empty: the environment's.
  std::vector<std::string> hub_caches;
  /// Optional: where every input file is opened from (the service's: only beneath its roots,
  /// by descriptor); nullptr: the paths as given. Must outlive the run.
  const detail::FileSource* files = nullptr;
  std::string cache_dir;  ///< base decomposition cache; empty: none
  /// Optional: base decompositions kept in memory across runs (the service), looked up before
  /// the cache directory and filled from it.
  DecompositionMemory* memory = nullptr;
  uint64_t cache_max = 20ull << 30;  ///< its size bound in bytes
  bool html = false;                 ///< also write report.html
  std::string html_appendix;  ///< a section report.html adds before its table (indim mitigate's)
  std::vector<std::string> plot_matrices;        ///< regexes: matrices drawn in detail in the HTML
  int plot_top = 4;                              ///< else the N with most intruders per fine-tune
  ProgressFn progress;                           ///< optional: per record (matrix and side)
  RunObserver* observer = nullptr;               ///< optional: per unit, with costs
  const CancelToken* cancel = nullptr;           ///< optional
  std::function<void(const std::string&)> note;  ///< optional: lines for stderr
  /// Optional: each new record (not those resumed from the journal) with the tuned
  /// decomposition it was made from (nullptr for a tensor identical to its base), called from
  /// the worker that made it, possibly several at once. indim mitigate keeps its intruders'
  /// vectors this way.
  std::function<void(const MatrixResult&, const Decomposition*)> on_record;
  /// Optional, for library users with a backend of their own (and for tests): makes each of
  /// the `workers` backends in place of `backend`, `algo`, `devices` and `streams`.
  std::function<std::unique_ptr<Backend>()> backend_factory;
};

struct TunedSummary {
  std::string path;
  int matrices = 0;
  std::vector<double> eps;
  std::vector<int> totals;  ///< intruders summed over matrices, per eps
  int null_directions = 0;  ///< summed over matrices: tested neither as intruders nor matches
  /// Training step: the number in the fine-tune's name (checkpoint-500: 500) when every
  /// fine-tune's name has one and they differ, else its position (AnalyzeResult::steps_from).
  int64_t step = 0;
  /// Means over matrices, per eps: MatrixResult::sigma_share_at and update_share_at.
  std::vector<double> sigma_share, update_share;
  double subspace_overlap = 0;  ///< mean over matrices where it is defined (NaN: none)
  double null_maxcos = 0;       ///< the largest over matrices
};

/// @brief A checkpoint or adapter as the run read it (report.json "inputs").
struct InputInfo {
  struct File {
    std::string path;
    uint64_t bytes = 0;
    int64_t mtime = 0;
  };
  struct Lora {
    int r = 0;
    double alpha = 0;
    bool use_rslora = false, use_dora = false;
    size_t modules = 0, full_tensors = 0;
  };
  std::string path;
  std::string kind;  ///< "file", "sharded", ..., or "peft-lora"
  size_t tensors = 0;
  uint64_t bytes = 0;
  std::vector<File> files;
  bool is_lora = false;
  Lora lora;
  /// A Hugging Face id the run resolved in the hub cache (empty id: a path).
  struct Hub {
    std::string id, repo, revision, commit, subfolder;
  };
  Hub hub;
};

/// @brief What a run read and how it was asked to compute: the journal's first line, and the
/// inputs and settings of report.json.
struct RunHeader {
  std::string schema_version;
  InputInfo base;
  std::vector<InputInfo> tuned;
  int k = 0;
  std::vector<double> eps, eps_grid;
  std::string precision, side, backend, algo;
  std::vector<std::string> include, exclude;
  bool delta = false;
  bool lowrank = true;
  double lowrank_tol = 0;
  std::string layout;  ///< ModelLayout::describe()
  /// A sharded run's slice (written only when count > 1): which shard ran which base matrix.
  struct Shard {
    int index = 0, count = 1;
    std::string plan_hash;  ///< of the inputs (sizes, not paths), the settings and the plan
    struct Entry {
      std::string name;        ///< a base matrix (or part), in plan order
      int shard = 0;           ///< the shard that runs it
      std::vector<int> tuned;  ///< the fine-tunes that have it (their units)
    };
    std::vector<Entry> plan;  ///< the whole plan, every shard's entries
  };
  Shard shard;
};

struct AnalyzeResult {
  std::vector<MatrixResult> records;  ///< plan order
  std::vector<TunedSummary> tuned;
  std::string steps_from;  ///< "names" (numbers in the fine-tunes' names) or "order"
  std::vector<double> eps;
  std::string backend;
  double seconds = 0;
  int resumed = 0;  ///< records taken from the journal instead of recomputed
  std::string report_json, matrices_csv, vectors_csv, journal, report_html;
  RunHeader header;  ///< inputs and settings, as in the journal's first line
  /// A result merged from shards (merge_shards): each shard's time and records.
  struct ShardTime {
    int index = 0;
    double seconds = 0;
    int matrices = 0;
  };
  std::vector<ShardTime> shard_times;
};

/// @brief Runs the analysis, journalling each record into `out_dir` as it completes, and
/// returns the results as data (write_outputs writes the reports). Throws indim::BadInput /
/// UsageError / Error, and indim::Cancelled when options.cancel stops it. With the CUDA
/// backend, a calling thread that had a device current gets it back; one that had never used
/// CUDA is left on the run's device (putting device 0 back would create a context there), so
/// a caller who needs its thread untouched runs the analysis on a thread of its own, as the
/// Python module does.
AnalyzeResult analyze_only(const AnalyzeOptions& options);

/// @brief Writes matrices.csv, vectors.csv, report.html (options.html) and report.json (last,
/// the mark of a finished run) into options.out_dir, each to a temporary name first and
/// renamed together; fills the paths in `result`.
void write_outputs(AnalyzeResult& result, const AnalyzeOptions& options);

/// @brief analyze_only, then write_outputs: the run as the CLI does it.
AnalyzeResult analyze(const AnalyzeOptions& options);

/// @brief Has the process keep the memory a run frees for its next buffers instead of giving
/// it back to the system and faulting fresh pages in for every matrix (glibc: blocks under
/// 256 MB from the heap, up to 1 GiB free kept; nothing elsewhere). The indim binary calls it
/// first; a program embedding the library decides for itself.
void keep_freed_memory();

/// @brief Computes one matrix's record from a tuned/base decomposition pair (fills maxcos,
/// argmax, sigma, ratio, counts).
MatrixResult intruder_record(Backend& backend, const Decomposition& tuned,
                             const Decomposition& base, Side side, int k,
                             const std::vector<double>& eps);

}  // namespace indim
