// The end-to-end run: open and match checkpoints, plan, stream matrices through the backend
// one pair at a time, journal each record, then write the reports.
#include "indim/analyze.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "indim/cache.hpp"
#include "indim/error.hpp"
#include "indim/report.hpp"
#include "indim/schedule.hpp"
#include "indim/tuned.hpp"
#include "io/atomic_file.hpp"
#include "io/dir_lock.hpp"
#include "io/regular_file.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/merge.hpp"
#include "plan/regex.hpp"
#include "report/report.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

constexpr const char* kSchemaVersion = "1.1";

std::string shape_text(const std::vector<uint64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

void validate(const AnalyzeOptions& o) {
  if (o.tuned.empty()) throw UsageError("analyze needs a base and at least one tuned checkpoint");
  if (o.out_dir.empty()) throw UsageError("--out must name a directory");
  if (o.k < 1) throw UsageError("--k must be at least 1");
  if (o.eps.empty()) throw UsageError("--eps needs at least one value");
  if (o.eps.size() > 64) throw UsageError("--eps takes at most 64 values");
  for (double e : o.eps)
    if (!(e > 0.0 && e <= 1.0)) throw UsageError("--eps values must lie in (0, 1]");
  if (o.workers < 1 || o.workers > 256) throw UsageError("--workers must lie in 1 ... 256");
  if (o.streams < 1 || o.streams > 16) throw UsageError("--streams must lie in 1 ... 16");
  if (o.devices.size() > 64) throw UsageError("--devices names at most 64 devices");
  for (int d : o.devices)
    if (d < 0) throw UsageError("--devices takes device numbers from 0");
  detail::compile_option_patterns(o.plot_matrices, "--plot-matrices");
}

nlohmann::json checkpoint_json(const Checkpoint& c) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : c.files()) {
    struct stat st {};
    ::stat(f->path().c_str(), &st);
    files.push_back({{"path", f->path()}, {"bytes", f->file_size()}, {"mtime", st.st_mtime}});
  }
  return {{"path", c.path()},
          {"kind", c.kind()},
          {"tensors", c.tensors().size()},
          {"bytes", c.total_bytes()},
          {"files", files}};
}

nlohmann::json tuned_json(const TunedInput& t) {
  nlohmann::json j = checkpoint_json(t.checkpoint());
  j["path"] = t.path();
  if (const Adapter* a = t.adapter()) {
    const LoraConfig& c = a->config();
    j["kind"] = "peft-lora";
    j["lora"] = {{"r", c.r},
                 {"lora_alpha", c.alpha},
                 {"use_rslora", c.use_rslora},
                 {"use_dora", c.use_dora},
                 {"modules", a->modules().size()},
                 {"full_tensors", a->full_tensors().size()}};
  }
  return j;
}

// One (tuned checkpoint, base matrix or part of one) to analyse.
struct Unit {
  int tuned_index;
  MatchedPair pair;
  MatrixPart part;
};

std::string part_key(const std::string& name, const MatrixPart& part) {
  return part.label.empty() ? name : name + "[" + part.label + "]";
}

// Base matrices in storage order (file, then offset; parts in order): reads stream through each
// file once. Keys are tensor names, with "[part]" for the pieces of a split tensor.
std::vector<std::pair<std::string, std::vector<Unit>>> make_plan(
    const Checkpoint& base, const std::vector<MatchTable>& tables) {
  std::vector<std::pair<std::string, std::vector<Unit>>> plan;
  std::map<std::string, size_t> at;
  for (size_t t = 0; t < tables.size(); ++t)
    for (const auto& p : tables[t].pairs) {
      if (!p.selected) continue;
      const std::vector<MatrixPart> parts = p.parts.empty() ? std::vector<MatrixPart>{{}} : p.parts;
      for (const MatrixPart& part : parts) {
        const std::string key = part_key(p.base_name, part);
        auto it = at.find(key);
        if (it == at.end()) it = at.emplace(key, plan.size()).first, plan.push_back({key, {}});
        plan[it->second].second.push_back({static_cast<int>(t), p, part});
      }
    }
  std::map<const SafetensorsFile*, size_t> file_rank;
  for (size_t i = 0; i < base.files().size(); ++i) file_rank[base.files()[i].get()] = i;
  std::stable_sort(plan.begin(), plan.end(), [&](const auto& a, const auto& b) {
    const TensorRef& ra = a.second.front().pair.base;
    const TensorRef& rb = b.second.front().pair.base;
    return std::make_pair(file_rank[ra.file], ra.info->begin) <
           std::make_pair(file_rank[rb.file], rb.info->begin);
  });
  return plan;
}

