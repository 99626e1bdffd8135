"""indim: find intruder dimensions in fine-tuned checkpoints, from Python.

    import indim
    r = indim.analyze("base/", ["lora/"], k=10, eps=[0.5])
    r.matrices          # pandas DataFrame: matrices.csv's rows and columns
    r.totals            # intruders per fine-tune and eps
    r.report            # report.json as a dict
    r.write("results/", html=True)
    m = indim.mitigate("base/", "lora/", "mitigated/", lambdas=[0.75, 0])
    m.folders           # variant -> folder, each loadable as the fine-tune was
    m.matrices          # one row per matrix and variant: mitigation.json's figures

The options are `indim analyze`'s, by the same names and with the same defaults and checks.
The work runs with the GIL released; Ctrl-C stops it (KeyboardInterrupt), as does
CancelToken.cancel() from another thread (indim.Cancelled).
"""

import csv
import html as _html
import io
import json
import os

from . import _indim
from ._indim import BadInput, CancelToken, Cancelled, Error, RuntimeFailure, UsageError

__version__ = _indim.__version__
__all__ = ["analyze", "mitigate", "inspect", "generate_demo", "Result", "Mitigation",
           "Inspection", "CancelToken",
           "Error", "UsageError", "BadInput", "RuntimeFailure", "Cancelled"]


def _frame(text):
    """CSV text as a pandas DataFrame, or a list of dicts without pandas."""
    try:
        import pandas
    except ImportError:
        return list(csv.DictReader(io.StringIO(text)))
    return pandas.read_csv(io.StringIO(text))


def _rows(rows):
    try:
        import pandas
    except ImportError:
        return list(rows)
    return pandas.DataFrame(list(rows))


def _workers(value):
    """"auto" or a whole number from 1 to 256, as --workers takes."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise UsageError('workers must be "auto" or a number from 1 to 256, not {!r}'.format(value))
    return value


def _patterns(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _progress_callback(progress):
    """A callable (done, total, cost_done, cost_total, name), a tqdm bar, or None."""
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=0, unit="matrix", leave=False)

    def update(done, total, cost_done, cost_total, name):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name[-40:], refresh=False)
        bar.refresh()

    return update, bar


class Result:
    """The outcome of analyze(): records, totals and the report, as data."""

    def __init__(self, native):
        self._native = native
        self.report = json.loads(native.report_json)

    @property
    def matrices(self):
        """One row per matrix and fine-tune: matrices.csv's columns."""
        return _frame(self._native.matrices_csv)

    @property
    def vectors(self):
        """One row per tested tuned vector: vectors.csv's columns."""
        return _frame(self._native.vectors_csv)

    @property
    def totals(self):
        """Intruders summed over matrices, per fine-tune and eps."""
        rows = []
        for t in self.report["tuned"]:
            for eps, count in t["intruders"].items():
                rows.append({"tuned_index": t["index"], "tuned_path": t["path"],
                             "eps": float(eps), "intruders": count, "matrices": t["matrices"],
                             "null_directions": t["null_directions"]})
        return _rows(rows)

    @property
    def summary(self):
        """The terminal summary `indim analyze` prints."""
        return self._native.summary

    @property
    def seconds(self):
        return self._native.seconds

    def html(self):
        """The self-contained HTML report (what report.html holds)."""
        return self._native.html()

    def write(self, out_dir, html=True):
        """Writes report.json, matrices.csv, vectors.csv (and report.html) into out_dir."""
        self._native.write(os.fspath(out_dir), bool(html))

    def _repr_html_(self):
        eps = self.report["settings"]["primary_eps"]

        def at_primary(totals):
            return next((n for key, n in totals.items() if float(key) == float(eps)), "")

        rows = "".join(
            "<tr><td>[{}] {}</td><td>{}</td><td>{}</td></tr>".format(
                t["index"], _html.escape(t["path"]), t["matrices"], at_primary(t["intruders"]))
            for t in self.report["tuned"])
        table = ("<table><tr><th>fine-tune</th><th>matrices</th><th>intruders at eps {}</th>"
                 "</tr>{}</table>").format(eps, rows)
        frame = ('<iframe style="width:100%;height:640px;border:1px solid #ddd" '
                 'sandbox="allow-scripts" srcdoc="{}"></iframe>').format(_html.escape(self.html()))
        return "<div><b>indim</b> {} s{}{}</div>".format(round(self.seconds, 2), table, frame)

    def __repr__(self):
        return "<indim.Result: {} records, {} fine-tune(s)>".format(
            len(self.report["matrices"]), len(self.report["tuned"]))


