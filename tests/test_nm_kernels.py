"""TFS_NM_SPARSE_FC: compressed 2:4 layout, C kernels vs numpy, validator rule by rule, and the
exported custom-op model on the LiteRT runtime vs the dense TFLite model."""
import re

import numpy as np
import pytest

import array_mutations
from tflite_export import kernels, nm_export
from tflite_export.kernels import KernelFormatError
from tflite_export.kernels.nm import NMSparseFC

#: The implementations the C manifest lists TFS_NM_SPARSE_FC kernels for (tested by being listed).
IMPLS = sorted({k.impl for k in kernels.kernel_table() if k.op == "nm_sparse_fc"})


def _require(impl):
    if impl not in kernels.available_impls():
        pytest.skip(f"kernel path {impl!r} needs the CPU features {kernels.impl_features(impl)}, "
                    "which this CPU lacks")


def random_2_4(rng, out_f, in_f, sparse_windows=0.1):
    """float32 w[out, in], 2:4 along in; some windows keep fewer than 2 (stored zeros)."""
    w = rng.standard_normal((out_f, in_f // 4, 4)).astype(np.float32)
    order = np.argsort(rng.random(w.shape), axis=2)
    drop = np.zeros(w.shape, bool)
    np.put_along_axis(drop, order[:, :, :2], True, axis=2)
    extra = rng.random(w.shape[:2]) < sparse_windows
    np.put_along_axis(drop, order[:, :, 2:3], extra[:, :, None], axis=2)
    w[drop] = 0.0
    return w.reshape(out_f, in_f)


def f32_layer(w, bias, activation=0):
    values, indices = nm_export.encode_2_4(w)
    meta = np.zeros(16, np.int32)
    meta[:7] = [1, w.shape[1], w.shape[0], 2, 4, 0, activation]
    return [values.reshape(-1), indices.reshape(-1), meta, bias.astype(np.float32)]


def i8_layer(rng, wq, activation=0):
    out_f, in_f = wq.shape
    values, indices = nm_export.encode_2_4(wq)
    meta = np.zeros(16, np.int32)
    out_zp = int(rng.integers(-20, 20))
    meta[:11] = [1, in_f, out_f, 2, 4, 1, activation, int(rng.integers(-20, 20)), out_zp,
                 out_zp if activation else -128, 127]
    bias = rng.integers(-3000, 3000, out_f).astype(np.int32)
    scale = (0.05 * rng.uniform(0.002, 0.01, out_f) / (0.1 * np.sqrt(in_f / 64))).astype(np.float32)
    mult = np.full(out_f, 1 << 30, np.int32)
    shift = np.full(out_f, -8, np.int32)
    return [values.reshape(-1), indices.reshape(-1), meta, bias, mult, shift, scale]


def ref_f32(w, bias, x, activation):
    y = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    return np.maximum(y, 0) if activation == 1 else (np.clip(y, 0, 6) if activation == 3 else y)


def ref_i8(arrays, wq, x):
    """XNNPACK-style fp32 requantization in numpy (what the stock int8 FC does on this host)."""
    _, _, meta, bias, _, _, scale = arrays
    in_zp, out_zp, lo, hi = (int(v) for v in meta[7:11])
    acc = (x.astype(np.int64) - in_zp) @ wq.T.astype(np.int64) + bias
    acc = ((acc + 2**31) % 2**32 - 2**31).astype(np.int32)
    f = acc.astype(np.float32) * scale
    f = np.clip(f, np.float32(lo - out_zp), np.float32(hi - out_zp))
    return (np.rint(f).astype(np.int32) + out_zp).astype(np.int8)


SHAPES = [(16, 8), (784, 300), (100, 10), (36, 7), (4, 1), (1024, 17)]


def _cases(act_batches):
    return [(shape, a, b) for shape in SHAPES for a, b in act_batches]


@pytest.mark.parametrize("in_f,out_f", SHAPES)
def test_layout_round_trip(in_f, out_f):
    rng = np.random.default_rng(in_f * 31 + out_f)
    w = random_2_4(rng, out_f, in_f, sparse_windows=0.3)
    values, indices = nm_export.encode_2_4(w)
    assert values.shape == (out_f, in_f // 2) and indices.shape == (out_f, (in_f // 4 + 1) // 2)
    np.testing.assert_array_equal(nm_export.decode_2_4(values, indices, in_f), w)
    # positions strictly increase in every window; bits match a hand decode of one window
    nib = indices[0, 0] & 0xF
    kept = np.flatnonzero(w[0, :4])
    assert set(kept) <= {nib & 3, nib >> 2} and (nib & 3) < (nib >> 2)


def test_encode_rejects_non_2_4():
    w = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="output 0, window at input 0 has 4 nonzeros"):
        nm_export.encode_2_4(w)
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_export.encode_2_4(np.zeros((2, 6), np.float32))


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_kernel_vs_numpy(impl):
    _require(impl)
    for (in_f, out_f), activation, batch in _cases(((0, 1), (1, 3), (3, 2))):
        rng = np.random.default_rng(in_f + 7 * out_f + activation)
        w = random_2_4(rng, out_f, in_f)
        bias = rng.standard_normal(out_f).astype(np.float32)
        x = rng.standard_normal((batch, in_f)).astype(np.float32) * (4 if activation == 3 else 1)
        layer = NMSparseFC(*f32_layer(w, bias, activation))
        assert layer.kernel(impl) == f"tfs_nmfc_{impl}_f32"
        y = layer(x, impl=impl)
        ref = ref_f32(w, bias, x, activation)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("impl", IMPLS)
def test_int8_kernel_vs_numpy_bit_exact(impl):
    _require(impl)
    for (in_f, out_f), activation, batch in _cases(((0, 1), (1, 4))):
        rng = np.random.default_rng(3 * in_f + out_f + activation)
        wq = np.clip(np.round(random_2_4(rng, out_f, in_f) * 40), -127, 127).astype(np.int8)
        arrays = i8_layer(rng, wq, activation)
        x = rng.integers(-128, 128, (batch, in_f)).astype(np.int8)
        y = NMSparseFC(*arrays)(x, impl=impl)
        np.testing.assert_array_equal(y, ref_i8(arrays, wq, x))
        # the fixed-point flavour (TFLite Micro's) agrees between paths too
        fp = [NMSparseFC(*arrays, requant="fixed_point")(x, impl=i) for i in IMPLS
              if i in kernels.available_impls()]
        for other in fp[1:]:
            np.testing.assert_array_equal(other, fp[0])
        acc = (x.astype(np.int64) - int(arrays[2][7])) @ wq.T.astype(np.int64) + arrays[3]
        expect = np.array([[kernels.multiply_by_quantized_multiplier(int(a), 1 << 30, -8)
                            for a in row] for row in acc]) + int(arrays[2][8])
        np.testing.assert_array_equal(fp[0], np.clip(expect, arrays[2][9], arrays[2][10]).astype(np.int8))


# ---- validator, one test per rule ---------------------------------------------------------------

def _f32(in_f=20, out_f=3):
    rng = np.random.default_rng(5)
    return f32_layer(random_2_4(rng, out_f, in_f), rng.standard_normal(out_f).astype(np.float32))


def _i8():
    rng = np.random.default_rng(6)
    wq = np.clip(np.round(random_2_4(rng, 3, 20) * 40), -127, 127).astype(np.int8)
    return i8_layer(rng, wq)


def _meta(i, v):
    return array_mutations.set_at(2, i, v)


_set = array_mutations.replace


def _position(byte):
    return array_mutations.set_at(1, 0, byte)


F32_RULES = {
    "too few inputs": (_set(3, lambda b: None), "4 inputs, expected 5"),
    "meta type": (_set(2, lambda m: m.astype(np.int64)), "input 3 (meta): element type"),
    "meta length": (_set(2, lambda m: m[:15]), "input 3 (meta): 15 elements"),
    "version": (_meta(0, 2), "format version 2"),
    "pattern": (_meta(3, 1), "pattern 1:4"),
    "in multiple of 4": (_meta(1, 18), "in = 18 not a multiple of 4"),
    "out >= 1": (_meta(2, 0), "out = 0"),
    "dtype": (_meta(5, 2), "dtype = 2"),
    "activation": (_meta(6, 2), "fused activation 2"),
    "float32 zero points": (_meta(7, 1), "zero points and activation range must be 0"),
    "reserved": (_meta(13, 1), "reserved field 13"),
    "input count vs dtype": (lambda a: a.extend([np.zeros(3, np.int32)] * 3), "a float32 node has 5"),
    "values count": (_set(0, lambda v: v[:-1]), "input 1 (values): 29 elements, expected 30"),
    "values type": (_set(0, lambda v: v.astype(np.float64)), "input 1 (values): element type"),
    "indices count": (_set(1, lambda v: np.append(v, 0).astype(np.uint8)), "input 2 (indices)"),
    "indices type": (_set(1, lambda v: v.astype(np.int8)), "input 2 (indices): element type"),
    "positions increasing": (_position(0b0110 << 4 | 0b0100), "row 0 window 1: positions 2, 1"),
    "equal positions": (_position(0b0101), "row 0 window 0: positions 1, 1"),
    "unused nibble zero": (_set(1, lambda v: np.where(np.arange(v.size) == 2, v | 0x40, v).astype(np.uint8)),
                           "row 0: unused high nibble"),
    "bias count": (_set(3, lambda b: b[:2]), "input 4 (bias)"),
}


@pytest.mark.parametrize("rule", sorted(F32_RULES))
def test_validator_rejects_float32(rule):
    arrays = _f32()
    NMSparseFC(*arrays)  # valid as made
    corrupt, message = F32_RULES[rule]
    corrupt(arrays)
    with pytest.raises(KernelFormatError, match=re.escape(message)):
        NMSparseFC(*arrays)


I8_RULES = {
    "input zero point": (_meta(7, 128), "input zero point 128"),
    "output zero point": (_meta(8, -129), "output zero point -129"),
    "activation range": (_meta(10, -129), "activation range [-128, -129]"),
    "bias type": (_set(3, lambda b: b.astype(np.float32)), "input 4 (bias): element type"),
    "multiplier": (_set(4, lambda m: np.array([1, -1, 1], np.int32)), "out_multiplier[1] = -1"),
    "shift": (_set(5, lambda s: np.array([0, 0, 31], np.int32)), "out_shift[2] = 31"),
    "scale nan": (_set(6, lambda s: np.array([np.nan, 1, 1], np.float32)), "out_scale[0] = nan"),
    "scale range": (_set(6, lambda s: np.array([1, 256, 1], np.float32)), "out_scale[1] = 256"),
    "scale count": (_set(6, lambda s: s[:2]), "input 7 (out_scale)"),
}


@pytest.mark.parametrize("rule", sorted(I8_RULES))
def test_validator_rejects_int8(rule):
    arrays = _i8()
    NMSparseFC(*arrays)
    corrupt, message = I8_RULES[rule]
    corrupt(arrays)
    with pytest.raises(KernelFormatError, match=re.escape(message)):
        NMSparseFC(*arrays)


def test_io_validation():
    layer = NMSparseFC(*_f32())
    with pytest.raises(KernelFormatError, match="not a multiple of in = 20"):
        layer(np.zeros((2, 21), np.float32))
    with pytest.raises(KernelFormatError, match="activations: element type"):
        layer(np.zeros((2, 20), np.float64))


# ---- the exported model on the runtime ----------------------------------------------------------

@pytest.fixture(scope="module")
def exported():
    import keras

    import tfscalpel

    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(48, activation="relu", name="a"),
                              keras.layers.Dense(20, activation="relu6", name="b"),
                              keras.layers.Dense(10, name="c")])
    sparse = tfscalpel.strip(tfscalpel.prune_2_4(model)[0])
    rep = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    return (sparse, nm_export.export_nm(sparse),
            nm_export.export_nm(sparse, quantize="int8", representative_data=rep, int8_io=True))


