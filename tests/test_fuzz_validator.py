"""Fuzzing the format validator (and every kernel path on what it accepts) with libFuzzer under
AddressSanitizer + UndefinedBehaviorSanitizer, for a bounded time. Needs clang with the
compiler-rt fuzzer runtime (Debian: clang, libclang-rt-14-dev; scripts/setup.sh installs them)."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FUZZ_SECONDS = int(os.environ.get("TFS_FUZZ_SECONDS", "20"))


def test_fuzz_validator_under_asan_ubsan(tmp_path):
    clang = shutil.which("clang")
    if clang is None:
        pytest.fail("clang not found: install the Debian packages clang and libclang-rt-14-dev "
                    "(scripts/setup.sh does) to build the libFuzzer target")
    binary = tmp_path / "fuzz_validator"
    build = subprocess.run(
        [clang, "-std=c11", "-D_POSIX_C_SOURCE=200112L", "-g", "-O1", "-Wall", "-Wextra",
         "-Werror", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
         os.path.join(HERE, "c", "fuzz_validator.c"),
         os.path.join(ROOT, "tflite_export", "kernels", "tfs_group_sparse_fc.c"),
         os.path.join(ROOT, "tflite_export", "kernels", "tfs_common.c"),
         "-lm", "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, f"building the fuzz target failed:\n{build.stderr}"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    run = subprocess.run(
        [str(binary), f"-max_total_time={FUZZ_SECONDS}", "-seed=1", "-rss_limit_mb=2048",
         "-timeout=10", str(corpus)], capture_output=True, text=True, cwd=tmp_path,
        timeout=FUZZ_SECONDS + 120)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in run.stderr, tail
