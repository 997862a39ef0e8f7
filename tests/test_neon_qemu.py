"""The AArch64 NEON kernels of both custom ops (tflite_export/kernels/tfs_gsfc_neon.c,
tfs_nm_neon.c), cross-compiled with Debian's aarch64 GCC and run under qemu-aarch64
(tests/c/neon_driver.c), on an x86 host.

Every g the kernels have (4, 8, 16), both col_idx widths, ragged tails, rows without groups,
layers wider than 256 groups, zero and non-zero input zero points, both int8 requantization
flavours. Two emulated cores: `max` (ARMv8.x with the dot-product extension: FMLA, SMLAL and
SDOT kernels) and `cortex-a72` (ARMv8.0-A, no dot product: the probe must say so). int8 outputs
must equal numpy's (tests/test_kernels.py's references) and the portable kernel's in the same
binary exactly; float32 ones within 1e-5 of the sum of |terms| (the kernels sum in another order).
The same cases run again under ASan + UBSan, and with the driver built by clang against the GCC
build. TFS_NM_SPARSE_FC (2:4): odd window counts, odd position-byte counts, a single window, both
requantization flavours, through the manifest's dispatch (TFS_IMPL_NEON, and NEON_DOT falling back
to it), against numpy and the portable kernel.
"""
import os
import shutil
import struct
import sys

import numpy as np
import pytest

import custom_op_testlib as tl
import sanitized_c
from test_kernels import _int8_params, _ref_float, _ref_int8_fixed, _ref_int8_fp32
from test_nm_kernels import f32_layer, i8_layer, random_2_4, ref_f32, ref_i8
from tflite_export import params_blob
from tflite_export.kernels import REQUANT

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks", "cortex_a"))
import a64_toolchain as a64  # noqa: E402

GS = [4, 8, 16]
# (in, out): multiples of 16; ragged for every g; in < 16 (all-tail rows for g = 16); more than
# 256 groups per row for g = 4 (uint16 indices only); out not a multiple of 4 (the int8 kernels
# requantize 4 rows at a time).
SHAPES = [(64, 16), (45, 19), (7, 9), (130, 33), (1030, 6), (96, 21), (128, 40)]
# Per shape: the batch (1: the float32 g = 4 kernel's batch-1 instantiation) and the float32
# activation (0 none, 1 RELU, 3 RELU6; the float32 kernels are instantiated per activation),
# so that every (ragged or not, batch 1 or not, activation) combination runs; (96, 21): the last
# block holds padding slots; (128, 40): its last block has no full group (a block without steps).
SHAPE_BATCH = [1, 3, 1, 3, 1, 1, 3]
SHAPE_F32_ACT = [3, 1, 0, 3, 1, 0, 0]
INDEX_DTYPES = [np.uint8, np.uint16]
BATCH = 3
TOL = 1e-5


def _weights(rng, in_f, out_f, g):
    w = tl.random_group_sparse(rng, out_f, in_f, g, 0.35)
    w[1::4] = 0.0  # rows without groups
    return w


