#include "pipeline/unit_work.hpp"

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>

#include "indim/peft.hpp"
#include "pipeline/decompose.hpp"
#include "pipeline/intruders.hpp"
#include "pipeline/metrics.hpp"

namespace indim::detail {

namespace {

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

bool bytes_identical(const TensorRef& a, const TensorRef& b) {
  return a.info->dtype == b.info->dtype && a.info->nbytes() == b.info->nbytes() &&
         std::memcmp(a.file->data(*a.info), b.file->data(*b.info), a.info->nbytes()) == 0;
}

// Fills a record's naming, shape and timing from its unit.
void describe(MatrixResult& r, const WorkUnit& u, bool base_cached, double seconds) {
  r.tuned_index = u.tuned_index;
  r.base_cached = base_cached;
  r.name = u.name;
  r.tuned_name = u.pair.tuned_name;
  r.layer = layer_index(u.pair.base_name);
  r.type = matrix_type(u.pair.base_name);
  if (!u.part.rows.empty())  // "3.up" -> "[up]": experts fold together, Q/K/V do not
    r.type += "[" + u.part.label.substr(u.part.label.rfind('.') + 1) + "]";
  r.shape = {u.rows, u.cols};
  r.conv1d = u.pair.conv1d;
  r.dtype = dtype_name(u.pair.tuned.info->dtype);
  r.seconds = seconds;
}

// The base's decomposition for an entry, held across its units.
struct BaseSide {
  std::shared_ptr<const Decomposition> d;
  std::string key;
  bool cached = false;
};

// The base's decomposition from memory (options.memory) or the disk cache, when either has it.
void look_up_base(const UnitWork& w, Backend& backend, const WorkUnit& u, BaseSide& base) {
  const AnalyzeOptions& o = w.options;
  if (w.cache == nullptr && o.memory == nullptr) return;
  base.key = base_cache_key(u, o.side, backend.name() + "." + backend.algo(), o.precision);
  if (o.memory != nullptr && (base.d = o.memory->get(base.key))) {
    base.cached = true;
    return;
  }
  if (w.cache == nullptr) return;
  std::string warning;
  std::optional<Decomposition> d = w.cache->load(base.key, &warning);
  if (!warning.empty()) w.state.note(warning);
  if (!d) return;
  base.d = std::make_shared<const Decomposition>(std::move(*d));
  base.cached = true;
  if (o.memory != nullptr) o.memory->count_disk_hit(), o.memory->put(base.key, base.d);
}

// The base's decomposition computed, then kept in memory and on disk for later units and runs.
void compute_base(UnitWork& w, Backend& backend, const WorkUnit& u, BaseSide& base) {
  base.d = std::make_shared<const Decomposition>(
      decompose_side(backend, u, /*tuned=*/false, w.options.side, 0));
  if (w.options.memory != nullptr)
    w.options.memory->count_miss(), w.options.memory->put(base.key, base.d);
  std::string warning;
  const std::string label = u.pair.base.file->path() + ": " + u.name;
  if (w.cache != nullptr && w.cache_writes && !w.cache->store(base.key, *base.d, label, &warning))
    if (w.cache_writes.exchange(false)) w.state.note(warning);  // warned once
}

}  // namespace

void UnitWork::run_entry(Backend& backend, const PlanEntry& entry) {
  const AnalyzeOptions& o = options;
  BaseSide base;
  for (const WorkUnit& u : entry.units) {
    if (!u.pending) continue;
    if (state.cancelled()) break;
    state.started(u);
    const auto start = std::chrono::steady_clock::now();
    if (!base.d) look_up_base(*this, backend, u, base);
    check_intact(u.pair);
    if (!base.d) compute_base(*this, backend, u, base);
    const bool same = u.pair.lora == nullptr && u.part.label.empty() &&
                      bytes_identical(u.pair.base, u.pair.tuned);
    const int k = static_cast<int>(std::min<int64_t>(o.k, std::min(u.rows, u.cols)));
    std::optional<Decomposition> tuned;
    if (!same) tuned = decompose_tuned(backend, u, *base.d, o.side, k, o);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::optional<MatrixResult::Delta> delta;
    if (o.delta && !same) delta = describe_delta(backend, u);
    check_intact(u.pair);  // nothing below may rest on bytes that changed under the run
    const std::vector<Side>& sides = state.sides();
    std::vector<MatrixResult> records;
    for (Side s : sides) {
      MatrixResult r = same ? identical_record(*base.d, s, k, eps)
                            : intruder_record(backend, *tuned, *base.d, s, k, eps);
      mark_null_directions(r, null_floor(u.rows, u.cols, backend.precision()), eps);
      add_metrics(r, u, same ? nullptr : &*tuned, *base.d, s);
      r.k_clamped = k < o.k;
      describe(r, u, base.cached, secs / static_cast<double>(sides.size()));
      r.route = same ? "identical" : tuned->route;
      if (delta) r.has_delta = true, r.delta = *delta;
      if (o.on_record) o.on_record(r, same ? nullptr : &*tuned);
      records.push_back(std::move(r));
    }
    state.finished(u, records);
    u.pair.tuned.file->release(*u.pair.tuned.info);
  }
  if (!entry.units.empty())
    entry.units.front().pair.base.file->release(*entry.units.front().pair.base.info);
}

}  // namespace indim::detail
