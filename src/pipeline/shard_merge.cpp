// The merge stage of a sharded run: every shard's output folder read back (its report.json, the
// mark of a finished shard, and its journal, which holds the records with their plot data),
// checked to be one complete set of one run, and written out as the unsharded run would.
#include <algorithm>
#include <filesystem>
#include <sstream>

#include "indim/error.hpp"
#include "indim/shards.hpp"
#include "io/atomic_file.hpp"
#include "io/dir_lock.hpp"
#include "io/json_strict.hpp"
#include "io/regular_file.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/outputs.hpp"
#include "pipeline/run_state.hpp"
#include "report/records.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

constexpr uint64_t kMaxReportBytes = 4ull << 30;
constexpr uint64_t kMaxJournalBytes = 16ull << 30;

struct ShardOutput {
  std::string dir;
  nlohmann::json header;      ///< the journal's first line
  nlohmann::json shard_json;  ///< report.json's "shard", which the journal's must equal
  RunHeader::Shard shard;
  std::vector<std::string> tuned_paths;  ///< as the shard's command named them
  double seconds = 0;
  int resumed = 0;
  size_t matrices = 0;  ///< records in its report.json
  std::map<detail::RecordKey, MatrixResult> records;
};

BadInput damaged(const std::string& dir, const std::string& what) {
  return BadInput(dir + ": damaged shard output: " + what + "; run that shard again");
}

// The numbers merge indexes by are in range (a hand-edited report must not reach past them).
void check_shard_block(const ShardOutput& s) {
  const RunHeader::Shard& b = s.shard;
  if (b.count < 2 || b.count > 4096 || b.index < 0 || b.index >= b.count)
    throw damaged(s.dir, "report.json: shard " + std::to_string(b.index) + " of " +
                             std::to_string(b.count) + " is out of range");
  for (const auto& e : b.plan) {
    if (e.shard < 0 || e.shard >= b.count)
      throw damaged(s.dir, "report.json: " + e.name + " is assigned to no shard of the run");
    for (int t : e.tuned)
      if (t < 0 || static_cast<size_t>(t) >= s.tuned_paths.size())
        throw damaged(s.dir, "report.json: " + e.name + " names fine-tune " + std::to_string(t) +
                                 " of " + std::to_string(s.tuned_paths.size()));
  }
}

// report.json: finished, sharded; what the merged report takes from it.
void read_report(ShardOutput& s) {
  const std::string path = (fs::path(s.dir) / "report.json").string();
  if (detail::path_kind(path) == detail::PathKind::Missing)
    throw BadInput(s.dir +
                   ": no report.json: the shard has not finished (the same command with "
                   "--resume completes it), or this is not a shard's output folder");
  const nlohmann::json r =
      detail::parse_json_strict(detail::read_regular_file(path, kMaxReportBytes), path);
  if (!r.is_object() || !r.contains("shard"))
    throw BadInput(path + ": written by a run without --shard: there is nothing to merge");
  try {
    for (const auto& t : r.at("tuned")) s.tuned_paths.push_back(t.at("path").get<std::string>());
    s.seconds = r.at("timing").at("seconds").get<double>();
    s.resumed = r.at("timing").at("resumed_records").get<int>();
    s.matrices = r.at("matrices").size();
    s.shard_json = r.at("shard");
    s.shard = detail::shard_from_json(s.shard_json);
  } catch (const nlohmann::json::exception& e) {
    throw damaged(s.dir, std::string("report.json: ") + e.what());
  }
  check_shard_block(s);
}

// journal.jsonl: the header of the same run, then whole records (the last one wins, as in a
// resumed run).
void read_journal(ShardOutput& s) {
  const std::string path = (fs::path(s.dir) / "journal.jsonl").string();
  if (detail::path_kind(path) == detail::PathKind::Missing)
    throw damaged(s.dir, "no journal.jsonl");
  std::istringstream in(detail::read_regular_file(path, kMaxJournalBytes));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const std::string at = "journal.jsonl line " + std::to_string(n);
    try {
      if (n == 1) {
        if (j.is_discarded() || !j.contains("shard")) throw damaged(s.dir, at + ": no header");
        s.header = j;
        if (j["shard"] != s.shard_json ||
            detail::header_from_json(j).tuned.size() != s.tuned_paths.size())
          throw damaged(s.dir, "journal.jsonl and report.json are of different runs");
        continue;
      }
      if (j.is_discarded() || !j.contains("record")) throw damaged(s.dir, at + ": not a record");
      MatrixResult r = detail::record_from_json(j["record"]);
      s.records[{r.tuned_index, r.name, r.side}] = std::move(r);
    } catch (const BadInput&) {
      throw;
    } catch (const Error& e) {
      throw damaged(s.dir, at + ": " + e.what());
    }
  }
  if (s.header.is_null()) throw damaged(s.dir, "journal.jsonl is empty");
}

// Every record the shard runs is there, and no other.
void check_complete(const ShardOutput& s, const std::vector<Side>& sides) {
  size_t expected = 0;
  for (const auto& e : s.shard.plan) {
    if (e.shard != s.shard.index) continue;
    for (int t : e.tuned)
      for (Side side : sides) {
        ++expected;
        if (s.records.count({t, e.name, side_name(side)}) == 0)
          throw damaged(s.dir, "no record of " + e.name + " (fine-tune " + std::to_string(t) +
                                   ", " + side_name(side) + ")");
      }
  }
  if (s.records.size() != expected || s.matrices != expected)
    throw damaged(s.dir, "holds " + std::to_string(s.records.size()) + " journal and " +
                             std::to_string(s.matrices) + " report records where its plan has " +
                             std::to_string(expected));
}

