#include "plan/shard.hpp"

#include <charconv>
#include <cstdio>
#include <filesystem>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "indim/error.hpp"
#include "indim/schedule.hpp"
#include "indim/shards.hpp"

namespace indim {

ShardSpec parse_shard(const std::string& text) {
  const auto fail = [&]() {
    return UsageError("--shard takes I/N with 0 <= I < N <= 4096 (e.g. 0/4), not '" + text + "'");
  };
  const size_t slash = text.find('/');
  if (slash == std::string::npos) throw fail();
  ShardSpec s;
  const char* end = text.data() + text.size();
  auto a = std::from_chars(text.data(), text.data() + slash, s.index);
  auto b = std::from_chars(text.data() + slash + 1, end, s.count);
  if (a.ec != std::errc() || a.ptr != text.data() + slash || b.ec != std::errc() || b.ptr != end)
    throw fail();
  if (s.count < 1 || s.count > 4096 || s.index < 0 || s.index >= s.count) throw fail();
  return s;
}

}  // namespace indim

namespace indim::detail {

namespace {

// How many flops of decomposition cost as much time as reading one byte: a GPU node decomposes
// at about 1e12 flop/s in this route mix and reads checkpoints at about 2e10 B/s.
constexpr double kFlopsPerByte = 50;

double weight(const UnitCost& c) { return c.flops + kFlopsPerByte * static_cast<double>(c.bytes); }

// The header without what differs between machines that run one command: the paths of the
// inputs (their files keep their names, sizes and times) and the shard block itself.
nlohmann::json without_paths(nlohmann::json header) {
  header.erase("shard");
  auto strip = [](nlohmann::json& in) {
    in.erase("path");
    for (auto& f : in["files"])
      f["path"] = std::filesystem::path(f.value("path", "")).filename().string();
  };
  strip(header["inputs"]["base"]);
  for (auto& t : header["inputs"]["tuned"]) strip(t);
  return header;
}

std::string plan_hash(const Plan& plan, const nlohmann::json& header) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  const std::string h = without_paths(header).dump();
  XXH3_64bits_update(st, h.data(), h.size());
  for (const PlanEntry& e : plan.entries) {
    std::string line = e.name;
    for (const WorkUnit& u : e.units) {
      char buf[128];
      std::snprintf(buf, sizeof buf, "|%d:%lldx%lld:%.17g:%llu", u.tuned_index,
                    static_cast<long long>(u.rows), static_cast<long long>(u.cols), u.cost.flops,
                    static_cast<unsigned long long>(u.cost.bytes));
      line += buf;
    }
    line += "\n";
    XXH3_64bits_update(st, line.data(), line.size());
  }
  const unsigned long long v = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", v);
  return hex;
}

}  // namespace

RunHeader::Shard make_shard_plan(const Plan& plan, const ShardSpec& spec,
                                 const nlohmann::json& header) {
  std::vector<double> costs;
  for (const PlanEntry& e : plan.entries) costs.push_back(weight(e.cost()));
  const std::vector<int> owner = assign_workers(costs, spec.count);
  RunHeader::Shard s;
  s.index = spec.index;
  s.count = spec.count;
  s.plan_hash = plan_hash(plan, header);
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    RunHeader::Shard::Entry e{plan.entries[i].name, owner[i], {}};
    for (const WorkUnit& u : plan.entries[i].units) e.tuned.push_back(u.tuned_index);
    s.plan.push_back(std::move(e));
  }
  return s;
}

void keep_shard(Plan& plan, const RunHeader::Shard& shard) {
  std::vector<PlanEntry> kept;
  for (size_t i = 0; i < plan.entries.size(); ++i)
    if (shard.plan[i].shard == shard.index) kept.push_back(std::move(plan.entries[i]));
  plan.entries = std::move(kept);
}

}  // namespace indim::detail
