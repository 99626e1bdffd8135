#include "pipeline/inputs.hpp"

#include "indim/error.hpp"
#include "indim/quant.hpp"
#include "io/names.hpp"

namespace indim::detail {

namespace {

constexpr const char* kSchemaVersion = "1.2";

// gpt-oss stores its MXFP4 experts [E, out, in] (`_blocks`) but its dense ones, as transformers
// writes a fine-tune, [E, in, out]: one against the other would compare W with W^T (silently,
// for the square down_proj), so the pair is refused until per-side orientation exists.
void refuse_mixed_mxfp4(const MatchedPair& p) {
  auto mx = [](const TensorRef& r) {
    return r.quant != nullptr && r.quant->format == QuantFormat::Mxfp4;
  };
  if (mx(p.base) == mx(p.tuned)) return;
  const TensorRef& dense = mx(p.base) ? p.tuned : p.base;
  if (dense.info->shape.size() != 3) return;
  throw BadInput(InputProblem::Unsupported,
                 dense.file->path() + ": tensor '" + dense.info->name +
                     "': an MXFP4 expert stack (stored [E, out, in]) against a dense one (gpt-oss "
                     "writes those [E, in, out]) is not supported; compare two MXFP4 or two dense "
                     "checkpoints, or --exclude it");
}

void check_pair(const MatchedPair& p) {
  refuse_mixed_mxfp4(p);
  if (!p.shapes_equal)
    throw BadInput(InputProblem::Mismatch, p.base.file->path() + ": tensor '" + p.base_name + "' " +
                                               shape_text(p.base.info->shape) + " does not match " +
                                               p.tuned.file->path() + ": tensor '" + p.tuned_name +
                                               "' " + shape_text(p.tuned.info->shape));
  for (const TensorRef* r : {&p.base, &p.tuned}) {
    if (r->quant != nullptr && r->quant->format == QuantFormat::NoScale)
      throw BadInput(r->quant->malformed ? InputProblem::Malformed : InputProblem::Unsupported,
                     r->quant->problem + "; --exclude it");
    if (r->quant == nullptr && !dtype_is_analysable(r->info->dtype))
      throw BadInput(InputProblem::Unsupported,
                     r->file->path() + ": tensor '" + r->info->name + "' has dtype " +
                         dtype_name(r->info->dtype) +
                         ", which indim cannot analyse (F64, F32, F16, BF16; FP8 with its " +
                         "scales; MXFP4 blocks with theirs); --exclude it");
  }
}

void check_selection(const AnalyzeOptions& o, const std::vector<MatchTable>& tables) {
  for (size_t t = 0; t < tables.size(); ++t) {
    int n = 0;
    for (const auto& p : tables[t].pairs)
      if (p.selected) check_pair(p), ++n;
    if (n == 0)
      throw BadInput(InputProblem::NothingSelected,
                     o.tuned[t] + ": no matrix selected for analysis against " + o.base +
                         " (see `indim inspect BASE TUNED`, or use --include)");
  }
}

InputInfo checkpoint_info(const Checkpoint& c) {
  InputInfo in;
  in.path = c.path();
  in.kind = c.kind();
  in.tensors = c.tensors().size();
  in.bytes = c.total_bytes();
  for (const auto& f : c.files()) in.files.push_back({f->path(), f->file_size(), f->mtime()});
  return in;
}

void check_name(const std::string& name) {
  if (!is_utf8(name))
    throw BadInput(
        InputProblem::Malformed,
        shown_name(name) + ": the name is not UTF-8, which indim's reports cannot hold; rename it");
}

// Every name the report will hold: the arguments and every file read.
void check_names(const AnalyzeOptions& o, const RunInputs& in) {
  check_name(o.base);
  for (const auto& t : o.tuned) check_name(t);
  for (const auto& f : in.base.files()) check_name(f->path());
  for (const auto& t : in.tuned) {
    check_name(t.path());
    for (const auto& f : t.checkpoint().files()) check_name(f->path());
  }
}

InputInfo tuned_info(const TunedInput& t) {
  InputInfo in = checkpoint_info(t.checkpoint());
  in.path = t.path();
  if (const Adapter* a = t.adapter()) {
    const LoraConfig& c = a->config();
    in.kind = "peft-lora";
    in.is_lora = true;
    in.lora = {
        c.r, c.alpha, c.use_rslora, c.use_dora, a->modules().size(), a->full_tensors().size()};
  }
  return in;
}

// An input given as a hub id: the id, what it resolved to, and the id as its path.
void describe_hub(InputInfo& in, const InputPath& p) {
  if (!p.hub) return;
  in.path = p.hub->id;
  in.hub = {p.hub->id, p.hub->repo, p.hub->revision, p.hub->commit, p.hub->subfolder};
}

}  // namespace

RunInputs::RunInputs(const AnalyzeOptions& o, const std::function<void(const std::string&)>& note)
    : base_path(resolve_input(o.base, o.hub_caches, o.files)),
      base(Checkpoint::open(base_path.path, o.files)),
      layout(detect_layout(base)) {
  for (const auto& p : o.tuned) {
    tuned_paths.push_back(resolve_input(p, o.hub_caches, o.files));
    tuned.push_back(TunedInput::open(tuned_paths.back().path, o.files));
    tables.push_back(tuned.back().match(base, o.select, layout));
  }
  check_names(o, *this);
  for (const auto& w : base.warnings()) note("warning: " + w);
  for (const auto& t : tuned) {
    for (const auto& w : t.checkpoint().warnings()) note("warning: " + w);
    if (t.is_adapter())
      for (const auto& w : t.adapter()->config().warnings) note("warning: " + w);
  }
  check_selection(o, tables);
}

RunHeader make_header(const AnalyzeOptions& o, const RunInputs& in, const Backend& backend) {
  RunHeader h;
  h.schema_version = kSchemaVersion;
  h.base = checkpoint_info(in.base);
  describe_hub(h.base, in.base_path);
  for (size_t t = 0; t < in.tuned.size(); ++t) {
    h.tuned.push_back(tuned_info(in.tuned[t]));
    describe_hub(h.tuned.back(), in.tuned_paths[t]);
  }
  h.k = o.k;
  h.eps = o.eps;
  h.eps_grid = eps_grid(o.eps);
  h.precision = precision_name(o.precision);
  h.side = side_name(o.side);
  h.backend = backend.name();
  h.algo = backend.algo();
  h.include = o.select.include;
  h.exclude = o.select.exclude;
  h.delta = o.delta;
  h.lowrank = o.lowrank;
  h.lowrank_tol = o.lowrank_tol;
  h.layout = in.layout.describe();
  return h;
}

}  // namespace indim::detail
