"""benchmarks/mcu's conv path without QEMU: im2col (numpy and the kernels' C, built for the host)
and the group-CSR kernel on im2col patches reproduce TFLite's int8 CONV_2D bit-exactly."""
import ctypes
import importlib.util
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MCU = os.path.join(ROOT, "benchmarks", "mcu")
KERNELS = os.path.join(ROOT, "tflite_export", "kernels")


def _mcu_module(name):
    """benchmarks/mcu/<name>.py, loaded by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(MCU, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mcu_layers = _mcu_module("mcu_layers")
mcu_firmware = _mcu_module("mcu_firmware")


def _geom(in_h, in_w, cin, kh, kw, stride=1, dil=1, same=False, pad_value=0):
    """TFLite's output size and SAME padding (ComputePaddingHeightWidth)."""
    eff_h, eff_w = (kh - 1) * dil + 1, (kw - 1) * dil + 1
    if same:
        out_h, out_w = -(-in_h // stride), -(-in_w // stride)
        pt = max((out_h - 1) * stride + eff_h - in_h, 0) // 2
        pl = max((out_w - 1) * stride + eff_w - in_w, 0) // 2
    else:
        out_h, out_w = (in_h - eff_h) // stride + 1, (in_w - eff_w) // stride + 1
        pt = pl = 0
    return dict(in_h=in_h, in_w=in_w, cin=cin, out_h=out_h, out_w=out_w, kh=kh, kw=kw,
                stride_h=stride, stride_w=stride, dil_h=dil, dil_w=dil, pad_top=pt, pad_left=pl,
                pad_value=pad_value)


def _naive_im2col(x, G):
    """One loop per index: the definition the vectorised im2col must meet."""
    n = x.shape[0]
    out = np.empty((n, G["out_h"] * G["out_w"], G["kh"] * G["kw"] * G["cin"]), np.int8)
    for b in range(n):
        for oy in range(G["out_h"]):
            for ox in range(G["out_w"]):
                k = 0
                for ky in range(G["kh"]):
                    for kx in range(G["kw"]):
                        for c in range(G["cin"]):
                            iy = oy * G["stride_h"] - G["pad_top"] + ky * G["dil_h"]
                            ix = ox * G["stride_w"] - G["pad_left"] + kx * G["dil_w"]
                            inside = 0 <= iy < G["in_h"] and 0 <= ix < G["in_w"]
                            out[b, oy * G["out_w"] + ox, k] = x[b, iy, ix, c] if inside else G["pad_value"]
                            k += 1
    return out


def test_im2col_exact_small_example():
    x = np.arange(1, 10, dtype=np.int8).reshape(1, 3, 3, 1)  # 1 2 3 / 4 5 6 / 7 8 9
    G = _geom(3, 3, 1, 2, 2, same=True, pad_value=-5)  # SAME, 2x2: padding at the bottom / right
    assert (G["out_h"], G["out_w"], G["pad_top"], G["pad_left"]) == (3, 3, 0, 0)
    np.testing.assert_array_equal(mcu_layers.im2col(x, G)[0], [
        [1, 2, 4, 5], [2, 3, 5, 6], [3, -5, 6, -5],
        [4, 5, 7, 8], [5, 6, 8, 9], [6, -5, 9, -5],
        [7, 8, -5, -5], [8, 9, -5, -5], [9, -5, -5, -5]])


GEOMETRIES = [
    _geom(28, 28, 1, 5, 5, pad_value=-128),                # LeNet-5 conv1 (VALID)
    _geom(14, 14, 3, 5, 5, same=True, pad_value=7),        # ConvNet-like SAME, 5x5
    _geom(9, 8, 4, 3, 3, stride=2, same=True, pad_value=-3),
    _geom(10, 11, 2, 3, 2, stride=2, pad_value=1),
    _geom(9, 9, 5, 3, 3, dil=2, same=True, pad_value=-1),  # dilation: per-tap path
    _geom(6, 7, 20, 3, 3, stride=3, same=True, pad_value=0),
]


@pytest.mark.parametrize("G", GEOMETRIES)
def test_numpy_im2col_matches_naive_loops(G):
    x = np.random.default_rng(1).integers(-128, 128, (2, G["in_h"], G["in_w"], G["cin"])).astype(np.int8)
    np.testing.assert_array_equal(mcu_layers.im2col(x, G), _naive_im2col(x, G))


class _Geom(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "in_h", "in_w", "cin", "out_h", "out_w", "kh", "kw", "stride_h", "stride_w", "dil_h",
        "dil_w", "pad_top", "pad_left", "pad_value")]