// One run (one plan hash, one count), every shard once.
void check_set(std::vector<ShardOutput>& shards) {
  const ShardOutput& first = shards.front();
  for (const ShardOutput& s : shards) {
    if (s.shard.plan_hash != first.shard.plan_hash || s.shard.count != first.shard.count)
      throw BadInput("shards of different inputs or settings: " + first.dir + " is shard " +
                     std::to_string(first.shard.index) + "/" + std::to_string(first.shard.count) +
                     " with plan hash " + first.shard.plan_hash + ", " + s.dir + " is " +
                     std::to_string(s.shard.index) + "/" + std::to_string(s.shard.count) +
                     " with " + s.shard.plan_hash + "; every shard must run the same command");
  }
  std::vector<const ShardOutput*> at(static_cast<size_t>(first.shard.count), nullptr);
  for (const ShardOutput& s : shards) {
    const ShardOutput*& slot = at[static_cast<size_t>(s.shard.index)];
    if (slot != nullptr)
      throw BadInput("shard " + std::to_string(s.shard.index) + " given twice: " + slot->dir +
                     " and " + s.dir);
    slot = &s;
  }
  std::string missing;
  for (size_t i = 0; i < at.size(); ++i)
    if (at[i] == nullptr) missing += (missing.empty() ? "" : ", ") + std::to_string(i);
  if (!missing.empty())
    throw BadInput("shard(s) " + missing + " of " + std::to_string(first.shard.count) +
                   " missing: merge needs the output folder of every shard");
  std::sort(shards.begin(), shards.end(),
            [](const auto& a, const auto& b) { return a.shard.index < b.shard.index; });
}

AnalyzeResult combine(const std::vector<ShardOutput>& shards) {
  AnalyzeResult res;
  res.header = detail::header_from_json(shards.front().header);
  const RunHeader::Shard plan = res.header.shard;
  res.header.shard = {};  // the merged run is the unsharded one
  res.eps = res.header.eps_grid;
  res.backend = res.header.backend;
  std::map<detail::RecordKey, MatrixResult> all;
  for (const ShardOutput& s : shards) {
    all.insert(s.records.begin(), s.records.end());
    res.seconds += s.seconds;
    res.resumed += s.resumed;
    res.shard_times.push_back({s.shard.index, s.seconds, static_cast<int>(s.records.size())});
  }
  std::vector<std::string> entries;
  for (const auto& e : plan.plan) entries.push_back(e.name);
  detail::collect_records(res, shards.front().tuned_paths, entries,
                          detail::record_sides(*parse_side(res.header.side)), all);
  return res;
}

// The merged run's journal: what the unsharded run's would hold, so --out is a run's folder.
std::string journal_text(const AnalyzeResult& res) {
  std::string text = detail::header_to_json(res.header).dump() + "\n";
  for (const MatrixResult& r : res.records) {
    nlohmann::ordered_json j;
    j["record"] = detail::record_to_json(r, /*primary_eps=*/0, /*plot=*/true);
    text += j.dump() + "\n";
  }
  return text;
}

std::unique_ptr<detail::DirLock> lock_out(const MergeOptions& o) {
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (detail::path_kind(o.out_dir) != detail::PathKind::Directory)
    throw Error(o.out_dir + ": cannot create the output directory" +
                (ec ? ": " + ec.message() : std::string()));
  return std::make_unique<detail::DirLock>(o.out_dir, "indim merge");
}

}  // namespace

AnalyzeResult merge_shards(const MergeOptions& o) {
  if (o.dirs.empty()) throw UsageError("merge needs the output folders of the shards");
  if (o.out_dir.empty()) throw UsageError("--out must name a directory");
  std::error_code ec;
  for (const std::string& d : o.dirs)
    if (fs::equivalent(d, o.out_dir, ec))
      throw UsageError("--out " + o.out_dir + " is the shard folder " + d +
                       "; merge into a folder of its own");
  std::vector<ShardOutput> shards;
  for (const std::string& d : o.dirs) {
    ShardOutput s;
    s.dir = d;
    read_report(s);
    read_journal(s);
    shards.push_back(std::move(s));
  }
  check_set(shards);
  const std::optional<Side> side = parse_side(shards.front().header["settings"].value("side", ""));
  if (!side)
    throw damaged(shards.front().dir, "journal.jsonl: settings.side is not left, right or both");
  const std::vector<Side> sides = detail::record_sides(*side);
  for (const ShardOutput& s : shards) check_complete(s, sides);
  AnalyzeResult res = combine(shards);
  AnalyzeOptions w;
  w.out_dir = o.out_dir;
  w.html = o.html;
  w.eps = res.header.eps;
  w.k = res.header.k;
  w.plot_matrices = o.plot_matrices;
  w.plot_top = o.plot_top;
  const auto lock = lock_out(o);
  detail::output_paths(res, w);
  detail::write_file_atomic(res.journal, journal_text(res));
  detail::write_outputs_locked(res, w);
  return res;
}

}  // namespace indim
