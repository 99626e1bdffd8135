#include "pipeline/unit_work.hpp"

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>

#include "indim/peft.hpp"
#include "indim/quant.hpp"
#include "pipeline/decompose.hpp"
#include "pipeline/intruders.hpp"
#include "pipeline/metrics.hpp"
#include "pipeline/noise_floor.hpp"

namespace indim::detail {

namespace {

// Every file a unit reads, checked for changes under the run (see SafetensorsFile::check_intact);
// called before a unit starts and again before its record is kept.
void check_intact(const MatchedPair& p) {
  for (const TensorRef* r : {&p.base, &p.tuned}) {
    r->file->check_intact(*r->info);
    if (r->quant != nullptr && r->quant->scale.file != nullptr)
      r->quant->scale.file->check_intact(*r->quant->scale.info);
  }
  if (p.lora != nullptr) {
    p.lora->a.file->check_intact(*p.lora->a.info);
    p.lora->b.file->check_intact(*p.lora->b.info);
    if (p.lora->magnitude) p.lora->magnitude->file->check_intact(*p.lora->magnitude->info);
  }
}

bool same_bytes(const TensorRef& a, const TensorRef& b) {
  return a.info->dtype == b.info->dtype && a.info->nbytes() == b.info->nbytes() &&
         std::memcmp(a.file->data(*a.info), b.file->data(*b.info), a.info->nbytes()) == 0;
}

// Same codes and, for quantised tensors, the same format and scales.
bool bytes_identical(const TensorRef& a, const TensorRef& b) {
  if ((a.quant == nullptr) != (b.quant == nullptr) || !same_bytes(a, b)) return false;
  if (a.quant == nullptr) return true;
  const QuantRef &qa = *a.quant, &qb = *b.quant;
  return qa.format == qb.format && qa.format != QuantFormat::NoScale &&
         qa.block_rows == qb.block_rows && qa.block_cols == qb.block_cols &&
         same_bytes(qa.scale, qb.scale);
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
  r.expert = expert_of(u);
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

// A base decomposition as its units (and the memory cache) share it, unchanged from now on: its
// vectors get ids, so a backend may keep its own copy of them for every unit of the entry.
std::shared_ptr<const Decomposition> shared_base(Decomposition&& d) {
  d.left.id = new_vectors_id();
  d.right.id = new_vectors_id();
  return std::make_shared<const Decomposition>(std::move(d));
}

// The base's decomposition from memory (options.memory) or the disk cache under `key`, when
// either has it.
void look_up_base(const UnitWork& w, const std::string& key, BaseSide& base) {
  const AnalyzeOptions& o = w.options;
  base.key = key;
  if (o.memory != nullptr && (base.d = o.memory->get(base.key))) {
    base.cached = true;
    return;
  }
  if (w.cache == nullptr) return;
  std::string warning;
  std::optional<Decomposition> d = w.cache->load(base.key, &warning);
  if (!warning.empty()) w.state.note(warning);
  if (!d) return;
  base.d = shared_base(std::move(*d));
  base.cached = true;
  if (o.memory != nullptr) o.memory->count_disk_hit(), o.memory->put(base.key, base.d);
}

// The base's decomposition computed, then kept in memory and on disk for later units and runs.
void compute_base(UnitWork& w, Backend& backend, const WorkUnit& u, BaseSide& base) {
  base.d = shared_base(decompose_side(backend, u, /*tuned=*/false, w.options.side, 0));
  if (w.options.memory != nullptr)
    w.options.memory->count_miss(), w.options.memory->put(base.key, base.d);
  std::string warning;
  const std::string label = u.pair.base.file->path() + ": " + u.name;
  if (w.cache != nullptr && w.cache_writes && !w.cache->store(base.key, *base.d, label, &warning))
    if (w.cache_writes.exchange(false)) w.state.note(warning);  // warned once
}

}  // namespace

const std::string& UnitWork::base_key(Backend& backend, const WorkUnit& u, size_t index) {
  return base_keys.get(index, [&] {
    return base_cache_key(u, options.side, backend.name() + "." + backend.algo(),
                          options.precision);
  });
}

std::vector<StagedInput> UnitWork::staged_inputs(Backend& backend, const PlanEntry& entry,
                                                 size_t index) {
  std::vector<StagedInput> in;
  for (const ByteRange& r : entry.backend_inputs()) in.push_back(StagedInput(r));
  const std::optional<ByteRange> base = entry.base_only_input();
  if (!base || (cache == nullptr && options.memory == nullptr)) return in;
  const WorkUnit* first = nullptr;
  for (const WorkUnit& u : entry.units)
    if (u.pending && first == nullptr) first = &u;
  for (StagedInput& s : in)
    if (s.range.data == base->data)
      s.cached = [this, &backend, first, index] {
        const std::string& key = base_key(backend, *first, index);
        return (options.memory != nullptr && options.memory->has(key)) ||
               (cache != nullptr && cache->has(key));
      };
  return in;
}

void UnitWork::run_entry(Backend& backend, const PlanEntry& entry, size_t index) {
  const AnalyzeOptions& o = options;
  BaseSide base;
  for (const WorkUnit& u : entry.units) {
    if (!u.pending) continue;
    if (state.cancelled()) break;
    state.started(u);
    const auto start = std::chrono::steady_clock::now();
    if (!base.d && (cache != nullptr || o.memory != nullptr))
      look_up_base(*this, base_key(backend, u, index), base);
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
    if (noise_floor_applies(u, o.noise_floor)) add_noise_floor(backend, u, *base.d, k, o, records);
    state.finished(u, records);
    u.pair.tuned.file->release(*u.pair.tuned.info);
  }
  if (!entry.units.empty())
    entry.units.front().pair.base.file->release(*entry.units.front().pair.base.info);
}

}  // namespace indim::detail