@pytest.fixture(scope="module")
def c_im2col(tmp_path_factory):
    """The kernels' tfs_im2col.c (TFS_GROUP_SPARSE_CONV2D's and the firmware's), built for the
    host (warnings as errors)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    lib = str(tmp_path_factory.mktemp("im2col") / "libim2col.so")
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                    os.path.join(KERNELS, "tfs_im2col.c"), "-o", lib], check=True)
    dll = ctypes.CDLL(lib)
    dll.tfs_im2col_s8.argtypes = [ctypes.POINTER(_Geom), ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                              ctypes.c_void_p]
    dll.tfs_im2col_s8.restype = None
    return dll


@pytest.mark.parametrize("G", GEOMETRIES)
def test_firmware_im2col_matches_numpy_in_tiles(G, c_im2col):
    x = np.random.default_rng(2).integers(-128, 128, (1, G["in_h"], G["in_w"], G["cin"])).astype(np.int8)
    want = mcu_layers.im2col(x, G)[0]
    P, K = want.shape
    assert tuple(mcu_firmware.GEOM_FIELDS) == tuple(f for f, _ in _Geom._fields_)  # the struct's order
    g = _Geom(**G)
    for tile in (1, 3, P):  # tiles that start mid-row and a ragged last tile
        got = np.full((P + 1, K), 99, np.int8)  # one sentinel row: nothing written past the end
        for p0 in range(0, P, tile):
            n = min(tile, P - p0)
            c_im2col.tfs_im2col_s8(ctypes.byref(g), x.ctypes.data, p0, n, got[p0:].ctypes.data)
        np.testing.assert_array_equal(got[:P], want)
        assert np.all(got[P] == 99)


def test_im2col_group_csr_kernel_reproduces_tflite_conv2d_bit_exact():
    """A tiny conv net with pruned groups of 4 along kh*kw*cin, converted by the exporter's own
    convert_keras: the host im2col + group-sparse kernel (fixed-point requantization, the
    firmware's arithmetic) equals TFLite's reference int8 CONV_2D on every value; with XNNPACK's
    fp32 requantization it equals XNNPACK's CONV_2D on every value."""
    rng = np.random.default_rng(3)
    model = keras.Sequential([
        keras.Input((9, 9, 3)),
        keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c1"),
        keras.layers.Conv2D(8, 3, padding="valid", name="c2"),
        keras.layers.Flatten(),
        keras.layers.Dense(5, name="d")])
    for name in ("c1", "c2"):
        layer = model.get_layer(name)
        k, b = layer.get_weights()
        kh, kw, cin, cout = k.shape
        flat = k.reshape(kh * kw * cin, cout)  # the im2col order (tfscalpel/patterns.py)
        n_blocks = -(-flat.shape[0] // 4)
        for c in range(cout):
            for blk in rng.choice(n_blocks, n_blocks // 2, replace=False):
                flat[4 * blk:4 * blk + 4, c] = 0.0
        layer.set_weights([flat.reshape(k.shape), b])
    calib = rng.random((64, 9, 9, 3), dtype=np.float32)
    images = rng.random((16, 9, 9, 3), dtype=np.float32)
    tfl_bytes, layers = mcu_layers.model_layers(model, calib, 4)
    assert [(L["name"], L["kind"]) for L in layers] == [("c1", "conv"), ("c2", "conv"), ("d", "fc")]
    c1, c2 = layers[0], layers[1]
    assert c1["geom"] == dict(_geom(9, 9, 3, 3, 3, stride=2, same=True), pad_value=c1["geom"]["pad_value"])
    assert c2["geom"] == dict(_geom(5, 5, 6, 3, 3), pad_value=c2["geom"]["pad_value"])
    # group-CSR along kh*kw*cin: K = 27 (7 groups a filter, the last ragged), 54 (14 groups)
    assert [int(v) for v in c1["meta"][1:5]] == [27, 6, 4, 6 * (7 - 3)]
    assert [int(v) for v in c2["meta"][1:5]] == [54, 8, 4, 8 * (14 - 7)]
    assert c1["positions"] == 25 and c2["positions"] == 9
    checks, xs, ys = mcu_layers.check_layers(tfl_bytes, layers, images, image=3)
    assert [c["checked_values"] for c in checks] == [16 * 25 * 6, 16 * 9 * 8, 16 * 5]
    for c in checks[:2]:
        assert c["tflite_ref_mismatches"] == 0 and c["tflite_ref_double_mismatches"] is None
        assert c["xnnpack_fp32_mismatches"] == 0
    assert checks[2]["tflite_ref_double_mismatches"] == 0 and checks[2]["xnnpack_fp32_mismatches"] == 0
    # what the firmware gets: image 3's whole input feature map and the host's output
    assert [x.size for x in xs] == [9 * 9 * 3, 5 * 5 * 6, 3 * 3 * 8]
    assert [y.size for y in ys] == [25 * 6, 9 * 8, 5]


def test_fit_profile_recovers_the_coefficients_that_made_the_rows(monkeypatch):
    """bench_mcu.py --fit's fit (fit_profile): rows made by the cost formula itself
    (tfscalpel.cost_profile) from known coefficients give those coefficients back, FC and conv
    (im2col split from the kernel's own per-position cost by the measured im2col share)."""
    from tfscalpel.cost_profile import conv_time, fc_time

    monkeypatch.syspath_prepend(MCU)  # bench_mcu imports its siblings by name
    bench_mcu = _mcu_module("bench_mcu")
    units = {"1": 9.0, "2": 12.0, "4": 16.0, "8": 25.0, "16": 60.0}
    truth = {"formats": {
        "dense": {"int8": {"fixed_ns": 90.0, "row_ns": 80.0, "unit_ns": 2.5}},
        "custom": {"int8": {"fixed_ns": 900.0, "row_ns": 130.0, "unit_ns": units}},
        "custom_conv": {"int8": {"position_ns": 340.0 + 560.0, "patch_ns": 1.2, "widen_ns": 4.0,
                                 "row_ns": 80.0, "unit_ns": {"4": 10.5}}}}}
    rows = []
    for k, n in ((784, 300), (300, 100), (100, 10)):
        for g in (1, 2, 4, 8, 16):
            for keep in (0.5, 0.1):
                groups = int(keep * -(-k // g) * n)
                rows.append({"name": f"fc{k}", "kind": "fc", "in": k, "out": n, "g": g,
                             "groups": groups, "positions": 1, "dense_instructions": 0,
                             "sparse_instructions": 0, "dense_cycles": fc_time(truth, "int8", "dense", k, n),
                             "sparse_cycles": fc_time(truth, "int8", "custom", k, n, g, groups)})
    for k, n, p in ((25, 20, 576), (500, 50, 64), (800, 32, 196)):
        for keep in (0.5, 0.1):
            groups = int(keep * -(-k // 4) * n)
            rows.append({"name": f"conv{k}", "kind": "conv", "in": k, "out": n, "g": 4,
                         "groups": groups, "positions": p, "im2col_cycles": 340.0 * p + 1.2 * p * k,
                         "sparse_cycles": conv_time(truth, "int8", "custom_conv", k, n, p, 4, groups)})
    fitted = bench_mcu.fit_profile(rows)
    for fmt, by_dtype in truth["formats"].items():
        for key, want in by_dtype["int8"].items():
            got = fitted[fmt]["int8"][key]
            if isinstance(want, dict):
                assert {g: pytest.approx(u, abs=2e-3) for g, u in want.items()} == got, (fmt, key)
            else:
                assert got == pytest.approx(want, abs=2e-3), (fmt, key)
    # TFLite Micro's CONV_2D is not measured by this firmware: kept from the profile
    assert "dense_conv" in fitted["custom_conv"]["int8"]
