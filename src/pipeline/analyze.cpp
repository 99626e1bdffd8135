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
#include <regex>
#include <thread>

#include "indim/cache.hpp"
#include "indim/error.hpp"
#include "indim/report.hpp"
#include "indim/schedule.hpp"
#include "indim/tuned.hpp"
#include "io/atomic_file.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/merge.hpp"
#include "report/report.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

constexpr const char* kSchemaVersion = "1.0";

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
  for (double e : o.eps)
    if (!(e > 0.0 && e <= 1.0)) throw UsageError("--eps values must lie in (0, 1]");
  for (const auto& p : o.plot_matrices) {
    try {
      std::regex check(p);
    } catch (const std::regex_error& e) {
      throw UsageError("--plot-matrices \"" + p + "\" is not a valid regex: " + e.what());
    }
  }
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

Decomposition decompose(Backend& b, const MatchedPair& p, const MatrixPart& part, bool tuned,
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
  const auto& shape = u.pair.base.info->shape;
  r.shape = {static_cast<int64_t>(shape[shape.size() - 2]),
             static_cast<int64_t>(shape[shape.size() - 1])};
  if (u.pair.conv1d) std::swap(r.shape[0], r.shape[1]);
  if (!u.part.rows.empty()) r.shape[0] = static_cast<int64_t>(u.part.rows.size());
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
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (!fs::is_directory(o.out_dir)) throw Error(o.out_dir + ": cannot create output directory");
  res.journal = (fs::path(o.out_dir) / "journal.jsonl").string();
  res.report_json = (fs::path(o.out_dir) / "report.json").string();
  res.matrices_csv = (fs::path(o.out_dir) / "matrices.csv").string();

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
      if (!base_d) {
        base_d = decompose(backend, u.pair, u.part, /*tuned=*/false, o.side, 0);
        if (cache) cache->store(base_key, *base_d, b_label(u));
      }
      const bool same = u.pair.lora == nullptr && u.part.label.empty() &&
                        bytes_identical(u.pair.base, u.pair.tuned);
      std::optional<Decomposition> tuned_d;
      if (!same) tuned_d = decompose(backend, u.pair, u.part, /*tuned=*/true, o.side, o.k);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::optional<MatrixResult::Delta> delta;
      if (o.delta && !same)
        delta = backend.precision() == Precision::F32 ? describe_delta<float>(backend, u)
                                                      : describe_delta<double>(backend, u);
      for (Side s : sides) {
        MatrixResult r = same ? identical_record(*base_d, s, o.k, res.eps)
                              : intruder_record(backend, *tuned_d, *base_d, s, o.k, res.eps);
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
        for (size_t e = 0; e < res.eps.size(); ++e)
          sum.totals[e] += it->second.count_at(res.eps[e]);
      }
    res.tuned.push_back(sum);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  detail::write_file_atomic(res.report_json,
                            detail::build_report(res, header, o.eps.front()).dump(2) + "\n");
  detail::write_file_atomic(res.matrices_csv, detail::build_matrices_csv(res, o.k));
  res.header_json = header.dump();
  if (o.html) {
    res.report_html = (fs::path(o.out_dir) / "report.html").string();
    HtmlOptions h{o.eps.front(), o.k, o.plot_matrices, o.plot_top};
    detail::write_file_atomic(res.report_html, format_html(res, h));
  }
  return res;
}

}  // namespace indim