void check_pair(const MatchedPair& p) {
  if (!p.shapes_equal)
    throw BadInput(p.base.file->path() + ": tensor '" + p.base_name + "' " +
                   shape_text(p.base.info->shape) + " does not match " + p.tuned.file->path() +
                   ": tensor '" + p.tuned_name + "' " + shape_text(p.tuned.info->shape));
  for (const TensorRef* r : {&p.base, &p.tuned})
    if (!dtype_is_analysable(r->info->dtype))
      throw BadInput(r->file->path() + ": tensor '" + r->info->name + "' has dtype " +
                     dtype_name(r->info->dtype) +
                     ", which indim cannot analyse (F64, F32, F16, BF16); --exclude it");
}

template <typename T>
Dense<T> oriented(Dense<T>&& w, bool conv1d) {
  if (!conv1d) return std::move(w);
  Dense<T> t{w.cols, w.rows, std::vector<T>(w.data.size())};
  for (int64_t i = 0; i < w.rows; ++i)
    for (int64_t j = 0; j < w.cols; ++j) t.data[j * w.rows + i] = w.data[i * w.cols + j];
  return t;
}

template <typename T>
Dense<T> take_rows(Dense<T>&& w, const std::vector<int64_t>& rows) {
  if (rows.empty()) return std::move(w);
  Dense<T> r{static_cast<int64_t>(rows.size()), w.cols, {}};
  r.data.reserve(rows.size() * static_cast<size_t>(w.cols));
  for (int64_t row : rows)
    r.data.insert(r.data.end(), w.data.begin() + row * w.cols, w.data.begin() + (row + 1) * w.cols);
  return r;
}

// A side of a pair as [out, in]: base, or tuned (as stored, or the base merged with the
// pair's LoRA update), transposed first when the layer is a Conv1D; then the part's expert
// and rows.
template <typename T>
Dense<T> load_side(const MatchedPair& p, const MatrixPart& part, bool tuned) {
  const TensorRef& ref = tuned ? p.tuned : p.base;
  Dense<T> w;
  if (part.slice >= 0)
    w = detail::load_slice<T>(ref, part.slice);
  else if (tuned && p.lora != nullptr)
    w = oriented(detail::merge_lora<T>(p), p.conv1d);
  else
    w = oriented(detail::load_matrix<T>(ref), p.conv1d);
  return take_rows(std::move(w), part.rows);
}

// A side's matrix (or part) that is one contiguous run of stored bytes: a whole 2-D tensor
// (transposed for Conv1D), an expert of a 3-D stack, or a run of consecutive rows of either.
struct StoredBlock {
  const uint8_t* data;
  int64_t rows, cols;
  bool transposed;
  size_t elements() const { return static_cast<size_t>(rows * cols); }
};

