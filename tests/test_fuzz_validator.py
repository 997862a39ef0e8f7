"""Fuzzing the format validator (and every kernel path on what it accepts) with libFuzzer under
AddressSanitizer + UndefinedBehaviorSanitizer, for a bounded time. Needs clang with the
compiler-rt fuzzer runtime (Debian: clang, libclang-rt-14-dev; scripts/setup.sh installs them)."""
import os

import sanitized_c

FUZZ_SECONDS = int(os.environ.get("TFS_FUZZ_SECONDS", "20"))


def test_fuzz_validator_under_asan_ubsan(tmp_path):
    binary = sanitized_c.build("clang", "fuzz_validator.c", sanitized_c.CORE,
                               tmp_path / "fuzz_validator", fuzzer=True)
    run = sanitized_c.fuzz(binary, FUZZ_SECONDS, tmp_path)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in run.stderr, tail
