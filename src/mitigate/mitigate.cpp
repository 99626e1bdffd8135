// indim mitigate as a composition: check the options, analyse (keeping each matrix's intruder
// vectors as the records are made), then per matrix with intruders write every variant into
// its folder, publish the folders, and write mitigation.json and the analysis' outputs (with
// the mitigation section in report.html), all under one lock on the output folder.
#include "indim/mitigate.hpp"

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>

#include "indim/error.hpp"
#include "indim/tuned.hpp"
#include "io/atomic_file.hpp"
#include "io/dir_lock.hpp"
#include "mitigate/encode.hpp"
#include "mitigate/mitigate_matrix.hpp"
#include "mitigate/mitigation_report.hpp"
#include "mitigate/variant_folder.hpp"
#include "pipeline/inputs.hpp"
#include "pipeline/outputs.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

// "exact" (0), "r" (-1: each module's own rank) or a positive number.
int64_t parse_adapter_rank(const std::string& s) {
  if (s == "exact") return 0;
  if (s == "r") return -1;
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos ||
      std::stoll(s) < 1)
    throw UsageError("--adapter-rank takes exact, r or a rank from 1, not \"" + s.substr(0, 40) +
                     "\"");
  return std::stoll(s);
}

void validate(const MitigateOptions& o) {
  if (o.analysis.tuned.size() != 1) throw UsageError("mitigate takes one fine-tune (TUNED)");
  if (o.out_dir.empty()) throw UsageError("--out must name a directory");
  if (o.analysis.side != Side::Left)
    throw UsageError("mitigate scales left singular directions (side left)");
  if (o.analysis.eps.empty()) throw UsageError("--eps needs a value");
  if (o.lambdas.empty() || o.lambdas.size() > 16) throw UsageError("--lambda takes 1 to 16 values");
  std::map<std::string, int> seen;
  for (double l : o.lambdas) {
    if (!(l >= 0 && l <= 1))
      throw UsageError("--lambda values lie in [0, 1] (the fraction of each intruder kept)");
    if (seen[eps_key(l)]++ > 0) throw UsageError("--lambda " + eps_key(l) + " is given twice");
  }
  for (const std::string& c : o.controls)
    if (c != "shrink" && c != "rescale")
      throw UsageError("--controls takes shrink and rescale, not \"" + c.substr(0, 40) + "\"");
  parse_adapter_rank(o.adapter_rank);
}

// What no variant can be written for, refused before any work: a DoRA adapter (it rescales the
// merged rows: its update is no product of factors, so no adapter carries the intervention
// exactly), and a selected tensor of the fine-tune stored quantised (FP8, MXFP4: its codes and
// scales would have to be quantised anew, which is no longer the fine-tune's own format).
void refuse_unwritable(const detail::RunInputs& in) {
  const TunedInput& t = in.tuned.front();
  if (t.adapter() != nullptr && t.adapter()->config().use_dora)
    throw BadInput(InputProblem::Unsupported,
                   t.path() +
                       ": a DoRA adapter (use_dora) cannot carry the intervention as "
                       "factors; merge it into a full checkpoint first");
  for (const MatchedPair& p : in.tables.front().pairs)
    if (p.selected && p.shapes_equal && p.lora == nullptr &&
        (p.tuned.quant != nullptr || !detail::encodable(p.tuned.info->dtype)))
      throw BadInput(InputProblem::Unsupported,
                     p.tuned.file->path() + ": tensor '" + p.tuned.info->name + "' is stored as " +
                         dtype_name(p.tuned.info->dtype) +
                         (p.tuned.quant != nullptr ? " with scales" : "") +
                         "; indim mitigate writes variants of BF16, F16, F32 and F64 weights and "
                         "of LoRA adapters (indim analyze reads this fine-tune; dequantise it, "
                         "or --exclude the tensor, to mitigate)");
}

