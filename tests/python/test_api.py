"""The Python API against the CLI, on checkpoints generated for the test: the same report, the
DataFrames' columns and dtypes, each error class, cancellation from another thread and by
Ctrl-C, the progress callback, the GIL released while the work runs, and the notebook view."""

import csv
import fcntl
import io
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import indim

CLI = os.environ["INDIM_CLI"]
SLOW = dict(side="both", algo="gesdd", precision="fp64", backend="cpu", no_cache=True)


def setUpModule():
    global WORK, SMALL, BIG
    WORK = tempfile.TemporaryDirectory(prefix="indim-py-")
    SMALL = indim.generate_demo(os.path.join(WORK.name, "small"), hidden=128, intermediate=256,
                                kv_dim=64, layers=2)
    BIG = indim.generate_demo(os.path.join(WORK.name, "big"), hidden=256, intermediate=640,
                              kv_dim=128, layers=6)


def tearDownModule():
    WORK.cleanup()


def comparable(value):
    """report.json without what differs between two runs: times."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()
                if k not in ("seconds", "created", "timing")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def cli_analyze(out, base, tuned, *flags):
    subprocess.run([CLI, "analyze", base, *tuned, "--out", out, "--backend", "cpu", "--no-cache",
                    "-q", *flags], check=True, stdout=subprocess.DEVNULL)
    return out


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items()
                if k not in ("seconds", "created", "path")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


class Mitigate(unittest.TestCase):
    def test_the_folders_and_figures_equal_the_clis(self):
        with tempfile.TemporaryDirectory() as d:
            m = indim.mitigate(SMALL["base"], SMALL["lora_adapter"], os.path.join(d, "py"),
                               lambdas=[0.5, 0], backend="cpu", no_cache=True, progress=False)
            subprocess.run([CLI, "mitigate", SMALL["base"], SMALL["lora_adapter"], "--out",
                            os.path.join(d, "cli"), "--lambda", "0.5,0", "--backend", "cpu",
                            "--no-cache", "-q"], check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(d, "cli", "mitigation.json")) as f:
                cli = json.load(f)
            self.assertEqual(without_times(m.report["matrices"]), without_times(cli["matrices"]))
            self.assertEqual(sorted(m.folders), ["intruders-0", "intruders-0.5", "rescale-0",
                                                 "rescale-0.5", "shrink-0", "shrink-0.5"])
            for name, folder in m.folders.items():
                self.assertTrue(os.path.isfile(os.path.join(folder, "adapter_config.json")), name)
            rows = m.matrices
            self.assertGreater(len(rows), 0)
            self.assertEqual(len(rows), 6 * len(m.report["matrices"]))
            self.assertEqual(set(rows["variant"]), set(m.folders))
            self.assertIsInstance(m.analysis, indim.Result)
            self.assertGreater(int(m.analysis.matrices["intruders_eps_0.5"].sum()), 0)

    def test_bad_options_are_usage_errors(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(indim.UsageError):
                indim.mitigate(SMALL["base"], SMALL["lora_adapter"], d, lambdas=[2],
                               backend="cpu", no_cache=True, progress=False)


class Analyze(unittest.TestCase):
    def test_the_report_equals_the_clis(self):
        tuned = [SMALL["full"], SMALL["lora_adapter"]]
        r = indim.analyze(SMALL["base"], tuned, k=8, eps=[0.5, 0.3], html=True, backend="cpu",
                          no_cache=True, progress=False, workers=1)
        with tempfile.TemporaryDirectory() as d:
            # One worker on both sides: BLAS's thread count moves sigma's last bits.
            ref = cli_analyze(os.path.join(d, "cli"), SMALL["base"], tuned, "--k", "8",
                              "--eps", "0.5,0.3", "--html", "--workers", "1")
            with open(os.path.join(ref, "report.json")) as f:
                cli_report = json.load(f)
            self.assertEqual(comparable(r.report), comparable(cli_report))
            r.write(os.path.join(d, "py"), html=True)
            with open(os.path.join(d, "py", "report.json")) as f:
                self.assertEqual(comparable(json.load(f)), comparable(cli_report))
            self.assertTrue(os.path.getsize(os.path.join(d, "py", "report.html")) > 1000)
            with open(os.path.join(ref, "matrices.csv")) as f:
                cli_rows = list(csv.DictReader(f))
        self.assertEqual(len(r.matrices), len(cli_rows))
        self.assertEqual(list(r.matrices["name"]), [row["name"] for row in cli_rows])
        self.assertEqual(list(r.matrices["intruders_eps_0.5"]),
                         [int(row["intruders_eps_0.5"]) for row in cli_rows])
        self.assertIn("Intruder dimensions: top k=8", r.summary)

    def test_the_noise_floor_on_request_and_auto_workers(self):
        on = indim.analyze(SMALL["base"], SMALL["full"], noise_floor="on", backend="cpu",
                           no_cache=True, progress=False)
        records = on.report["matrices"]
        self.assertGreater(len(records), 0)
        for rec in records:  # a bf16 fine-tune: the base re-quantised in bf16
            self.assertEqual(rec["noise_floor"]["format"], "BF16", rec["name"])
            self.assertEqual(len(rec["noise_floor"]["maxcos"]), 10)
        self.assertIn("noise_floor_eps_0.5", on.matrices.columns)
        off = indim.analyze(SMALL["base"], SMALL["full"], backend="cpu", no_cache=True,
                            progress=False)  # auto: neither side quantised
        self.assertTrue(all("noise_floor" not in rec for rec in off.report["matrices"]))
        self.assertEqual([r["intruders"] for r in records],
                         [r["intruders"] for r in off.report["matrices"]])

    def test_dataframes_have_the_csv_columns_and_real_dtypes(self):
        r = indim.analyze(SMALL["base"], SMALL["full"], backend="cpu", no_cache=True,
                          progress=False)
        header = next(csv.reader(io.StringIO(r._native.matrices_csv)))
        m = r.matrices
        self.assertEqual(list(m.columns), header)
        for column in ("layer", "rows", "cols", "k", "null_directions", "intruders_eps_0.5"):
            self.assertEqual(str(m[column].dtype), "int64", column)
        self.assertEqual(str(m["identical"].dtype), "bool")
        self.assertEqual(str(m["min_maxcos"].dtype), "float64")
        for column in ("intruder_sigma_share", "intruder_update_share", "subspace_overlap",
                       "null_maxcos", "update_fro", "sigma_share_eps_0.5"):
            self.assertEqual(str(m[column].dtype), "float64", column)
        self.assertEqual(str(m["step"].dtype), "int64")
        self.assertTrue(((m["subspace_overlap"] >= 0) & (m["subspace_overlap"] <= 1)).all())
        v = r.vectors
        self.assertEqual(str(v["maxcos"].dtype), "float64")
        self.assertEqual(str(v["update_share"].dtype), "float64")
        self.assertEqual(len(v), int(m["k"].sum()))
        t = r.totals
        self.assertEqual(sorted(set(t["eps"])), [e / 10 for e in range(1, 10)])
        self.assertEqual(int(t[t["eps"] == 0.5]["intruders"].iloc[0]),
                         int(m["intruders_eps_0.5"].sum()))

    def test_each_error_class(self):
        with self.assertRaises(indim.BadInput) as missing:
            indim.analyze(SMALL["base"], "/nonexistent/tuned", backend="cpu")
        self.assertEqual(missing.exception.problem, "not-found")
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "bad.safetensors")
            with open(bad, "wb") as f:
                f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{nonsense")
            with self.assertRaises(indim.BadInput) as malformed:
                indim.analyze(SMALL["base"], bad, backend="cpu")
            self.assertEqual(malformed.exception.problem, "malformed")
            self.assertIn("bad.safetensors", str(malformed.exception))
            out = os.path.join(d, "out")
            os.makedirs(out)
            with open(os.path.join(out, ".indim.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another run holds --out
                with self.assertRaises(indim.RuntimeFailure) as busy:
                    indim.analyze(SMALL["base"], SMALL["full"], backend="cpu", out=out,
                                  no_cache=True, progress=False)
                self.assertIn("in use", str(busy.exception))
        for kwargs, says in ((dict(k=0), "k:"), (dict(precision="fp16"), "precision"),
                             (dict(include="("), "include"), (dict(eps=[2.0]), "eps"),
                             (dict(backend="tpu"), "backend"),
                             (dict(noise_floor="maybe"), "noise_floor"),
                             (dict(workers="many"), "workers"), (dict(workers=0), "workers"),
                             (dict(workers=2.0), "workers"), (dict(workers=True), "workers"),
                             (dict(workers=2**40), "workers")):
            with self.assertRaises(indim.UsageError, msg=str(kwargs)) as usage:
                indim.analyze(SMALL["base"], SMALL["full"], **kwargs)
            self.assertIn(says, str(usage.exception))
        with self.assertRaises(TypeError):
            indim.analyze(SMALL["base"], SMALL["full"], workerz=2)
        for cls in (indim.BadInput, indim.UsageError, indim.RuntimeFailure, indim.Cancelled):
            self.assertTrue(issubclass(cls, indim.Error))

    def test_progress_reaches_the_callback_in_order(self):
        events = []
        indim.analyze(SMALL["base"], [SMALL["full"], SMALL["lora"]], backend="cpu",
                      no_cache=True, progress=lambda *e: events.append(e))
        done = [e[0] for e in events if e[4]]
        total = events[-1][1]
        self.assertEqual(done, list(range(1, total + 1)))
        self.assertEqual(total, 28)
        costs = [e[2] for e in events]
        self.assertEqual(costs, sorted(costs))
        self.assertAlmostEqual(events[-1][2], events[-1][3])

    def test_a_token_cancelled_from_another_thread_stops_the_run_resumably(self):
        token = indim.CancelToken()
        seen = []

        def progress(done, total, *rest):
            seen.append(done)
            if done >= 2:
                token.cancel()

        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(indim.Cancelled) as stopped:
                indim.analyze(BIG["base"], BIG["full"], out=d, cancel=token, progress=progress,
                              **SLOW)
            self.assertIn("--resume", str(stopped.exception))
            with open(os.path.join(d, "journal.jsonl")) as f:
                kept = len(f.readlines()) - 1
            self.assertGreaterEqual(kept, 4)
            r = indim.analyze(BIG["base"], BIG["full"], out=d, resume=True, progress=False,
                              **SLOW)
            self.assertEqual(r._native.resumed, kept)
            self.assertEqual(len(r.report["matrices"]), 2 * 42)

    def test_ctrl_c_raises_keyboard_interrupt_soon(self):
        timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
        start = time.monotonic()
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            indim.analyze(BIG["base"], [BIG["full"], BIG["lora"]], progress=False, **SLOW)
        self.assertLess(time.monotonic() - start, 20)

    def test_the_gil_is_released_while_it_works(self):
        ticks = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks[0] += 1
                time.sleep(0.001)

        t = threading.Thread(target=spin)
        t.start()
        begin = time.monotonic()
        indim.analyze(BIG["base"], BIG["full"], progress=False, **SLOW)
        seconds = time.monotonic() - begin
        stop.set()
        t.join()
        self.assertGreater(ticks[0], 50 * seconds, "the other thread ran meanwhile")

    def test_the_notebook_view_is_self_contained(self):
        r = indim.analyze(SMALL["base"], SMALL["lora_adapter"], backend="cpu", no_cache=True,
                          progress=True)  # a tqdm bar where tqdm is installed
        view = r._repr_html_()
        self.assertIn("<table>", view)
        self.assertIn("intruders at eps 0.5", view)
        self.assertIn("<iframe", view)
        self.assertIsNone(re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", view))
        self.assertNotIn("url(http", view)
        self.assertIn("indim.Result", repr(r))


class Inspect(unittest.TestCase):
    def test_the_match_table(self):
        i = indim.inspect(SMALL["base"], SMALL["lora_adapter"])
        self.assertTrue(i.adapter)
        self.assertIn("llama", i.layout)
        self.assertEqual(len(i.pairs), 4)  # q_proj and v_proj of 2 layers
        self.assertTrue(all(i.pairs["selected"]))
        self.assertTrue(all(i.pairs["lora_r"] == 8))
        only = indim.inspect(SMALL["base"])
        self.assertGreater(len(only.tensors), 14)
        self.assertEqual(len(only.pairs), 0)


if __name__ == "__main__":
    unittest.main()