def analyze(base, tuned, *, k=10, eps=0.5, precision="fp32", side="left", backend="auto",
            algo="auto", include=None, exclude=None, split_fused=False, delta=False, lowrank=True,
            lowrank_tol=0.0, noise_floor="auto", html=False, plot_matrices=None, plot_top=4,
            cache=None, no_cache=False, cache_max="20G", devices=None, gpu_mem=0, workers="auto",
            streams=1, resume=False, out=None, progress=True, cancel=None):
    """Compares fine-tunes against their base, as `indim analyze` does; returns a Result.

    base, tuned: paths (file, shard index, folder, PEFT adapter folder) or hub ids
    ORG/NAME[@REV]; tuned may be one or a list. out: the folder of the journal (a temporary
    one by default; with resume=True a journal there is continued). progress: True for a tqdm
    bar (when tqdm is importable), a callable (done, total, cost_done, cost_total, name), or
    False. cancel: a CancelToken another thread may cancel (raises indim.Cancelled).
    noise_floor: "auto" (measured where either side is quantised), "on" or "off".
    """
    tuned = [tuned] if isinstance(tuned, (str, os.PathLike)) else list(tuned)
    analysis = {"k": k, "eps": eps if isinstance(eps, (int, float)) else list(eps),
                "precision": precision, "side": side, "algo": algo,
                "include": _patterns(include), "exclude": _patterns(exclude),
                "split_fused": split_fused, "delta": delta, "lowrank": lowrank,
                "lowrank_tol": lowrank_tol, "noise_floor": noise_floor, "html": html,
                "plot_matrices": _patterns(plot_matrices), "plot_top": plot_top}
    tmp = None
    if out is None:
        import tempfile
        tmp = tempfile.TemporaryDirectory(prefix="indim-")
        out = tmp.name
    compute = {"backend": backend, "devices": devices, "gpu_mem": gpu_mem,
               "workers": _workers(workers), "streams": streams, "resume": resume,
               "out": os.fspath(out),
               "cache": "" if no_cache else os.fspath(cache or _indim.default_cache_dir()),
               "cache_max": str(cache_max)}
    callback, bar = _progress_callback(progress)
    try:
        native = _indim.analyze(os.fspath(base), [os.fspath(t) for t in tuned], analysis,
                                compute, callback, cancel)
    finally:
        if bar is not None:
            bar.close()
        if tmp is not None:
            tmp.cleanup()
    return Result(native)


class Mitigation:
    """The outcome of mitigate(): the variant folders, mitigation.json, and the analysis."""

    def __init__(self, native):
        self.analysis = Result(native["analysis"])
        self.report = json.load(open(native["mitigation_json"]))
        self.folders = {os.path.basename(d): d for d in native["variant_dirs"]}

    @property
    def matrices(self):
        """One row per changed matrix and variant: intruders, sigma before and after, norms."""
        rows = []
        for m in self.report["matrices"]:
            for v in m["variants"]:
                rows.append({"name": m["name"], "layer": m["layer"], "type": m["type"],
                             "variant": v["variant"], "kind": v["kind"], "lambda": v["lambda"],
                             "factor": v["factor"], "intruders": len(m["intruders"]),
                             "sigma_before": [i["sigma"] for i in m["intruders"]],
                             "sigma_after": v["sigma_after"], "update_fro_before": m["update_fro"],
                             "update_fro_after": v["update_fro"], "rel_change": v["rel_change"],
                             "rank": v.get("rank"), "truncation_error": v.get("truncation_error")})
        return _rows(rows)

    def __repr__(self):
        return "<indim.Mitigation: {} matrices changed, {} folders>".format(
            len(self.report["matrices"]), len(self.folders))