std::optional<StoredBlock> stored_block(const TensorRef& ref, const MatrixPart& part, bool conv1d) {
  const auto& shape = ref.info->shape;
  const size_t elt = static_cast<size_t>(dtype_bits(ref.info->dtype) / 8);
  if (!((shape.size() == 2 && part.slice < 0) || (shape.size() == 3 && part.slice >= 0)))
    return std::nullopt;
  StoredBlock b{ref.file->data(*ref.info), static_cast<int64_t>(shape[shape.size() - 2]),
                static_cast<int64_t>(shape[shape.size() - 1]), conv1d && shape.size() == 2};
  if (part.slice >= 0) b.data += static_cast<size_t>(part.slice) * b.elements() * elt;
  if (part.rows.empty()) return b;
  if (b.transposed) return std::nullopt;  // rows of a Conv1D's [out, in] are stored columns
  for (size_t i = 1; i < part.rows.size(); ++i)
    if (part.rows[i] != part.rows[0] + static_cast<int64_t>(i)) return std::nullopt;
  b.data += static_cast<size_t>(part.rows.front() * b.cols) * elt;
  b.rows = static_cast<int64_t>(part.rows.size());
  return b;
}

Decomposition decompose_side(Backend& b, const MatchedPair& p, const MatrixPart& part, bool tuned,
                             Side side, int64_t keep) {
  const std::string label = tuned
                                ? p.tuned.file->path() + ": " + (p.lora ? "module '" : "tensor '") +
                                      p.tuned_name + (p.lora ? "' merged" : "'")
                                : p.base.file->path() + ": tensor '" + p.base_name + "'";
  if (tuned && p.lora != nullptr && part.label.empty()) {
    // The merge happens where the backend works: on the device for CUDA.
    const TensorRef& base = p.base;
    Decomposition d = b.decompose_merged(
        base.file->data(*base.info), base.info->dtype, static_cast<int64_t>(base.info->shape[0]),
        static_cast<int64_t>(base.info->shape[1]), detail::lora_update(p), p.conv1d, side, keep,
        base.file->path() + ": tensor '" + p.base_name + "'", detail::lora_label(p));
    base.file->release(*base.info);
    return d;
  }
  const TensorRef& ref = tuned ? p.tuned : p.base;
  const std::string where = part.label.empty() ? label : label + " [" + part.label + "]";
  if (!(tuned && p.lora != nullptr))
    if (const auto block = stored_block(ref, part, p.conv1d)) {
      // Contiguous stored bytes go to the backend as they are (the GPU converts them on the
      // device); a non-finite value is reported within the part.
      Decomposition d = b.decompose_stored(block->data, ref.info->dtype, block->rows, block->cols,
                                           block->transposed, side, keep, where);
      if (part.label.empty()) ref.file->release(*ref.info);
      return d;
    }
  if (b.precision() == Precision::F32)
    return b.decompose(load_side<float>(p, part, tuned), side, keep, where);
  return b.decompose(load_side<double>(p, part, tuned), side, keep, where);
}

// Every file a unit reads, checked for changes under the run (see SafetensorsFile::check_intact);
// called before a unit starts and again before its record is kept.
void check_intact(const MatchedPair& p) {
  p.base.file->check_intact(*p.base.info);
  p.tuned.file->check_intact(*p.tuned.info);
  if (p.lora != nullptr) {
    p.lora->a.file->check_intact(*p.lora->a.info);
    p.lora->b.file->check_intact(*p.lora->b.info);
    if (p.lora->magnitude) p.lora->magnitude->file->check_intact(*p.lora->magnitude->info);
  }
}

// Finite input can still overflow a decomposition in fp32 (values near 3.4e38): refuse rather
// than report infinite or NaN singular values.
template <typename T>
bool all_finite(const std::vector<T>& v) {
  return std::all_of(v.begin(), v.end(), [](T x) { return std::isfinite(x); });
}

void check_finite(const Decomposition& d, Precision precision, const std::string& where) {
  const bool ok = all_finite(d.sigma) && all_finite(d.left.f32) && all_finite(d.left.f64) &&
                  all_finite(d.right.f32) && all_finite(d.right.f64);
  if (!ok)
    throw BadInput(where + ": its decomposition overflows in " + precision_name(precision) +
                   (precision == Precision::F32 ? " (values too large); use --precision fp64"
                                                : " (values too large)"));
}

