"""TFS_NM_SPARSE_FC's core under ASan + UBSan (tests/c/nm_sanitizer_driver.c: every shape class,
dtype and available path vs portable, each corruption rejected) and a libFuzzer target over its
validator (tests/c/fuzz_nm_validator.c) for a bounded time. gcc and clang as for the group-sparse
core's sanitizer and fuzz tests (scripts/setup.sh installs them)."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(os.path.dirname(HERE), "tflite_export", "kernels")
SOURCES = [os.path.join(KERNELS, "tfs_nm_sparse_fc.c"), os.path.join(KERNELS, "tfs_group_sparse_fc.c"),
           os.path.join(KERNELS, "tfs_common.c")]
FUZZ_SECONDS = int(os.environ.get("TFS_NM_FUZZ_SECONDS", "10"))
FLAGS = ["-std=c11", "-D_POSIX_C_SOURCE=200112L", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
         "-fno-sanitize-recover=all"]


def _compiler(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it (scripts/setup.sh does)")
    return path


def test_nm_kernel_core_under_asan_and_ubsan(tmp_path):
    binary = tmp_path / "nm_sanitizer_driver"
    build = subprocess.run([_compiler("gcc"), *FLAGS, "-fsanitize=address,undefined",
                            os.path.join(HERE, "c", "nm_sanitizer_driver.c"), *SOURCES, "-lm",
                            "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, f"building the sanitizer driver failed:\n{build.stderr}"
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"sanitizer driver failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    assert run.stdout.startswith("OK: 32 layers on portable"), run.stdout
    assert "128 corruptions rejected" in run.stdout, run.stdout  # 16 layers x 8 rules


def test_fuzz_nm_validator_under_asan_ubsan(tmp_path):
    binary = tmp_path / "fuzz_nm_validator"
    build = subprocess.run([_compiler("clang"), *FLAGS, "-fsanitize=fuzzer,address,undefined",
                            os.path.join(HERE, "c", "fuzz_nm_validator.c"), *SOURCES, "-lm",
                            "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, f"building the fuzz target failed:\n{build.stderr}"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    run = subprocess.run([str(binary), f"-max_total_time={FUZZ_SECONDS}", "-seed=1",
                          "-rss_limit_mb=2048", "-timeout=10", str(corpus)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=FUZZ_SECONDS + 120)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in run.stderr, tail
