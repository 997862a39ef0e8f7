"""The kernel core built with -fsanitize=address,undefined and driven by tests/c/sanitizer_driver.c:
every g, dtype, shape and available SIMD path against the portable kernel, and corrupt metadata."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def test_kernel_core_under_asan_and_ubsan(tmp_path, request):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not found: install build-essential (scripts/setup.sh does)")
    binary = tmp_path / "sanitizer_driver"
    build = subprocess.run(
        [gcc, "-std=c11", "-D_POSIX_C_SOURCE=200112L", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         os.path.join(HERE, "c", "sanitizer_driver.c"),
         os.path.join(ROOT, "tflite_export", "kernels", "tfs_group_sparse_fc.c"),
         os.path.join(ROOT, "tflite_export", "kernels", "tfs_common.c"),
         "-lm", "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, f"building the sanitizer driver failed:\n{build.stderr}"
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"sanitizer driver failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    assert run.stdout.startswith("OK:"), run.stdout
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(f"\n[tfs kernels, ASan+UBSan] {run.stdout.strip()}")
