"""deploy/k8s rendered and checked field by field (no cluster runs here), with the commands the
pods would run executed for real against generated checkpoints; docker/compose.yaml's service
checked the same way. Run with Debian's python3 (python3-yaml); INDIM_CLI names the binary."""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "deploy" / "k8s" / "render.py"
INDIM = os.environ["INDIM_CLI"]


def render(*args, check=True):
    r = subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(r.stderr)
    return r if not check else list(yaml.safe_load_all(r.stdout))


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def without_timings(path):
    r = json.loads(Path(path).read_text())
    r.pop("created"), r.pop("timing")
    for m in r["matrices"]:
        m.pop("seconds")
    return r


class Shards(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = Path(cls.tmp.name)
        subprocess.run([INDIM, "demo", "--out", str(cls.data / "models"), "--hidden", "48",
                        "--intermediate", "112", "--kv-dim", "24", "--layers", "2",
                        "--backend", "cpu", "--no-cache"], check=True, capture_output=True)
        m = cls.data / "models"
        cls.inputs = [str(m / "base"), str(m / "full"), str(m / "lora-adapter")]
        cls.docs = render("shards", "--shards", "4", "--run", "sweep-1", "--data", str(cls.data),
                          "--namespace", "ml", "--html", *cls.inputs, "--", "--backend", "cpu",
                          "--k", "6")

    def test_an_indexed_job_of_gpu_pods_and_a_merge_on_one_claim(self):
        (claim,) = by_kind(self.docs, "PersistentVolumeClaim")
        shards, merge = by_kind(self.docs, "Job")
        self.assertEqual(shards["spec"]["completionMode"], "Indexed")
        self.assertEqual(shards["spec"]["completions"], 4)
        self.assertEqual(shards["spec"]["parallelism"], 4)
        pod = shards["spec"]["template"]["spec"]
        self.assertIn(pod["restartPolicy"], ("OnFailure", "Never"))
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["SHARD"]["valueFrom"]["fieldRef"]["fieldPath"],
                         "metadata.annotations['batch.kubernetes.io/job-completion-index']")
        self.assertEqual(c["args"][c["args"].index("--shard") + 1], "$(SHARD)/4")
        self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 1)
        for job in (shards, merge):
            self.assertEqual(job["metadata"]["namespace"], "ml")
            spec = job["spec"]["template"]["spec"]
            self.assertEqual(spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
                             claim["metadata"]["name"])
            for ct in spec["containers"] + spec.get("initContainers", []):
                self.assertEqual(ct["volumeMounts"][0]["mountPath"], str(self.data))
        self.assertNotIn("resources", merge["spec"]["template"]["spec"]["containers"][0])
        self.assertIn("ReadWriteMany", claim["spec"]["accessModes"])

    def test_the_pods_commands_reproduce_the_unsharded_run(self):
        shards, merge = by_kind(self.docs, "Job")
        args = shards["spec"]["template"]["spec"]["containers"][0]["args"]
        for i in range(4):  # what Kubernetes runs in pod i, $(SHARD) expanded
            r = subprocess.run([INDIM, *[a.replace("$(SHARD)", str(i)) for a in args]],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
        mspec = merge["spec"]["template"]["spec"]
        wait = mspec["initContainers"][0]
        subprocess.run(wait["command"] + wait["args"], check=True, timeout=30)  # all there: returns
        r = subprocess.run([INDIM, *mspec["containers"][0]["args"]], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.data / "runs" / "sweep-1"
        self.assertTrue((out / "report.html").stat().st_size > 1000)
        self.assertTrue(any((self.data / "cache").iterdir()), "the shards share the volume's cache")
        whole = self.data / "whole"
        subprocess.run([INDIM, "analyze", *self.inputs, "--backend", "cpu", "--k", "6", "--no-cache",
                        "--out", str(whole), "--quiet"], check=True, capture_output=True)
        self.assertEqual(without_timings(out / "report.json"), without_timings(whole / "report.json"))

    def test_bad_arguments_are_refused(self):
        for args in (["--shards", "0", "--run", "a"], ["--shards", "2", "--run", "Bad_Name"],
                     ["--shards", "2", "--run", "a", "--parallelism", "3"],
                     ["--shards", "2", "--run", "a", "--image", "x y"],
                     ["--shards", "2", "--run", "a", "--data", "rel"]):
            r = render("shards", *args, "/m/base", "/m/ft", check=False)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("render.py:", r.stderr)
        self.assertEqual(render("shards", "--shards", "2", "--run", "a", "/m/base", check=False).returncode, 1)


class Serve(unittest.TestCase):
    def test_deployment_service_and_secret_fit_and_the_server_starts_with_their_args(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            token = "0123456789abcdef0123456789abcdef"
            (data / "token").write_text(token + "\n")
            docs = render("serve", "--token-file", str(data / "token"), "--data", str(data))
            (secret,) = by_kind(docs, "Secret")
            (dep,) = by_kind(docs, "Deployment")
            (svc,) = by_kind(docs, "Service")
            self.assertEqual(secret["stringData"]["token"], token)
            pod = dep["spec"]["template"]
            self.assertEqual(dep["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
            self.assertLessEqual(svc["spec"]["selector"].items(), pod["metadata"]["labels"].items())
            (c,) = pod["spec"]["containers"]
            port = c["ports"][0]
            self.assertEqual(svc["spec"]["ports"][0]["targetPort"], port["name"])
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertEqual(c[probe]["httpGet"], {"path": "/healthz", "port": port["name"]})
            self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 1)
            (env,) = c["env"]
            self.assertEqual(env["name"], "INDIM_TOKEN")
            self.assertEqual(env["valueFrom"]["secretKeyRef"],
                             {"name": secret["metadata"]["name"], "key": "token"})
            args = c["args"]
            self.assertNotIn("--token-file", args)
            self.assertEqual(args[args.index("--listen") + 1], f"0.0.0.0:{port['containerPort']}")
            # The same arguments and the Secret's token in the environment start a server (on
            # loopback here): they are a valid command line.
            run = list(args)
            run[run.index("--listen") + 1] = "127.0.0.1:0"
            (data / "models").mkdir()
            server = subprocess.Popen([INDIM, *run, "--backend", "cpu"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT,
                                      env={**os.environ, "INDIM_TOKEN": secret["stringData"]["token"]})
            try:
                info = data / "state" / "serve.json"
                for _ in range(200):
                    if info.exists():
                        break
                    time.sleep(0.05)
                url = json.loads(info.read_text())["url"]
                for _ in range(100):
                    h = subprocess.run([INDIM, "health", "--server", url], capture_output=True, text=True)
                    if h.returncode == 0:
                        break
                    time.sleep(0.1)
                self.assertEqual(h.returncode, 0, h.stdout + h.stderr)
            finally:
                server.terminate()
                self.assertEqual(server.wait(timeout=30), 0)


class Compose(unittest.TestCase):
    def test_the_serve_service_has_gpu_secret_volumes_and_a_health_check(self):
        doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
        serve = doc["services"]["indim-serve"]
        cmd = serve["command"]
        listen_port = cmd[cmd.index("--listen") + 1].rsplit(":", 1)[1]
        self.assertEqual(cmd[cmd.index("--token-file") + 1], "/run/secrets/indim_token")
        self.assertIn("indim_token", serve["secrets"])
        self.assertIn("file", doc["secrets"]["indim_token"])
        vols = serve["volumes"]
        self.assertTrue(any(v.endswith(":/models:ro") for v in vols), vols)
        self.assertTrue(any(v.endswith(":/state") for v in vols) and any(v.endswith(":/cache") for v in vols))
        self.assertEqual(cmd[cmd.index("--root") + 1], "/models")
        test = serve["healthcheck"]["test"]
        self.assertEqual(test[:3], ["CMD", "indim", "health"])
        self.assertTrue(test[test.index("--server") + 1].endswith(":" + listen_port))
        (gpu,) = serve["deploy"]["resources"]["reservations"]["devices"]
        self.assertIn("gpu", gpu["capabilities"])
        self.assertTrue(all(p.startswith("127.0.0.1:") for p in serve["ports"]))

    def test_the_dockerfile_takes_its_base_images_as_build_arguments(self):
        text = (ROOT / "docker" / "Dockerfile").read_text()
        froms = [l.split()[1] for l in text.splitlines() if l.startswith("FROM ")]
        self.assertEqual(froms, ["${BUILD_IMAGE}", "${RUNTIME_IMAGE}"])
        for arg in ("ARG BUILD_IMAGE=nvidia/cuda:", "ARG RUNTIME_IMAGE=nvidia/cuda:", "ARG INDIM_CUDA="):
            self.assertIn(arg, text)


if __name__ == "__main__":
    unittest.main()
