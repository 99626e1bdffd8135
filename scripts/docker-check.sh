#!/usr/bin/env bash
# Proves docker/Dockerfile without the CUDA images (which cannot be pulled here): builds it with
# Podman on a local Debian 12 base image and runs indim inside, as the image's non-root user.
#   scripts/docker-check.sh [HOST_INDIM]
# 1. The base: debootstrap (minbase) with the packages scripts/setup.sh would install for the build
#    and runtime stages preinstalled, so the image's own setup.sh finds nothing to install;
#    cached as a tarball in ${INDIM_IMAGE_CACHE:-.cache/images} (ignored by git and the build),
#    keyed by the package list. The Debian mirror is read from the apt configuration.
# 2. Podman with a private configuration (runc, cgroupfs, nofile/nproc limits of 1024, vfs
#    storage under the cache folder): import the base, build the Dockerfile with it as both
#    BUILD_IMAGE and RUNTIME_IMAGE and INDIM_CUDA=OFF. Containers never get a network
#    (--network none, for the build too).
# 3. In the image: `indim demo`, then `indim analyze` on the demo's checkpoints mounted read-only;
#    the reports are checked on the host (and against HOST_INDIM's own run when given).
# Exit codes: 0 passed, 1 a check failed, 77 Podman or debootstrap is missing or we are not root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
host_indim=${1:-}
for tool in podman debootstrap runc; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/setup.sh installs it)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: debootstrap and these Podman settings need root"; exit 77; }

cache=${INDIM_IMAGE_CACHE:-$root/.cache/images}
mkdir -p "$cache"
work=$(mktemp -d /tmp/indim-docker-XXXXXX)
tag="check-$$"
cleanup() {  # keeps the imported base only: the image and the build stage's layers go
  if [ -f "$work/storage.conf" ]; then
    podman rmi -f "localhost/indim:$tag" >/dev/null 2>&1 || true
    podman image prune -f >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "docker-check: $* ($(date +%T))"; }

# The mirror of the bookworm suite, as apt on this machine is configured.
debian_mirror() {
  local m
  m=$(awk '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") print u}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' \
                       /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)
  [ -n "$m" ] || { echo "docker-check: no bookworm mirror in the apt configuration" >&2; return 1; }
  echo "$m"
}

base_tarball() {  # prints the cached tarball's path, making it first if needed
  local packages key tar
  packages=$( (INDIM_SETUP_LIST=1 scripts/setup.sh --build-only; INDIM_SETUP_LIST=1 scripts/setup.sh --runtime) | sort -u)
  key=$(printf '%s\n' "$packages" | sha256sum | cut -c1-16)
  tar="$cache/debian12-indim-$key.tar"
  if [ ! -f "$tar" ]; then
    step "debootstrap of a Debian 12 base with $(wc -l <<<"$packages") packages" >&2
    debootstrap --variant=minbase --include="$(paste -sd, <<<"$packages")" bookworm \
      "$work/rootfs" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; return 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -cf "$tar.tmp.$$" . && mv "$tar.tmp.$$" "$tar"
    rm -rf "$work/rootfs"
  fi
  echo "$tar"
}

podman_config() {
  cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  cat >"$work/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "$work/run"
graphroot = "$cache/podman"
EOF
  export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
}

tar=$(base_tarball)
podman_config
base="localhost/indim-base:$(basename "$tar" .tar)"
if ! podman image exists "$base"; then
  step "importing $(basename "$tar")"
  podman import --quiet "$tar" "$base" >/dev/null
fi
step "building docker/Dockerfile on $base"
podman build --network none --layers=false --build-arg "BUILD_IMAGE=$base" --build-arg "RUNTIME_IMAGE=$base" \
  --build-arg INDIM_CUDA=OFF -f docker/Dockerfile -t "localhost/indim:$tag" . >"$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log"; echo "FAIL: the image did not build"; exit 1; }
grep -q "every package it installs is present" "$work/build.log" ||
  { echo "FAIL: the image's setup.sh had packages to install:"; grep "setup:" "$work/build.log"; exit 1; }

run() { podman run --rm --network none "$@"; }
[ "$(run --entrypoint id "localhost/indim:$tag" -u)" = 10001 ] || { echo "FAIL: the image does not run as its non-root user"; exit 1; }
run "localhost/indim:$tag" --version
mkdir -p "$work/out" && chmod 777 "$work/out"  # written by the container's user
step "indim demo and indim analyze in the container"
run -v "$work/out:/results" "localhost/indim:$tag" demo --out /results/demo --layers 2 --hidden 64 \
  --intermediate 160 --kv-dim 32 >"$work/demo.log" 2>&1 || { cat "$work/demo.log"; echo "FAIL: demo"; exit 1; }
run -v "$work/out/demo:/models:ro" -v "$work/out:/results" "localhost/indim:$tag" analyze \
  /models/base /models/full /models/lora-adapter --out /results/r --html >"$work/analyze.log" 2>&1 ||
  { cat "$work/analyze.log"; echo "FAIL: analyze"; exit 1; }
/usr/bin/python3 - "$work/out/r/report.json" "$work/out/demo/results/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["settings"]["backend"] == "cpu", r["settings"]
assert len(r["matrices"]) == 14 + 4, len(r["matrices"])
intruders = [t["intruders"]["0.5"] for t in r["tuned"]]
assert intruders[0] == 0 and intruders[1] > 0, intruders
assert json.load(open(sys.argv[2]))["tuned"], "the demo wrote no report"
print("container report:", len(r["matrices"]), "records, intruders at 0.5:", intruders)
PY
[ -s "$work/out/r/report.html" ] || { echo "FAIL: no report.html"; exit 1; }
if [ -n "$host_indim" ]; then
  "$host_indim" analyze "$work/out/demo/base" "$work/out/demo/full" "$work/out/demo/lora-adapter" \
    --backend cpu --no-cache --out "$work/host" --quiet >/dev/null
  # The same counts; values to rounding (another build of the same code, maybe other BLAS
  # kernels or thread counts).
  /usr/bin/python3 - "$work/host/report.json" "$work/out/r/report.json" <<'PY'
import json, math, sys
host, box = (json.load(open(p)) for p in sys.argv[1:])
assert [t["intruders"] for t in host["tuned"]] == [t["intruders"] for t in box["tuned"]]
worst = 0.0
for a, b in zip(host["matrices"], box["matrices"], strict=True):
    assert (a["name"], a["counts"]) == (b["name"], b["counts"]), a["name"]
    for x, y in zip(a["maxcos"], b["maxcos"], strict=True):
        if x is not None or y is not None:
            worst = max(worst, abs(x - y))
assert worst < 1e-5, worst
print(f"the host's report agrees: same counts, max |maxcos difference| {worst:.1e}")
PY
fi
echo "PASS"