def _nm_runs(rt):
    return rt.custom_op_runs("TFS_NM_SPARSE_FC")


def test_float32_custom_op_model_matches_dense_tflite(exported):
    from tflite_export import runtime

    sparse, f32, _ = exported
    assert [r.format for r in f32.layers] == ["2:4"] * 3
    x = np.random.default_rng(2).standard_normal((9, 64)).astype(np.float32) * 3
    with runtime.load(f32.model_bytes) as rt:
        y = rt.run(x)[0]
        assert _nm_runs(rt) == 3 * 2  # three nodes, load's validation run + ours: the op ran
    with runtime.load_stock(f32.dense_model_bytes) as rt:
        ref = rt.run(x)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(y, sparse(x).numpy(), rtol=1e-4, atol=1e-4)
    assert len(f32.model_bytes) < 0.75 * len(f32.dense_model_bytes)


def test_int8_custom_op_model_bit_exact_with_stock_int8(exported):
    from tflite_export import runtime

    _, _, i8 = exported
    assert [r.format for r in i8.layers] == ["2:4"] * 3
    x = np.random.default_rng(3).integers(-128, 128, (33, 64)).astype(np.int8)
    with runtime.load(i8.model_bytes) as rt:
        y = rt.run(x)[0]
    with runtime.load_stock(i8.dense_model_bytes) as rt:
        ref = rt.run(x)[0]
    np.testing.assert_array_equal(y, ref)