def _cases():
    """(name, dtype, requant, w, bias, params, arrays, x) for every combination."""
    rng = np.random.default_rng(16)
    cases = []
    for dtype in ("float32", "int8"):
        for g in GS:
            for index_dtype in INDEX_DTYPES:
                for s, (in_f, out_f) in enumerate(SHAPES):
                    if index_dtype == np.uint8 and -(-in_f // g) > 256:
                        continue  # group indices above 255 need uint16
                    activation = SHAPE_F32_ACT[s] if dtype == "float32" else s % 2
                    batch = SHAPE_BATCH[s]
                    w = _weights(rng, in_f, out_f, g)
                    name = f"{dtype} g={g} {np.dtype(index_dtype).name} {in_f}x{out_f}"
                    if dtype == "float32":
                        bias = rng.standard_normal(out_f).astype(np.float32)
                        arrays = tl.layer_arrays(w, bias, g, activation, index_dtype=index_dtype)
                        x = rng.standard_normal((batch, in_f)).astype(np.float32)
                        cases.append((name, dtype, "fp32", w, bias, None, arrays, x))
                        continue
                    wq = np.clip(np.round(w * 50), -128, 127).astype(np.int8)
                    bias = rng.integers(-3000, 3000, out_f).astype(np.int32)
                    p = _int8_params(rng, out_f, activation)
                    if s % 3 == 0:
                        p["in_zp"] = 0  # the SDOT kernels skip the weight sums then
                    arrays = tl.layer_arrays(wq, bias, g, activation, int8=p, index_dtype=index_dtype)
                    x = rng.integers(-128, 128, (batch, in_f)).astype(np.int8)
                    for requant in REQUANT:
                        cases.append((f"{name} {requant}", dtype, requant, wq, bias, p, arrays, x))
    return cases


CASES = _cases()

# 2:4 (in, out): in / 4 windows odd (36, 100: the last window runs scalar), in / 8 position bytes
# odd (24, 40: the two-byte step's remainder), one window (4), wide (1024).
NM_SHAPES = [(16, 8), (36, 7), (24, 5), (40, 3), (4, 1), (100, 10), (1024, 9)]
NM_SECTIONS = params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"]


def _nm_cases():
    """(name, dtype, requant, w, bias, arrays, x, expected) for the 2:4 op (expected None: the
    fixed-point flavour, compared with the portable kernel only)."""
    rng = np.random.default_rng(24)
    cases = []
    for s, (in_f, out_f) in enumerate(NM_SHAPES):
        activation = (0, 1, 3)[s % 3]
        w = random_2_4(rng, out_f, in_f)
        bias = rng.standard_normal(out_f).astype(np.float32)
        x = rng.standard_normal((BATCH, in_f)).astype(np.float32) * 3
        arrays = dict(zip(NM_SECTIONS, f32_layer(w, bias, activation)))
        cases.append((f"nm float32 {in_f}x{out_f}", "float32", "fp32", arrays, x,
                      ref_f32(w, bias, x, activation)))
        wq = np.clip(np.round(random_2_4(rng, out_f, in_f) * 40), -127, 127).astype(np.int8)
        listed = i8_layer(rng, wq, activation % 2)
        arrays = dict(zip(NM_SECTIONS, listed))
        x = rng.integers(-128, 128, (BATCH, in_f)).astype(np.int8)
        cases.append((f"nm int8 {in_f}x{out_f} fp32", "int8", "fp32", arrays, x, ref_i8(listed, wq, x)))
        cases.append((f"nm int8 {in_f}x{out_f} fixed_point", "int8", "fixed_point", arrays, x, None))
    return cases


NM_CASES = _nm_cases()


def _expected(case):
    _, dtype, requant, w, bias, p, arrays, x = case
    activation = int(arrays["meta"][6])
    if dtype == "float32":
        return _ref_float(w, bias, x, activation)
    return (_ref_int8_fp32 if requant == "fp32" else _ref_int8_fixed)(w, bias, x, p), None


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    try:
        a64.ensure_packages()
    except a64.ToolchainError as e:  # scripts/setup.sh installs them; the reason names what is missing
        pytest.skip(f"AArch64 cross toolchain / qemu-user unavailable: {e}")
    work = tmp_path_factory.mktemp("neon")
    binary = a64.compile_program([os.path.join(os.path.dirname(__file__), "c", "neon_driver.c")],
                                 work / "neon_driver")
    _write_cases(work / "cases.bin", [(c[2], c[6], c[7]) for c in CASES], params_blob.SECTIONS)
    _write_cases(work / "nm_cases.bin", [(c[2], c[3], c[4]) for c in NM_CASES], NM_SECTIONS)
    return binary, work


def _write_cases(path, cases, sections):
    """The driver's case file: (requant, arrays, x) each."""
    with open(path, "wb") as f:
        for requant, arrays, x in cases:
            blob = params_blob.pack_params(arrays, int(arrays["meta"][2]), sections).tobytes()
            xb = np.ascontiguousarray(x).tobytes()
            f.write(struct.pack("<4i", x.shape[0], REQUANT[requant], len(blob), len(xb)) + blob + xb)


@pytest.fixture(scope="module")
def sanitized_driver(driver):
    """The same driver built with ASan + UBSan (errors abort), same case file."""
    _, work = driver
    binary = a64.compile_program([os.path.join(os.path.dirname(__file__), "c", "neon_driver.c")],
                                 work / "neon_driver_asan",
                                 [*sanitized_c.FLAGS, "-fsanitize=address,undefined"])
    return binary, work


def _run(driver, cpu, nm=False):
    """Runs the driver on the group-sparse cases (or the 2:4 ones): (its line, [3 outputs] per case)."""
    binary, work = driver
    out = work / f"out_{os.path.basename(str(binary))}_{cpu}{'_nm' * nm}.bin"
    run = a64.run(binary, [work / ("nm_cases.bin" if nm else "cases.bin"), out, *(["nm"] * nm)], cpu=cpu)
    assert run.returncode == 0, f"neon_driver under qemu -cpu {cpu} failed:\n{run.stdout}{run.stderr}"
    raw = out.read_bytes()
    results, at = [], 0
    for case in NM_CASES if nm else CASES:
        x, arrays = (case[4], case[3]) if nm else (case[7], case[6])
        shape = (x.shape[0], int(arrays["meta"][2]))
        n = int(np.prod(shape)) * x.dtype.itemsize
        ys = [np.frombuffer(raw[at + i * n:at + (i + 1) * n], x.dtype).reshape(shape) for i in range(3)]
        at += 3 * n
        results.append(ys)
    assert at == len(raw)
    return run.stdout.strip(), results


def _check(case, y, y_portable):
    expected, magnitude = _expected(case)
    if magnitude is None:
        np.testing.assert_array_equal(y, expected, err_msg=f"{case[0]}: vs numpy")
        np.testing.assert_array_equal(y, y_portable, err_msg=f"{case[0]}: vs portable kernel")
    else:
        bound = TOL * magnitude
        assert np.all(np.abs(y - expected) <= bound), f"{case[0]}: vs numpy"
        assert np.all(np.abs(y - y_portable) <= bound), f"{case[0]}: vs portable kernel"


def test_cases_cover_every_kernel_shape():
    names = [c[0] for c in CASES]
    for dtype in ("float32", "int8"):
        for g in GS:
            for index in ("uint8", "uint16"):
                assert any(n.startswith(f"{dtype} g={g} {index} ") for n in names)
    # every g = 4 layer wider than 256 groups is uint16-only; rows without groups exist
    assert not any(n.startswith("float32 g=4 uint8 1030x") for n in names)
    assert all(int(c[6]["row_ptr"][2]) == int(c[6]["row_ptr"][1]) for c in CASES)
    # float32 g = 4: batch 1 and 3, ragged and not, every activation; a block of 8 rows without
    # full groups (rows without groups sort last)
    f32_g4 = [c for c in CASES if c[0].startswith("float32 g=4 ")]
    assert {c[7].shape[0] for c in f32_g4} == {1, BATCH}
    assert {c[3].shape[1] % 4 != 0 for c in f32_g4} == {True, False}
    assert {int(c[6]["meta"][6]) for c in f32_g4} == {0, 1, 3}
    assert any((np.abs(c[3][:, :c[3].shape[1] // 4 * 4]).sum(axis=1) == 0).sum() >= 8 for c in f32_g4)


def test_neon_kernels_with_dotprod(driver):
    """-cpu max: FMLA, SMLAL and SDOT kernels against numpy and the portable kernel."""
    info, results = _run(driver, "max")
    assert info == f"dotprod=1 cases={len(CASES)}"
    for case, (y_portable, y_neon, y_dot) in zip(CASES, results):
        _check(case, y_neon, y_portable)
        if case[1] == "int8":
            _check(case, y_dot, y_portable)


def test_neon_kernels_without_dotprod(driver):
    """-cpu cortex-a72 (ARMv8.0-A): the probe reports no dot product; FMLA and SMLAL kernels."""
    info, results = _run(driver, "cortex-a72")
    assert info == f"dotprod=0 cases={len(CASES)}"
    for case, (y_portable, y_neon, y_dot) in zip(CASES, results):
        _check(case, y_neon, y_portable)
        assert not y_dot.any()  # the driver did not run SDOT


@pytest.mark.parametrize("cpu", ["max", "cortex-a72"])
def test_neon_kernels_under_asan_and_ubsan(sanitized_driver, cpu):
    """Every case again with AddressSanitizer and UBSan (LeakSanitizer cannot run under QEMU user
    mode, so only leak detection is off): no out-of-bounds access, no undefined behaviour, and the
    same outputs as the plain build."""
    info, results = _run(sanitized_driver, cpu)
    assert info == f"dotprod={int(cpu == 'max')} cases={len(CASES)}"
    for case, (y_portable, y_neon, _) in zip(CASES, results):
        _check(case, y_neon, y_portable)


def test_clang_build_matches_gcc_build(driver):
    """clang 14's arm_neon.h has no vdotq_s32 for a function-level +dotprod target, so under clang
    the SDOT kernels encode the instruction themselves: the clang-built driver must give the
    GCC-built one's int8 outputs bit for bit, both ops (float32: within tolerance, FMA contraction
    differs)."""
    if shutil.which("clang") is None:
        pytest.skip("clang not found: install the Debian package clang (scripts/setup.sh does)")
    _, work = driver
    # -Wno-unused-function: tfs_group_sparse_fc.c's x86-only helpers are unused on AArch64 and
    # clang (unlike GCC) warns about unused static inline functions.
    binary = a64.compile_program([os.path.join(os.path.dirname(__file__), "c", "neon_driver.c")],
                                 work / "neon_driver_clang", ["-Wno-unused-function"], clang=True)
    info, results = _run((binary, work), "max")
    assert info == f"dotprod=1 cases={len(CASES)}"
    _, gcc_results = _run(driver, "max")
    for case, ys, gcc_ys in zip(CASES, results, gcc_results):
        for y, y_gcc in zip(ys, gcc_ys):
            if case[1] == "int8":
                np.testing.assert_array_equal(y, y_gcc, err_msg=case[0])
        _check(case, ys[1], ys[0])
        if case[1] == "int8":
            _check(case, ys[2], ys[0])
    _, nm_results = _run((binary, work), "max", nm=True)
    _, nm_gcc = _run(driver, "max", nm=True)
    for case, ys, gcc_ys in zip(NM_CASES, nm_results, nm_gcc):
        if case[1] == "int8":
            np.testing.assert_array_equal(ys[1], gcc_ys[1], err_msg=case[0])
        _check_nm(case, ys[1], ys[0])


def _check_nm(case, y, y_portable):
    name, dtype, _, _, _, expected = case
    if dtype == "int8":
        np.testing.assert_array_equal(y, y_portable, err_msg=f"{name}: vs portable kernel")
        if expected is not None:
            np.testing.assert_array_equal(y, expected, err_msg=f"{name}: vs numpy")
        return
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=tol, err_msg=f"{name}: vs numpy")
    np.testing.assert_allclose(y, y_portable, rtol=1e-5, atol=tol, err_msg=f"{name}: vs portable")


def test_nm_cases_cover_odd_windows_and_bytes():
    windows = [in_f // 4 for in_f, _ in NM_SHAPES]
    assert any(w % 2 for w in windows) and any((w // 2) % 2 for w in windows) and 1 in windows


@pytest.mark.parametrize("cpu", ["max", "cortex-a72"])
def test_nm_neon_kernels(driver, cpu):
    """2:4: the NEON kernels through the dispatch, against numpy and the portable kernel; on a core
    with the dot product, TFS_IMPL_NEON_DOT must run the same NEON kernel (its parent's)."""
    info, results = _run(driver, cpu, nm=True)
    assert info == f"dotprod={int(cpu == 'max')} cases={len(NM_CASES)}"
    for case, (y_portable, y_neon, y_dot) in zip(NM_CASES, results):
        _check_nm(case, y_neon, y_portable)
        if cpu == "max":
            np.testing.assert_array_equal(y_dot, y_neon, err_msg=case[0])
        else:
            assert not y_dot.any()


def test_nm_neon_kernels_under_asan_and_ubsan(sanitized_driver):
    info, results = _run(sanitized_driver, "max", nm=True)
    assert info == f"dotprod=1 cases={len(NM_CASES)}"
    for case, (y_portable, y_neon, _) in zip(NM_CASES, results):
        _check_nm(case, y_neon, y_portable)