std::string side_label(const MatchedPair& p, const MatrixPart& part, bool tuned) {
  const std::string name = part_key(tuned ? p.tuned_name : p.base_name, part);
  return (tuned ? p.tuned.file->path() : p.base.file->path()) + ": tensor '" + name + "'";
}

Decomposition decompose(Backend& b, const MatchedPair& p, const MatrixPart& part, bool tuned,
                        Side side, int64_t keep) {
  Decomposition d = decompose_side(b, p, part, tuned, side, keep);
  check_finite(d, b.precision(), side_label(p, part, tuned));
  return d;
}

bool bytes_identical(const TensorRef& a, const TensorRef& b) {
  return a.info->dtype == b.info->dtype && a.info->nbytes() == b.info->nbytes() &&
         std::memcmp(a.file->data(*a.info), b.file->data(*b.info), a.info->nbytes()) == 0;
}

// A tuned tensor equal to its base keeps every direction: maxcos 1 at its own index.
MatrixResult identical_record(const Decomposition& base, Side side, int k,
                              const std::vector<double>& eps) {
  MatrixResult r;
  r.side = side_name(side);
  r.identical = true;
  r.k = static_cast<int>(std::min<size_t>(k, base.sigma.size()));
  for (int j = 0; j < r.k; ++j) {
    r.maxcos.push_back(1.0);
    r.argmax.push_back(j);
    r.sigma.push_back(base.sigma[j]);
    r.sigma_ratio.push_back(base.sigma[0] > 0 ? base.sigma[j] / base.sigma[0] : 0.0);
  }
  count_intruders(r, eps);
  r.head_cols = static_cast<int>(std::min<size_t>(kPlotHead, base.sigma.size()));
  r.cos_head.assign(static_cast<size_t>(r.k * r.head_cols), 0.0f);
  for (int j = 0; j < r.k && j < r.head_cols; ++j) r.cos_head[j * r.head_cols + j] = 1.0f;
  const size_t h = std::min<size_t>(kPlotHead, base.sigma.size());
  r.sigma_head.assign(base.sigma.begin(), base.sigma.begin() + h);
  r.base_sigma_head = r.sigma_head;
  return r;
}

// A unit's matrix as analysed, [out, in] (transposed for Conv1D, rows of its part).
std::pair<int64_t, int64_t> unit_shape(const Unit& u) {
  const auto& shape = u.pair.base.info->shape;
  int64_t rows = static_cast<int64_t>(shape[shape.size() - 2]);
  int64_t cols = static_cast<int64_t>(shape[shape.size() - 1]);
  if (u.pair.conv1d) std::swap(rows, cols);
  if (!u.part.rows.empty()) rows = static_cast<int64_t>(u.part.rows.size());
  return {rows, cols};
}

// Fills a record's naming, shape and timing from its unit.
void describe(MatrixResult& r, const Unit& u, const std::string& name, bool base_cached,
              double seconds) {
  r.tuned_index = u.tuned_index;
  r.base_cached = base_cached;
  r.name = name;
  r.tuned_name = u.pair.tuned_name;
  r.layer = layer_index(u.pair.base_name);
  r.type = matrix_type(u.pair.base_name);
  if (!u.part.rows.empty())  // "3.up" -> "[up]": experts fold together, Q/K/V do not
    r.type += "[" + u.part.label.substr(u.part.label.rfind('.') + 1) + "]";
  const auto [rows, cols] = unit_shape(u);
  r.shape = {rows, cols};
  r.conv1d = u.pair.conv1d;
  r.dtype = dtype_name(u.pair.tuned.info->dtype);
  r.seconds = seconds;
}