// The intruders of each new left-side record, with their vectors in fp64, by record name.
class Keeper {
 public:
  explicit Keeper(double eps) : eps_(eps) {}
  void keep(const MatrixResult& r, const Decomposition* d) {
    if (r.side != "left") return;
    detail::KeptIntruders k;
    for (int j = 0; j < r.k; ++j)
      if (r.maxcos[j] < eps_)
        k.js.push_back(j), k.sigma.push_back(r.sigma[j]), k.maxcos.push_back(r.maxcos[j]);
    if (d != nullptr && !k.js.empty()) {
      k.m = d->left.dim;
      k.u.resize(static_cast<size_t>(k.m * k.q()));
      for (int64_t i = 0; i < k.m; ++i)
        for (int64_t l = 0; l < k.q(); ++l) k.u[i * k.q() + l] = d->left.at(i, k.js[l]);
    }
    std::lock_guard<std::mutex> lock(mu_);
    kept_[r.name] = std::move(k);
  }
  const std::map<std::string, detail::KeptIntruders>& kept() const { return kept_; }

 private:
  double eps_;
  std::mutex mu_;
  std::map<std::string, detail::KeptIntruders> kept_;
};

std::unique_ptr<detail::DirLock> lock_out(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir, ec))
    throw Error(dir + ": cannot create the output directory" +
                (ec ? ": " + ec.message() : std::string()));
  return std::make_unique<detail::DirLock>(dir, "indim mitigate");
}

// Every matrix with intruders through every variant, into `outs`.
std::vector<MitigationRecord> mitigate_matrices(const MitigateOptions& o, const AnalyzeOptions& a,
                                                const Keeper& keeper,
                                                const std::vector<detail::VariantSpec>& specs,
                                                detail::VariantOuts& outs,
                                                const detail::RunInputs& in) {
  const int64_t rank_spec = parse_adapter_rank(o.adapter_rank);
  const Adapter* adapter = in.tuned.front().adapter();
  std::vector<MitigationRecord> records;
  for (const MatchedPair& p : in.tables.front().pairs) {
    if (!p.selected || !p.shapes_equal) continue;
    const std::vector<MatrixPart> parts = p.parts.empty() ? std::vector<MatrixPart>{{}} : p.parts;
    for (const MatrixPart& part : parts) {
      const std::string name =
          part.label.empty() ? p.base_name : p.base_name + "[" + part.label + "]";
      auto it = keeper.kept().find(name);
      if (it == keeper.kept().end() || it->second.js.empty()) continue;
      if (a.cancel != nullptr && a.cancel->cancelled())
        throw Cancelled("cancelled while writing the variants; nothing was published");
      if (p.lora != nullptr && part.label.empty())
        records.push_back(detail::mitigate_module(
            p, it->second, specs, outs, rank_spec < 0 ? p.lora->r : rank_spec, adapter->config()));
      else
        records.push_back(detail::mitigate_tensor(p, part, it->second, specs, outs));
    }
  }
  return records;
}

}  // namespace

MitigationResult mitigate(const MitigateOptions& o) {
  validate(o);
  const auto t0 = std::chrono::steady_clock::now();
  AnalyzeOptions a = o.analysis;
  a.out_dir = o.out_dir;
  a.resume = false;
  Keeper keeper(a.eps.front());
  const auto user_hook = a.on_record;
  a.on_record = [&](const MatrixResult& r, const Decomposition* d) {
    keeper.keep(r, d);
    if (user_hook) user_hook(r, d);
  };
  std::unique_ptr<detail::DirLock> lock = lock_out(o.out_dir);
  const detail::RunInputs in(a, [](const std::string&) {});  // the analysis notes its warnings
  refuse_unwritable(in);
  detail::remove_unpublished_folders(o.out_dir);  // a killed run's; the lock keeps out others
  MitigationResult res;
  res.analysis = detail::analyze_holding_lock(a, lock);
  const std::vector<detail::VariantSpec> specs = detail::variant_specs(o);
  detail::VariantOuts outs;
  for (const auto& v : specs)
    outs.push_back(detail::make_variant_out(o.out_dir, v, in.tuned.front()));
  res.records = mitigate_matrices(o, a, keeper, specs, outs, in);
  for (auto& out : outs) out->publish(), res.variant_dirs.push_back(out->final_path());
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.mitigation_json = (fs::path(o.out_dir) / "mitigation.json").string();
  detail::write_file_atomic(res.mitigation_json,
                            detail::mitigation_json(res, o, specs).dump(2) + "\n");
  a.html_appendix = detail::mitigation_html(res, specs);
  detail::write_outputs_locked(res.analysis, a);
  return res;
}

}  // namespace indim
