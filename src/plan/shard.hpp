// A run's plan split into shards: base matrices (plan entries, each with every fine-tune's units
// of it, so a base is decomposed by one shard only) assigned by estimated cost, the same way on
// every machine, and the hash that tells the shards of one run from those of another.
#pragma once

#include <nlohmann/json.hpp>

#include "indim/analyze.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// The assignment of every entry of `plan` to one of spec.count shards (longest first onto the
/// least-loaded shard, costs weighing flops and bytes), and its hash over `header` (the run
/// header as JSON, without its paths) and the plan's structure and costs.
RunHeader::Shard make_shard_plan(const Plan& plan, const ShardSpec& spec,
                                 const nlohmann::json& header);

/// Drops the entries `shard` assigns to other shards; the order of the rest is kept.
void keep_shard(Plan& plan, const RunHeader::Shard& shard);

}  // namespace indim::detail