// The update W - W0 of a unit, described by its norms and singular values.
template <typename T>
MatrixResult::Delta describe_delta(Backend& b, const Unit& u) {
  Dense<T> w0 = load_side<T>(u.pair, u.part, /*tuned=*/false);
  Dense<T> w = load_side<T>(u.pair, u.part, /*tuned=*/true);
  double base_sq = 0, fro_sq = 0;
  for (size_t i = 0; i < w.data.size(); ++i) {
    base_sq += static_cast<double>(w0.data[i]) * w0.data[i];
    w.data[i] -= w0.data[i];
    fro_sq += static_cast<double>(w.data[i]) * w.data[i];
  }
  if (!std::isfinite(fro_sq))
    throw BadInput(u.pair.tuned.file->path() + ": tensor '" + u.pair.tuned_name +
                   "': the update W - W0 overflows " + precision_name(b.precision()) +
                   " (--delta); use --precision fp64");
  MatrixResult::Delta d;
  d.fro = std::sqrt(fro_sq);
  d.rel_fro = base_sq > 0 ? d.fro / std::sqrt(base_sq) : 0.0;
  if (fro_sq == 0) return d;
  const std::vector<double> s =
      b.decompose(std::move(w), Side::Left, 0, u.pair.base_name + " (update)").sigma;
  d.spectral = s.empty() ? 0.0 : s[0];
  double total = 0;
  for (double x : s) total += x, d.rank += x > 1e-3 * d.spectral ? 1 : 0;
  double entropy = 0;
  for (double x : s)
    if (x > 0) entropy -= (x / total) * std::log(x / total);
  d.effective_rank = std::exp(entropy);
  return d;
}

std::string b_label(const Unit& u) {
  return u.pair.base.file->path() + ": " + part_key(u.pair.base_name, u.part);
}

std::vector<Side> sides_of(Side s) {
  if (s == Side::Both) return {Side::Left, Side::Right};
  return {s};
}

}  // namespace

