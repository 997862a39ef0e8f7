"""The kernel core built with -fsanitize=address,undefined and driven by tests/c/sanitizer_driver.c:
every g, dtype, shape and available SIMD path against the portable kernel, and corrupt metadata;
and TFS_GROUP_SPARSE_CONV2D by tests/c/fuzz_gsconv.c's seeded driver (every path vs a direct
convolution, corrupt geometry; int8 and float32 nodes, float32 also on the direct path)."""
import subprocess

import sanitized_c


def test_kernel_core_under_asan_and_ubsan(tmp_path, request):
    binary = sanitized_c.build("gcc", "sanitizer_driver.c",
                               sanitized_c.CORE, tmp_path / "sanitizer_driver")
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"sanitizer driver failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    assert run.stdout.startswith("OK:"), run.stdout
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(f"\n[tfs kernels, ASan+UBSan] {run.stdout.strip()}")


def test_conv_core_under_asan_and_ubsan(tmp_path):
    binary = sanitized_c.build("gcc", "fuzz_gsconv.c", sanitized_c.CORE, tmp_path / "gsconv_driver",
                               defines=("TFS_GSCONV_DRIVER",))
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"conv sanitizer driver failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    assert run.stdout.startswith("OK: "), run.stdout
    accepted, f32 = int(run.stdout.split()[1]), int(run.stdout.split("(")[1].split()[0])
    assert accepted > 1000, run.stdout  # most seeded layers are valid and reach the kernels
    assert f32 > 300, run.stdout  # float32 nodes (empty requantization arrays) among them
    direct = int(run.stdout.split("float32, ")[1].split()[0])
    assert direct > 300, run.stdout  # and the float32 direct path (tfs_gsconv_set_direct)
