"""TFS_NM_SPARSE_FC's core under ASan + UBSan (tests/c/nm_sanitizer_driver.c: every shape class,
dtype and available path vs portable, each corruption rejected) and a libFuzzer target over its
validator (tests/c/fuzz_validator.c built with -DTFS_TEST_OP_NM) for a bounded time. gcc and clang as for the group-sparse
core's sanitizer and fuzz tests (scripts/setup.sh installs them)."""
import os
import subprocess

import sanitized_c

SOURCES = sanitized_c.CORE
FUZZ_SECONDS = int(os.environ.get("TFS_NM_FUZZ_SECONDS", "10"))


def test_nm_kernel_core_under_asan_and_ubsan(tmp_path):
    binary = sanitized_c.build("gcc", "nm_sanitizer_driver.c", SOURCES, tmp_path / "nm_sanitizer_driver")
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"sanitizer driver failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    assert run.stdout.startswith("OK: 32 layers on portable"), run.stdout
    assert "128 corruptions rejected" in run.stdout, run.stdout  # 16 layers x 8 rules


def test_fuzz_nm_validator_under_asan_ubsan(tmp_path):
    binary = sanitized_c.build("clang", "fuzz_validator.c", SOURCES,
                               tmp_path / "fuzz_nm_validator", fuzzer=True, defines=["TFS_TEST_OP_NM"])
    run = sanitized_c.fuzz(binary, FUZZ_SECONDS, tmp_path)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in run.stderr, tail