AnalyzeResult analyze(const AnalyzeOptions& o) {
  validate(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto note = [&](const std::string& s) {
    if (o.note) o.note(s);
  };
  // Backends first: a flag they refuse is a usage error before any file is read.
  std::string backend_note;
  std::vector<std::unique_ptr<Backend>> backends;
  if (o.backend_factory) {
    for (int w = 0; w < std::max(o.workers, 1); ++w) backends.push_back(o.backend_factory());
  } else {
    backends.push_back(make_backend(o.backend, o.precision, &backend_note, o.algo, o.gpu_mem,
                                    o.devices.empty() ? 0 : o.devices.front()));
  }
  if (!backend_note.empty()) note(backend_note);
  Backend* backend = backends.front().get();
  if (!o.backend_factory && backend->name() == "cuda" && (o.devices.size() > 1 || o.streams > 1)) {
    // One backend per stream per device; the streams of a device share its budget.
    const std::string algo = backend->algo();
    backends.clear();
    for (int dev : o.devices.empty() ? std::vector<int>{0} : o.devices)
      for (auto& b : make_cuda_backends(o.precision, algo, dev, o.gpu_mem, o.streams))
        backends.push_back(std::move(b));
    backend = backends.front().get();
  }
  if (!o.backend_factory && backend->name() == "cpu")
    while (static_cast<int>(backends.size()) < o.workers)
      backends.push_back(make_cpu_backend(o.precision, backend->algo()));

  Checkpoint base = Checkpoint::open(o.base);
  const ModelLayout layout = detect_layout(base);
  std::vector<TunedInput> tuned;
  std::vector<MatchTable> tables;
  for (const auto& p : o.tuned) {
    tuned.push_back(TunedInput::open(p));
    tables.push_back(tuned.back().match(base, o.select, layout));
  }
  for (const auto& w : base.warnings()) note("warning: " + w);
  for (const auto& t : tuned) {
    for (const auto& w : t.checkpoint().warnings()) note("warning: " + w);
    if (t.is_adapter())
      for (const auto& w : t.adapter()->config().warnings) note("warning: " + w);
  }
  for (size_t t = 0; t < tables.size(); ++t) {
    int n = 0;
    for (const auto& p : tables[t].pairs)
      if (p.selected) check_pair(p), ++n;
    if (n == 0)
      throw BadInput(o.tuned[t] + ": no matrix selected for analysis against " + o.base +
                     " (see `indim inspect BASE TUNED`, or use --include)");
  }
  const auto plan = make_plan(base, tables);

  AnalyzeResult res;
  res.eps = eps_grid(o.eps);
  res.backend = backend->name();
  // Inputs are valid: only now is anything in --out touched, under a lock for the whole run.
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (detail::path_kind(o.out_dir) != detail::PathKind::Directory)
    throw Error(o.out_dir + ": cannot create the output directory" +
                (ec ? ": " + ec.message() : std::string()));
  const detail::DirLock out_lock(o.out_dir, "indim analyze");
  res.journal = (fs::path(o.out_dir) / "journal.jsonl").string();
  res.report_json = (fs::path(o.out_dir) / "report.json").string();
  res.matrices_csv = (fs::path(o.out_dir) / "matrices.csv").string();
  res.vectors_csv = (fs::path(o.out_dir) / "vectors.csv").string();

  nlohmann::json header = {
      {"indim_journal", 1},
      {"schema_version", kSchemaVersion},
      {"inputs", {{"base", checkpoint_json(base)}, {"tuned", nlohmann::json::array()}}},
      {"settings",
       {{"k", o.k},
        {"eps", o.eps},
        {"eps_grid", res.eps},
        {"precision", precision_name(o.precision)},
        {"side", side_name(o.side)},
        {"backend", backend->name()},
        {"algo", backend->algo()},
        {"include", o.select.include},
        {"exclude", o.select.exclude},
        {"delta", o.delta}}},
      {"layout", layout.describe()}};
  for (const auto& t : tuned) header["inputs"]["tuned"].push_back(tuned_json(t));
  detail::Journal journal(res.journal, header, o.resume);
  std::optional<DecompositionCache> cache;
  if (!o.cache_dir.empty()) cache.emplace(o.cache_dir, o.cache_max);
  if (cache && !cache->unusable().empty()) {
    note("warning: " + cache->unusable() + "; going on without the cache");
    cache.reset();
  }
  std::atomic<bool> cache_writes{cache.has_value()};  // off after the first failed write

  const auto sides = sides_of(o.side);
  int total = 0;
  for (const auto& [name, units] : plan) total += static_cast<int>(units.size() * sides.size());
  std::map<detail::RecordKey, MatrixResult> records;
  for (const auto& [name, units] : plan)
    for (const Unit& u : units)
      for (Side s : sides) {
        auto prev = journal.previous().find({u.tuned_index, name, side_name(s)});
        if (prev != journal.previous().end()) records[prev->first] = prev->second, ++res.resumed;
      }
  int done = res.resumed;
  std::mutex mu;  // guards records, done, the journal, progress and notes

  // Analyses one plan entry (a base matrix and its pending fine-tunes) on `backend`.
  auto process = [&](Backend& backend, const std::string& name, const std::vector<Unit>& units) {
    std::optional<Decomposition> base_d;
    std::string base_key;
    bool base_cached = false;
    for (const Unit& u : units) {
      bool pending = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        for (Side s : sides) pending |= !records.count({u.tuned_index, name, side_name(s)});
      }
      if (!pending) continue;
      const auto start = std::chrono::steady_clock::now();
      if (!base_d && cache) {
        const TensorRef& b = u.pair.base;
        const std::string context = "indim-cache-v1|" + std::string(dtype_name(b.info->dtype)) +
                                    "|" + shape_text(b.info->shape) + "|" + side_name(o.side) +
                                    "|" + backend.name() + "." + backend.algo() + "|" +
                                    precision_name(o.precision) + (u.pair.conv1d ? "|conv1d" : "") +
                                    "|part=" + u.part.label;
        base_key = DecompositionCache::key(b.file->data(*b.info), b.info->nbytes(), context);
        std::string warning;
        base_d = cache->load(base_key, &warning);
        if (!warning.empty()) {
          std::lock_guard<std::mutex> lock(mu);
          note(warning);
        }
        base_cached = base_d.has_value();
      }
      check_intact(u.pair);
      if (!base_d) {
        base_d = decompose(backend, u.pair, u.part, /*tuned=*/false, o.side, 0);
        std::string warning;
        if (cache && cache_writes && !cache->store(base_key, *base_d, b_label(u), &warning)) {
          std::lock_guard<std::mutex> lock(mu);
          if (cache_writes.exchange(false)) note(warning);  // warned once
        }
      }
      const bool same = u.pair.lora == nullptr && u.part.label.empty() &&
                        bytes_identical(u.pair.base, u.pair.tuned);
      const auto [rows, cols] = unit_shape(u);
      const int k = static_cast<int>(std::min<int64_t>(o.k, std::min(rows, cols)));
      std::optional<Decomposition> tuned_d;
      if (!same) tuned_d = decompose(backend, u.pair, u.part, /*tuned=*/true, o.side, k);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::optional<MatrixResult::Delta> delta;
      if (o.delta && !same)
        delta = backend.precision() == Precision::F32 ? describe_delta<float>(backend, u)
                                                      : describe_delta<double>(backend, u);
      check_intact(u.pair);  // nothing below may rest on bytes that changed under the run
      for (Side s : sides) {
        MatrixResult r = same ? identical_record(*base_d, s, k, res.eps)
                              : intruder_record(backend, *tuned_d, *base_d, s, k, res.eps);
        mark_null_directions(r, null_floor(rows, cols, backend.precision()), res.eps);
        r.k_clamped = k < o.k;
        describe(r, u, name, base_cached, secs / static_cast<double>(sides.size()));
        r.route = same ? "identical" : tuned_d->route;
        if (delta) r.has_delta = true, r.delta = *delta;
        std::lock_guard<std::mutex> lock(mu);
        journal.append(r);
        records[{u.tuned_index, name, r.side}] = r;
        ++done;
        if (o.progress) o.progress(done, total, name);
      }
      u.pair.tuned.file->release(*u.pair.tuned.info);
    }
    if (!units.empty()) units.front().pair.base.file->release(*units.front().pair.base.info);
  };

  // The stored inputs an entry will hand the backend as bytes (whole 2-D matrices: bases, also
  // under a LoRA merge, and full tuned tensors), for backends that copy them ahead of use.
  auto entry_inputs = [&](size_t i) {
    std::vector<ByteRange> in;
    auto add = [&](const void* data, size_t bytes) {  // once per entry: a base serves every unit
      for (const ByteRange& r : in)
        if (r.data == data) return;
      in.push_back({data, bytes});
    };
    const auto& [name, units] = plan[i];
    for (const Unit& u : units) {
      bool pending = false;
      for (Side s : sides) pending |= !records.count({u.tuned_index, name, side_name(s)});
      if (!pending) continue;
      const size_t elt = static_cast<size_t>(dtype_bits(u.pair.base.info->dtype) / 8);
      if (u.pair.lora != nullptr && u.part.label.empty()) {  // merged on the device
        const TensorRef& b = u.pair.base;
        add(b.file->data(*b.info), b.info->nbytes());
      } else if (const auto b = stored_block(u.pair.base, u.part, u.pair.conv1d)) {
        add(b->data, b->elements() * elt);
      }
      if (u.pair.lora == nullptr)
        if (const auto t = stored_block(u.pair.tuned, u.part, u.pair.conv1d))
          add(t->data,
              t->elements() * static_cast<size_t>(dtype_bits(u.pair.tuned.info->dtype) / 8));
    }
    return in;
  };
  auto staging_note = [&](const Backend& b) {
    const std::string s = b.staging_summary();
    if (s.find("stopped early") != std::string::npos) note("warning: " + s);
  };

  // Readahead of an entry's tensors, issued one entry early so disk reads overlap compute.
  auto prefetch = [&](size_t i) {
    if (i >= plan.size()) return;
    for (const Unit& u : plan[i].second) {
      u.pair.base.file->prefetch(*u.pair.base.info);
      u.pair.tuned.file->prefetch(*u.pair.tuned.info);
    }
  };
  std::vector<std::vector<ByteRange>> inputs;
  for (size_t i = 0; i < plan.size(); ++i) inputs.push_back(entry_inputs(i));
  if (backends.size() == 1) {
    backends[0]->stream_inputs(inputs);
    prefetch(0);
    for (size_t i = 0; i < plan.size(); ++i) {
      prefetch(i + 1);
      process(*backends[0], plan[i].first, plan[i].second);
      backends[0]->release_inputs(i);
    }
    staging_note(*backends[0]);
  } else {
    std::vector<double> costs;
    for (const auto& [name, units] : plan) {
      const MatrixResult shape_of = [&] {
        MatrixResult r;
        describe(r, units.front(), name, false, 0);
        return r;
      }();
      costs.push_back(
          matrix_cost(shape_of.shape[0], shape_of.shape[1], static_cast<int>(units.size())));
    }
    const std::vector<int> worker_of = assign_workers(costs, static_cast<int>(backends.size()));
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::vector<std::thread> threads;
    for (size_t w = 0; w < backends.size(); ++w)
      threads.emplace_back([&, w] {
        try {
          std::vector<size_t> mine;
          std::vector<std::vector<ByteRange>> my_inputs;
          for (size_t i = 0; i < plan.size(); ++i)
            if (worker_of[i] == static_cast<int>(w))
              mine.push_back(i), my_inputs.push_back(inputs[i]);
          backends[w]->stream_inputs(my_inputs);
          for (size_t n = 0; n < mine.size() && !failed; ++n) {
            if (n + 1 < mine.size()) prefetch(mine[n + 1]);
            process(*backends[w], plan[mine[n]].first, plan[mine[n]].second);
            backends[w]->release_inputs(n);
          }
          std::lock_guard<std::mutex> lock(mu);
          staging_note(*backends[w]);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!failed.exchange(true)) error = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    if (error) std::rethrow_exception(error);
  }

  // Records in plan order: tuned checkpoint, then storage order of the base.
  for (size_t t = 0; t < tuned.size(); ++t) {
    TunedSummary sum;
    sum.path = o.tuned[t];
    sum.eps = res.eps;
    sum.totals.assign(res.eps.size(), 0);
    for (const auto& [name, units] : plan)
      for (Side s : sides) {
        auto it = records.find({static_cast<int>(t), name, side_name(s)});
        if (it == records.end()) continue;
        res.records.push_back(it->second);
        ++sum.matrices;
        sum.null_directions += it->second.null_directions;
        for (size_t e = 0; e < res.eps.size(); ++e)
          sum.totals[e] += it->second.count_at(res.eps[e]);
      }
    res.tuned.push_back(sum);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  journal.start();  // a fully resumed run still leaves the journal of this run
  res.header_json = header.dump();
  // All outputs to temporary names first, renamed together; report.json last, as the mark of a
  // finished run.
  std::vector<std::pair<std::string, std::string>> outputs;
  outputs.emplace_back(res.matrices_csv, detail::build_matrices_csv(res));
  outputs.emplace_back(res.vectors_csv, detail::build_vectors_csv(res, o.eps.front()));
  if (o.html) {
    res.report_html = (fs::path(o.out_dir) / "report.html").string();
    HtmlOptions h{o.eps.front(), o.k, o.plot_matrices, o.plot_top};
    outputs.emplace_back(res.report_html, format_html(res, h));
  }
  outputs.emplace_back(res.report_json,
                       detail::build_report(res, header, o.eps.front()).dump(2) + "\n");
  detail::write_files_atomic(outputs);
  return res;
}

}  // namespace indim
