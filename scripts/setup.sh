#!/usr/bin/env bash
# Set up everything tfscalpel needs on a fresh Debian machine: system packages, a virtualenv
# in .venv with the package (and its C kernels) installed, and the offline data sets.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C compiler for the kernels, clang + its compiler-rt (libFuzzer, ASan, UBSan)
# for the kernel fuzz test, Fashion-MNIST (MIT, idx files).
need=()
for pkg in build-essential clang libclang-rt-14-dev dataset-fashion-mnist; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
echo "[setup] installing tfscalpel and its dependencies into .venv"
.venv/bin/pip install -q -e ".[dev]"

echo "[setup] fetching the offline data sets (cached after the first run)"
.venv/bin/python -m tfscalpel.datasets --prefetch
