"""AArch64 Linux programs built and run on an x86 host: Debian's cross GCC and QEMU user mode.

Shared by the NEON kernel tests (tests/test_neon_qemu.py) and the Cortex-A benchmark
(bench_cortex_a.py here). `ensure_packages` installs the Debian packages the way setup.sh does
(scripts/debian_packages.sh); `kernel_sources` is the C kernel core as setup.py builds it, minus
the LiteRT adapters; `compile_program` cross-compiles; `run` runs a binary under qemu-aarch64
with a chosen CPU model (`max` has the dot-product extension, `cortex-a72` has not).
"""
from __future__ import annotations

import os
import platform
import runpy
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KERNELS = os.path.join(ROOT, "tflite_export", "kernels")
# On an AArch64 host the native GCC builds the programs, and QEMU still runs them, to choose the
# emulated core (-cpu cortex-a72 has no dot product).
NATIVE = platform.machine() in ("aarch64", "arm64")
PACKAGES = ("qemu-user",) if NATIVE else ("gcc-aarch64-linux-gnu", "qemu-user", "libc6-dev-arm64-cross")
CC = "gcc" if NATIVE else "aarch64-linux-gnu-gcc"
NM = "nm" if NATIVE else "aarch64-linux-gnu-nm"
QEMU = "qemu-aarch64"
SYSROOT = "/" if NATIVE else "/usr/aarch64-linux-gnu"  # dynamic loader and libc (libc6-arm64-cross)
# Plain ARMv8.0-A: the SDOT kernels carry their own per-function target, as on a real build.
CFLAGS = ("-std=c11", "-D_POSIX_C_SOURCE=200112L", "-O2", "-march=armv8-a", "-Wall", "-Wextra",
          "-Werror")


class ToolchainError(RuntimeError):
    """The cross compiler or QEMU is missing and could not be installed."""


def ensure_packages() -> None:
    """Install the cross compiler and QEMU user mode through scripts/debian_packages.sh unless
    both are on PATH; raises ToolchainError (with apt's output) if that fails."""
    if shutil.which(CC) and shutil.which(QEMU):
        return
    script = os.path.join(ROOT, "scripts", "debian_packages.sh")
    run = subprocess.run([script, *PACKAGES], capture_output=True, text=True)
    if run.returncode != 0 or not (shutil.which(CC) and shutil.which(QEMU)):
        raise ToolchainError(
            f"{CC} / {QEMU} missing and `scripts/debian_packages.sh {' '.join(PACKAGES)}` failed "
            f"(exit {run.returncode}); install those Debian packages (scripts/setup.sh does):\n"
            f"{run.stdout[-2000:]}{run.stderr[-2000:]}")


def kernel_sources() -> list[str]:
    """Paths of the kernel core's C files: tflite_export/kernels/sources.py's core sources (every
    kernel file minus the LiteRT adapters, which need LiteRT's C API), as setup.py builds them."""
    sources = runpy.run_path(os.path.join(KERNELS, "sources.py"))
    return [os.path.join(KERNELS, f) for f in sources["core_sources"]()]


def compile_program(sources, binary, extra_flags=(), clang=False) -> str:
    """Cross-compile C `sources` (with the kernel core) into `binary` with the aarch64 GCC, or with
    clang (`--target=aarch64-linux-gnu`, same sysroot) if `clang`; raises RuntimeError with the
    compiler's message on failure."""
    cc = (["clang"] if NATIVE else ["clang", "--target=aarch64-linux-gnu"]) if clang else [CC]
    cmd = [*cc, *CFLAGS, *extra_flags, *map(str, sources), *kernel_sources(), "-lm", "-o", str(binary)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"cross-compiling {binary} failed:\n{' '.join(cmd)}\n{run.stderr}")
    return str(binary)


def run(binary, args=(), cpu="max", plugin=None, timeout=600) -> subprocess.CompletedProcess:
    """Run an AArch64 binary under qemu-aarch64 `-cpu cpu` (optionally with a TCG plugin:
    "path.so,arg=value,..."); returns the completed process (stdout/stderr as text).
    LeakSanitizer cannot run under QEMU user mode (it needs ptrace), so a sanitized binary runs
    with leak detection off."""
    cmd = [QEMU, "-L", SYSROOT, "-cpu", cpu]
    if plugin:
        cmd += ["-plugin", plugin]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    return subprocess.run([*cmd, str(binary), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
