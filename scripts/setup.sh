#!/usr/bin/env bash
# Installs the Debian 12 (or Ubuntu 24.04) packages indim builds with, skipping those already
# present. Needs root (or sudo). The CUDA toolkit is optional and not installed here.
#   scripts/setup.sh               build and test dependencies
#   scripts/setup.sh --build-only  build dependencies only (the Docker image's build stage)
#   scripts/setup.sh --runtime     the shared libraries the indim binary needs (its runtime stage)
# With INDIM_SETUP_LIST=1 it prints the packages instead (scripts/docker-check.sh preinstalls them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
redocly_version=1.34.5

# chromium runs the HTML report's browser tests; clang and libclang-rt-14-dev the fuzzers;
# python3-numpy and python3-scipy the peer baseline the CPU backend is checked against; openssl
# makes the certificate of the service's TLS test; pybind11-dev and python3-dev build the Python
# module, whose tests read results with python3-pandas (and draw python3-tqdm's bar).
# libboost-dev (Beast on Asio, header-only) and libssl-dev serve `indim serve`'s HTTP and TLS;
# libcpp-httplib-dev is its client's HTTP; libsqlite3-dev its job queue. curl sends the README's
# requests in the service's tests.
# prometheus gives promtool, which checks a running service's /metrics in the tests; nodejs and
# npm (unless a node with its own npm is there) install @redocly/cli, pinned, from the npm
# registry into .tools/redocly, which lints docs/service-api.yaml in the tests.
# slurmctld, slurmd, slurm-client and munge run the Slurm test's private cluster; python3-yaml
# reads the rendered Kubernetes and compose files; podman, debootstrap, runc and uidmap build and
# run the Docker image in scripts/docker-check.sh.
if [ "${1:-}" = "--runtime" ]; then
  # The libraries of the -dev packages below, named as the distribution names them.
  . /etc/os-release
  case "${VERSION_CODENAME:-}" in
    bookworm) packages=(libre2-9 libcpp-httplib0.11 libssl3) ;;
    noble) packages=(libre2-10 libcpp-httplib0.14t64 libssl3t64) ;;
    *) echo "setup: --runtime knows Debian 12 (bookworm) and Ubuntu 24.04 (noble), not ${PRETTY_NAME:-this system}" >&2
       exit 1 ;;
  esac
  packages+=(liblapacke libopenblas0-pthread libsqlite3-0)
else
packages=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev libcli11-dev
          liblapacke-dev libopenblas-dev libgtest-dev libxxhash-dev libre2-dev
          libcpp-httplib-dev libsqlite3-dev libboost-dev libssl-dev)
[ "${1:-}" = "--build-only" ] || packages+=(chromium clang libclang-rt-14-dev python3-numpy python3-scipy
                                            openssl pybind11-dev python3-pybind11 python3-dev python3-pandas
                                            python3-tqdm slurmctld slurmd slurm-client munge
                                            python3-yaml podman debootstrap runc uidmap curl
                                            prometheus)
if [ -z "${1:-}" ] && ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
fi
if [ "${INDIM_SETUP_LIST:-}" = 1 ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: every package it installs is present"
else
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ -z "${1:-}" ]; then
  tools="$root/.tools/redocly"
  if [ "$("$tools/node_modules/.bin/redocly" --version 2>/dev/null)" != "$redocly_version" ]; then
    echo "setup: installing @redocly/cli $redocly_version into $tools"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
      "@redocly/cli@$redocly_version"
  fi
fi