def mitigate(base, tuned, out, *, lambdas=0.75, controls=("shrink", "rescale"),
             adapter_rank="exact", k=10, eps=0.5, precision="fp32", backend="auto", algo="auto",
             include=None, exclude=None, lowrank=True, lowrank_tol=0.0, noise_floor="auto",
             html=False, plot_matrices=None, plot_top=4, cache=None, no_cache=False,
             cache_max="20G", devices=None, gpu_mem=0, workers="auto", streams=1, progress=True,
             cancel=None):
    """Scales the fine-tune's intruder dimensions by each lambda, as `indim mitigate` does, and
    writes the controls (shrink, rescale; controls=() for none): one folder per variant and
    lambda under `out`, each a checkpoint (or PEFT adapter, exact or with adapter_rank "r" or a
    number cut as PEFT cuts it) loadable as `tuned` was; mitigation.json and the analysis' report
    beside them. Returns a Mitigation.
    """
    lambdas = [lambdas] if isinstance(lambdas, (int, float)) else list(lambdas)
    analysis = {"k": k, "eps": eps if isinstance(eps, (int, float)) else list(eps),
                "precision": precision, "side": "left", "algo": algo,
                "include": _patterns(include), "exclude": _patterns(exclude),
                "split_fused": False, "delta": False, "lowrank": lowrank,
                "lowrank_tol": lowrank_tol, "noise_floor": noise_floor, "html": html,
                "plot_matrices": _patterns(plot_matrices), "plot_top": plot_top}
    compute = {"backend": backend, "devices": devices, "gpu_mem": gpu_mem,
               "workers": _workers(workers), "streams": streams, "resume": False,
               "out": os.fspath(out),
               "cache": "" if no_cache else os.fspath(cache or _indim.default_cache_dir()),
               "cache_max": str(cache_max)}
    mitigation = {"out": os.fspath(out), "lambdas": [float(x) for x in lambdas],
                  "controls": list(controls), "adapter_rank": str(adapter_rank)}
    callback, bar = _progress_callback(progress)
    try:
        native = _indim.mitigate(os.fspath(base), os.fspath(tuned), analysis, compute,
                                 mitigation, callback, cancel)
    finally:
        if bar is not None:
            bar.close()
    return Mitigation(native)


class Inspection:
    """inspect(): the base's tensors and, with a fine-tune, the match table."""

    def __init__(self, native):
        self.layout = native["layout"]
        self.tensors = _rows(native["tensors"])
        self.pairs = _rows(native.get("pairs", []))
        self.base_only = native.get("base_only", [])
        self.tuned_only = native.get("tuned_only", [])
        self.adapter = native.get("adapter", False)

    def __repr__(self):
        return "<indim.Inspection: {}, {} matched>".format(self.layout, len(self.pairs))


def inspect(base, tuned=None, *, include=None, exclude=None, split_fused=False):
    """The base's tensors, and with `tuned` the match table `indim inspect` prints."""
    return Inspection(_indim.inspect(os.fspath(base), "" if tuned is None else os.fspath(tuned),
                                     _patterns(include), _patterns(exclude), split_fused))


def generate_demo(directory, *, hidden=256, intermediate=688, kv_dim=128, layers=4, lora_rank=8,
                  dtype="BF16"):
    """Writes a Llama-style base, a full fine-tune and a LoRA fine-tune (merged and as a PEFT
    adapter) under `directory`; returns their paths."""
    return _indim.generate_demo(os.fspath(directory), hidden, intermediate, kv_dim, layers,
                                lora_rank, dtype)