def test_stock_runtime_rejects_op_and_corrupt_meta_is_rejected(exported):
    from tflite_export import flatbuffer, params_blob, runtime

    _, f32, _ = exported
    with pytest.raises(runtime.LiteRtError):
        with runtime.load_stock(f32.model_bytes) as rt:
            rt.run(np.zeros((1, 64), np.float32))
    model = flatbuffer.load(f32.model_bytes)
    t = next(t for t in model.subgraphs[0].tensors if t.name.decode() == "b/tfs_nm_params")
    sections = params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"]
    arrays = params_blob.unpack_params(np.asarray(model.buffers[t.buffer].data, np.uint8), sections)
    arrays["meta"][1] = 44  # in: does not match the values' size
    model.buffers[t.buffer].data = params_blob.pack_params(arrays, int(t.shape[0]), sections).ravel()
    with pytest.raises(runtime.LiteRtError, match="TFS_NM_SPARSE_FC: invalid node: input 1 \\(values\\)"):
        runtime.load(flatbuffer.save(model))


def test_layers_that_are_not_2_4_stay_dense_with_reason():
    import keras

    from tflite_export import converter

    keras.utils.set_random_seed(12)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(6, name="a"),
                              keras.layers.Dense(4, name="b")])
    result = nm_export.rewrite_nm(converter.convert_keras(model), keras_model=model)
    assert [r.format for r in result.layers] == ["dense", "dense"]
    assert "not 2:4" in result.layers[0].reason and "in = 6 is not a multiple of 4" == result.layers[1].reason
