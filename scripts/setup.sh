#!/usr/bin/env bash
# Set up everything tfscalpel needs on a fresh Debian machine: system packages, a virtualenv
# in .venv with the package (and its C kernels) installed, and the offline data sets.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C compiler for the kernels, clang + its compiler-rt (libFuzzer, ASan, UBSan)
# for the kernel fuzz test, Fashion-MNIST (MIT, idx files).
./scripts/debian_packages.sh build-essential clang libclang-rt-14-dev dataset-fashion-mnist
# aarch64 cross compiler + QEMU user mode: the NEON kernels are built and tested here (tests/test_neon_qemu.py).
./scripts/debian_packages.sh gcc-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
echo "[setup] installing tfscalpel and its dependencies into .venv"
.venv/bin/pip install -q -e ".[dev]"

echo "[setup] fetching the offline data sets (cached after the first run)"
.venv/bin/python -m tfscalpel.datasets --prefetch
