#!/usr/bin/env bash
# Set-up for the benchmarks (not needed by the tests): the Debian Fashion-MNIST package, and a separate virtual
# environment .venv-bench with bitsmith plus the peers we compare against (Brevitas).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist
fi
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet torch==2.13.0
fi
.venv-bench/bin/pip install --quiet -e ".[dev,export]" brevitas
