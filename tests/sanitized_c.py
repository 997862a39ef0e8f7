"""Test helper: build a C driver or libFuzzer target with the kernel sources under ASan + UBSan,
and run a fuzz target for a bounded time. Shared by the kernels' sanitizer and fuzz tests."""
import os
import shutil
import subprocess

import pytest

from tflite_export.kernels.sources import KERNELS_DIR as KERNELS, core_sources

HERE = os.path.dirname(os.path.abspath(__file__))
#: Every runtime-neutral kernel source (validation, packing, dispatch, all kernels): what the
#: drivers and fuzz targets link, so a new kernel file is sanitized without editing a list.
CORE = core_sources()
#: TFS_SANITIZER_BUILD keeps the x86 kernels' loops rolled and helpers out of line (same code;
#: fully unrolled, clang took minutes per file under ASan).
FLAGS = ["-std=c11", "-D_POSIX_C_SOURCE=200112L", "-DTFS_SANITIZER_BUILD", "-g", "-O1", "-Wall",
         "-Wextra", "-Werror", "-fno-sanitize-recover=all"]
_INSTALL = {"gcc": "build-essential", "clang": "clang and libclang-rt-14-dev"}


def build(compiler, program, kernel_sources, binary, fuzzer=False, defines=()):
    """Compile tests/c/``program`` with the named kernel sources and preprocessor ``defines``
    (``"TFS_TEST_OP_NM"`` builds tests/c/fuzz_validator.c for the N:M op); fails the test with the
    compiler's message (or what to install when the compiler is missing)."""
    path = shutil.which(compiler)
    if path is None:
        pytest.fail(f"{compiler} not found: install the Debian packages {_INSTALL[compiler]} "
                    "(scripts/setup.sh does)")
    sanitize = "-fsanitize=fuzzer,address,undefined" if fuzzer else "-fsanitize=address,undefined"
    result = subprocess.run(
        [path, *FLAGS, *[f"-D{d}" for d in defines], sanitize, os.path.join(HERE, "c", program),
         *[os.path.join(KERNELS, s) for s in kernel_sources], "-lm", "-o", str(binary)],
        capture_output=True, text=True)
    what = "fuzz target" if fuzzer else "sanitizer driver"
    assert result.returncode == 0, f"building the {what} failed:\n{result.stderr}"
    return binary


def fuzz(binary, seconds, workdir, seeds=()):
    """Run a libFuzzer target for ``seconds`` from a corpus of ``seeds`` (bytes; empty by
    default); returns the completed run."""
    corpus = workdir / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    return subprocess.run(
        [str(binary), f"-max_total_time={seconds}", "-seed=1", "-rss_limit_mb=2048",
         "-timeout=10", str(corpus)], capture_output=True, text=True, cwd=workdir,
        timeout=seconds + 120)
