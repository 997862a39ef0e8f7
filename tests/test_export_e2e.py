"""End to end: exported custom-op models, run by tflite_export.runtime, equal the dense TFLite model.

For every g and several layer shapes (ragged in % g included; ReLU, ReLU6 and no activation):
int8 bit-exact and float32 within 1e-5 relative, at batch 1 and above. The reference is the
converter's dense model of the same stripped Keras model on the stock LiteRT path (XNNPACK).
"""
import numpy as np
import pytest

import export_testlib as tl
from tflite_export import exporter, runtime
from tflite_export.converter import convert_keras

GS = (1, 2, 4, 8, 16)
# 37 -> 64 -> 20 -> 13: every layer's shape differs; 37 and 20 are ragged for most g.
IN = 37
LAYERS = [(64, "relu"), (20, "relu6"), (13, None)]
NAMES = ["dense", "dense_1", "dense_2"]
BATCHES = (1, 7)


def _model(g, seed):
    return tl.stripped_model(IN, LAYERS, g=g, sparsity=0.6, seed=seed)


@pytest.fixture(scope="module")
def converted():
    """{(dtype, g): (keras model, dense .tflite bytes)}, converted once for the module."""
    rng = np.random.default_rng(99)
    calib = rng.standard_normal((64, IN)).astype(np.float32)
    out = {}
    for g in GS:
        model = _model(g, seed=100 + g)
        out[("float32", g)] = (model, convert_keras(model))
        out[("int8", g)] = (model, convert_keras(model, "int8", calib))
    return out


def _inputs(batch, seed):
    return np.random.default_rng(seed).standard_normal((batch, IN)).astype(np.float32)


def _run(model_bytes, x, stock):
    rt = runtime.load_stock(model_bytes) if stock else runtime.load(model_bytes)
    with rt:
        return rt.run(x)[0]


@pytest.mark.parametrize("g", GS)
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_custom_op_model_equals_dense_model(converted, dtype, g):
    model, dense = converted[(dtype, g)]
    res = exporter.rewrite_tflite(dense, formats={n: "custom" for n in NAMES},
                                  group_sizes={n: g for n in NAMES}, keras_model=model)
    assert [lr.format for lr in res.report.layers] == ["custom"] * 3
    for batch in BATCHES:
        x = _inputs(batch, seed=g * 10 + batch)
        ref = _run(dense, x, stock=True)
        got = _run(res.model_bytes, x, stock=False)
        assert got.shape == ref.shape == (batch, LAYERS[-1][0])
        if dtype == "int8":
            np.testing.assert_array_equal(got, ref, err_msg=f"int8 g={g} batch={batch}")
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                                       err_msg=f"float32 g={g} batch={batch}")


def test_int8_io_and_per_tensor_weights_bit_exact():
    model = _model(4, seed=7)
    calib = np.random.default_rng(8).standard_normal((64, IN)).astype(np.float32)
    dense = convert_keras(model, "int8", calib, int8_io=True, per_channel=False)
    res = exporter.rewrite_tflite(dense, formats={n: "custom" for n in NAMES},
                                  group_sizes={n: 4 for n in NAMES}, keras_model=model)
    x = np.random.default_rng(9).integers(-128, 128, size=(5, IN)).astype(np.int8)
    np.testing.assert_array_equal(_run(res.model_bytes, x, stock=False), _run(dense, x, stock=True))


def test_auto_export_mixes_formats_and_stays_exact():
    # A large, very sparse first layer (sparse pays off) and small dense ones (they stay dense).
    model = tl.stripped_model(512, [(256, "relu"), (10, None)], g=8, sparsity=0.95, seed=12)
    k, b = model.layers[1].get_weights()
    model.layers[1].set_weights([np.random.default_rng(13).standard_normal(k.shape).astype(np.float32), b])
    res = exporter.export(model)
    first, last = res.report.layers
    assert first.format != "dense" and last.format == "dense"
    x = np.random.default_rng(14).standard_normal((3, 512)).astype(np.float32)
    ref = _run(res.dense_model_bytes, x, stock=True)
    np.testing.assert_allclose(_run(res.model_bytes, x, stock=False), ref, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())
