#include "plan/plan.hpp"

#include <algorithm>
#include <map>
#include <optional>

#include "indim/cache.hpp"
#include "indim/peft.hpp"
#include "indim/schedule.hpp"

namespace indim::detail {

namespace {

std::string part_key(const std::string& name, const MatrixPart& part) {
  return part.label.empty() ? name : name + "[" + part.label + "]";
}

// A side's matrix (or part) that is one contiguous run of stored bytes: a whole 2-D tensor
// (transposed for Conv1D), an expert of a 3-D stack, or a run of consecutive rows of either. A
// quantised one carries its scales; its rows are read on the host (blocks span them).
std::optional<SideRead> stored_block(const TensorRef& ref, const MatrixPart& part, bool conv1d) {
  const auto& shape = ref.info->shape;
  const size_t bits = static_cast<size_t>(dtype_bits(ref.info->dtype));
  if (!((shape.size() == 2 && part.slice < 0) || (shape.size() == 3 && part.slice >= 0)))
    return std::nullopt;
  SideRead b;
  b.kind = SideRead::Kind::Stored;
  b.data = ref.file->data(*ref.info);
  b.dtype = ref.info->dtype;
  b.rows = static_cast<int64_t>(shape[shape.size() - 2]);
  b.cols = static_cast<int64_t>(shape[shape.size() - 1]);
  b.transposed = conv1d && shape.size() == 2;
  if (ref.quant != nullptr) {
    if (!part.rows.empty() || ref.quant->format == QuantFormat::NoScale) return std::nullopt;
    b.scales = ref.quant->scales_for(part.slice, b.rows, b.cols);
  }
  if (part.slice >= 0) b.data += static_cast<size_t>(part.slice * b.rows * b.cols) * bits / 8;
  if (!part.rows.empty()) {
    if (b.transposed) return std::nullopt;  // rows of a Conv1D's [out, in] are stored columns
    for (size_t i = 1; i < part.rows.size(); ++i)
      if (part.rows[i] != part.rows[0] + static_cast<int64_t>(i)) return std::nullopt;
    b.data += static_cast<size_t>(part.rows.front() * b.cols) * bits / 8;
    b.rows = static_cast<int64_t>(part.rows.size());
  }
  b.bytes = static_cast<size_t>(b.rows * b.cols) * bits / 8;
  return b;
}

SideRead base_read(const MatchedPair& p, const MatrixPart& part) {
  return stored_block(p.base, part, p.conv1d).value_or(SideRead{});
}

// The tuned side: the base bytes merged on the backend for a whole LoRA-adapted matrix, the
// stored block of a full tensor, or the host.
SideRead tuned_read(const MatchedPair& p, const MatrixPart& part) {
  if (p.lora != nullptr) {
    if (!part.label.empty() || p.base.quant != nullptr) return {};
    const TensorRef& b = p.base;
    SideRead r;
    r.kind = SideRead::Kind::Merged;
    r.data = b.file->data(*b.info);
    r.bytes = b.info->nbytes();
    r.rows = static_cast<int64_t>(b.info->shape[0]);
    r.cols = static_cast<int64_t>(b.info->shape[1]);
    return r;
  }
  return stored_block(p.tuned, part, p.conv1d).value_or(SideRead{});
}

// The matrix as analysed, [out, in] (transposed for Conv1D, rows of its part).
std::pair<int64_t, int64_t> analysed_shape(const MatchedPair& p, const MatrixPart& part) {
  const auto& shape = p.base.info->shape;
  int64_t rows = static_cast<int64_t>(shape[shape.size() - 2]);
  int64_t cols = static_cast<int64_t>(shape[shape.size() - 1]);
  if (p.conv1d) std::swap(rows, cols);
  if (!part.rows.empty()) rows = static_cast<int64_t>(part.rows.size());
  return {rows, cols};
}

// Stored bytes a side reads: its block and its scales, or (on the host) its whole tensor and
// scale tensor; a LoRA's factors.
uint64_t side_bytes(const TensorRef& ref, const SideRead& read) {
  if (read.on_backend()) return read.bytes + (read.scales.present() ? read.scales.bytes() : 0);
  const bool scaled = ref.quant != nullptr && ref.quant->scale.info != nullptr;
  return ref.info->nbytes() + (scaled ? ref.quant->scale.info->nbytes() : 0);
}

// The tuned side's work: a LoRA unit that the low-rank route takes (decompose_tuned's choice,
// less its backend's part: the break-even is the one against the Gram) at that route's cost,
// any other at a decomposition's.
double tuned_cost(const WorkUnit& u, bool lowrank) {
  if (u.pair.lora == nullptr || !lowrank || !u.part.label.empty() ||
      u.tuned.kind != SideRead::Kind::Merged)
    return matrix_cost(u.rows, u.cols, 0);
  const int64_t r = static_cast<int64_t>(u.pair.lora->a.info->shape[0]);
  return r <= lowrank_max_rank(u.rows, u.cols, false) ? lowrank_cost(u.rows, u.cols, r)
                                                      : matrix_cost(u.rows, u.cols, 0);
}

WorkUnit make_unit(int tuned_index, const MatchedPair& p, const MatrixPart& part, bool lowrank) {
  WorkUnit u{tuned_index, p, part, part_key(p.base_name, part), 0, 0, {}, {}, {}, true};
  std::tie(u.rows, u.cols) = analysed_shape(p, part);
  u.base = base_read(p, part);
  u.tuned = tuned_read(p, part);
  u.cost.flops = tuned_cost(u, lowrank);
  u.cost.bytes = p.lora == nullptr ? side_bytes(p.tuned, u.tuned)
                                   : p.lora->a.info->nbytes() + p.lora->b.info->nbytes();
  return u;
}

}  // namespace

std::vector<ByteRange> PlanEntry::backend_inputs() const {
  std::vector<ByteRange> in;
  auto add = [&](const SideRead& r) {
    if (!r.on_backend()) return;
    for (const ByteRange& b : in)
      if (b.data == r.data) return;  // a base serves every unit of its entry
    in.push_back({r.data, r.bytes});
    if (r.scales.present()) in.push_back({r.scales.data, r.scales.bytes()});
  };
  for (const WorkUnit& u : units)  // in order of use: each unit's base, then its tuned side
    if (u.pending) add(u.base), add(u.tuned);
  return in;
}

std::optional<ByteRange> PlanEntry::base_only_input() const {
  const WorkUnit* first = nullptr;
  for (const WorkUnit& u : units)
    if (u.pending) {
      if (first == nullptr) first = &u;
      if (u.tuned.on_backend() && u.tuned.data == u.base.data) return std::nullopt;  // a merge
    }
  if (first == nullptr || !first->base.on_backend()) return std::nullopt;
  return ByteRange{first->base.data, first->base.bytes};
}

UnitCost PlanEntry::cost() const {
  UnitCost c;
  for (const WorkUnit& u : units) c += u.cost;
  return c;
}

size_t Plan::units() const {
  size_t n = 0;
  for (const auto& e : entries) n += e.units.size();
  return n;
}

UnitCost Plan::cost() const {
  UnitCost c;
  for (const auto& e : entries) c += e.cost();
  return c;
}

Plan make_plan(const Checkpoint& base, const std::vector<MatchTable>& tables, bool lowrank) {
  Plan plan;
  std::map<std::string, size_t> at;
  for (size_t t = 0; t < tables.size(); ++t)
    for (const auto& p : tables[t].pairs) {
      if (!p.selected) continue;
      const std::vector<MatrixPart> parts = p.parts.empty() ? std::vector<MatrixPart>{{}} : p.parts;
      for (const MatrixPart& part : parts) {
        WorkUnit u = make_unit(static_cast<int>(t), p, part, lowrank);
        auto it = at.find(u.name);
        if (it == at.end())
          it = at.emplace(u.name, plan.entries.size()).first, plan.entries.push_back({u.name, {}});
        plan.entries[it->second].units.push_back(std::move(u));
      }
    }
  // The base's decomposition and bytes are the first unit's to carry.
  for (PlanEntry& e : plan.entries) {
    WorkUnit& first = e.units.front();
    first.cost.flops += matrix_cost(first.rows, first.cols, 0);
    first.cost.bytes += side_bytes(first.pair.base, first.base);
  }
  std::map<const SafetensorsFile*, size_t> file_rank;
  for (size_t i = 0; i < base.files().size(); ++i) file_rank[base.files()[i].get()] = i;
  std::stable_sort(plan.entries.begin(), plan.entries.end(), [&](const auto& a, const auto& b) {
    const TensorRef& ra = a.units.front().pair.base;
    const TensorRef& rb = b.units.front().pair.base;
    return std::make_pair(file_rank[ra.file], ra.info->begin) <
           std::make_pair(file_rank[rb.file], rb.info->begin);
  });
  return plan;
}

int expert_of(const WorkUnit& u) {
  if (u.part.slice >= 0) return static_cast<int>(u.part.slice);
  return expert_index(u.pair.base_name);
}

std::string base_cache_key(const WorkUnit& u, Side side, const std::string& backend_algo,
                           Precision precision) {
  const TensorRef& b = u.pair.base;
  std::string context = "indim-cache-v1|" + std::string(dtype_name(b.info->dtype)) + "|" +
                        shape_text(b.info->shape) + "|" + side_name(side) + "|" + backend_algo +
                        "|" + precision_name(precision) + (u.pair.conv1d ? "|conv1d" : "") +
                        "|part=" + u.part.label;
  if (b.quant != nullptr && b.quant->scale.info != nullptr) {  // the scales are half the value
    const TensorRef& s = b.quant->scale;
    context += "|" + b.quant->describe() + "|scales=" +
               DecompositionCache::key(s.file->data(*s.info), s.info->nbytes(), "scales");
  }
  return DecompositionCache::key(b.file->data(*b.info), b.info->nbytes(), context);
}

}  // namespace indim::detail
