"""Structure of exported models: the custom op, its constant tensors, alignment, builtin block-sparse.

Converted models are module-scoped fixtures (TF conversion is the slow part); each rewrite
reuses the converter's dense bytes through `rewrite_tflite`.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.python import schema_py_generated as schema

import export_testlib as tl
from tflite_export import exporter, flatbuffer
from tflite_export.converter import convert_keras

GS = (1, 2, 4, 8, 16)
LAYERS = [(24, "relu"), (20, "relu6"), (13, None)]  # in 37 -> ragged for every g > 1
NAMES = ["dense", "dense_1", "dense_2"]
ACTS = [1, 3, 0]  # TFLite ActivationFunctionType of each layer
CUSTOM = schema.BuiltinOperator.CUSTOM
FC = schema.BuiltinOperator.FULLY_CONNECTED


def _all(fmt):
    return {n: fmt for n in NAMES}


@pytest.fixture(scope="module")
def fmodel():
    import keras

    keras.utils.set_random_seed(7)
    return tl.stripped_model(37, LAYERS, g=4, sparsity=0.7, seed=11)


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(3).standard_normal((64, 37)).astype(np.float32)


@pytest.fixture(scope="module")
def f32_dense(fmodel):
    return convert_keras(fmodel)


@pytest.fixture(scope="module")
def int8_dense(fmodel, calib):
    return convert_keras(fmodel, "int8", calib)


@pytest.fixture(scope="module")
def int8_per_tensor_dense(fmodel, calib):
    return convert_keras(fmodel, "int8", calib, per_channel=False)


def _custom(dense_bytes, fmodel, g):
    return exporter.rewrite_tflite(dense_bytes, formats=_all("custom"),
                                   group_sizes={n: g for n in NAMES}, keras_model=fmodel)


def _custom_ops(model_bytes):
    return [op for op in tl.operators(model_bytes) if tl.opcode_of(model_bytes, op)[0] == CUSTOM]


def _assert_aligned(model_bytes):
    offsets = tl.buffer_file_offsets(model_bytes)
    assert offsets, "no buffers found"
    assert [o % 64 for o in offsets] == [0] * len(offsets)


# ------------------------------------------------------------------------------------ float32
@pytest.mark.parametrize("g", GS)
def test_float32_custom_op_structure(f32_dense, fmodel, g):
    res = _custom(f32_dense, fmodel, g)
    b = res.model_bytes
    ops = _custom_ops(b)
    assert len(ops) == 3 and not [op for op in tl.operators(b) if tl.opcode_of(b, op)[0] == FC]
    dense_w = tl.fc_weights(f32_dense, np.float32)
    dense_ops = [op for op in tl.operators(f32_dense) if tl.opcode_of(f32_dense, op)[0] == FC]
    for op, w, dop, act in zip(ops, dense_w, dense_ops, ACTS):
        code, custom_code, version = tl.opcode_of(b, op)
        assert (custom_code, version) == (b"TFS_GROUP_SPARSE_FC", 1)
        assert op.CustomOptionsLength() == 0 and op.BuiltinOptionsType() == 0
        ins = op.InputsAsNumpy()
        assert len(ins) == 2  # activations + the parameter blob
        TT = schema.TensorType
        assert [tl.tensor(b, t).Type() for t in ins] == [TT.FLOAT32, TT.UINT8]
        out_f, in_f = w.shape
        assert tl.tensor(b, ins[1]).ShapeAsNumpy()[0] == out_f  # shape inference reads out here
        arrays = tl.custom_op_arrays(b, op)
        assert list(arrays) == ["values", "col_idx", "row_ptr", "meta", "bias"]
        values, col_idx, row_ptr = tl.reference_group_csr(w, g)
        np.testing.assert_array_equal(arrays["values"], values)
        np.testing.assert_array_equal(arrays["col_idx"], col_idx)
        np.testing.assert_array_equal(arrays["row_ptr"], row_ptr)
        assert arrays["col_idx"].dtype == col_idx.dtype
        assert arrays["meta"].tolist() == [2, in_f, out_f, g, len(col_idx), 0, act] + [0] * 9
        bias = tl.tensor_array(f32_dense, dop.Inputs(2), np.float32)
        np.testing.assert_array_equal(arrays["bias"], bias)
        # Same activation tensor in, same output tensor (by name) out as the dense FC.
        assert tl.tensor(b, ins[0]).Name() == tl.tensor(f32_dense, dop.Inputs(0)).Name()
        assert tl.tensor(b, op.Outputs(0)).Name() == tl.tensor(f32_dense, dop.Outputs(0)).Name()
    _assert_aligned(b)
    # The dense weights are gone from the file: no tensor keeps a [out, in] float matrix.
    r = tl.root(b).Subgraphs(0)
    assert not [i for i in range(r.TensorsLength()) if r.Tensors(i).ShapeLength() == 2
                and r.Tensors(i).Type() == schema.TensorType.FLOAT32
                and tl.tensor_array(b, i, np.float32) is not None]
    assert [lr.format for lr in res.report.layers] == ["custom"] * 3
    assert [lr.g for lr in res.report.layers] == [g] * 3


def test_custom_op_without_bias_gets_zero_bias():
    model = tl.stripped_model(16, [(8, None)], g=2, sparsity=0.5, seed=5, bias=False)
    res = exporter.export(model, formats={"dense": "custom"}, group_sizes={"dense": 2})
    (op,) = _custom_ops(res.model_bytes)
    bias = tl.custom_op_arrays(res.model_bytes, op)["bias"]
    np.testing.assert_array_equal(bias, np.zeros(8, np.float32))


def test_stock_interpreter_rejects_custom_op_model(f32_dense, fmodel):
    b = _custom(f32_dense, fmodel, 4).model_bytes
    with pytest.raises(Exception, match="TFS_GROUP_SPARSE_FC"):
        it = Interpreter(model_content=b)
        it.allocate_tensors()


# --------------------------------------------------------------------------------------- int8
def _q(model_bytes, t):
    q = tl.tensor(model_bytes, t).Quantization()
    return q.ScaleAsNumpy(), q.ZeroPointAsNumpy()


def _ref_mult_shift(real):
    import math

    shift = math.floor(math.log2(real)) + 1
    q = math.floor(real * 2.0 ** (31 - shift) + 0.5)
    if q == 2**31:
        q, shift = q // 2, shift + 1
    return q, shift


@pytest.mark.parametrize("variant", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("g", [1, 4, 16])
def test_int8_custom_op_structure(int8_dense, int8_per_tensor_dense, fmodel, g, variant):
    dense = int8_dense if variant == "per_channel" else int8_per_tensor_dense
    b = _custom(dense, fmodel, g).model_bytes
    ops = _custom_ops(b)
    dense_ops = [op for op in tl.operators(dense) if tl.opcode_of(dense, op)[0] == FC]
    assert len(ops) == len(dense_ops) == 3
    for op, dop, act in zip(ops, dense_ops, ACTS):
        ins = op.InputsAsNumpy()
        TT = schema.TensorType
        assert [tl.tensor(b, t).Type() for t in ins] == [TT.INT8, TT.UINT8]
        arrays = tl.custom_op_arrays(b, op)
        w = tl.tensor_array(dense, dop.Inputs(1), np.int8)
        values, col_idx, row_ptr = tl.reference_group_csr(w, g)
        assert [a.dtype for a in arrays.values()] == [
            np.int8, col_idx.dtype, np.int32, np.int32, np.int32, np.int32, np.int32, np.float32]
        np.testing.assert_array_equal(arrays["values"], values)
        np.testing.assert_array_equal(arrays["col_idx"], col_idx)
        np.testing.assert_array_equal(arrays["row_ptr"], row_ptr)
        np.testing.assert_array_equal(arrays["bias"], tl.tensor_array(dense, dop.Inputs(2), np.int32))
        in_s, in_zp = _q(dense, dop.Inputs(0))
        w_s, _ = _q(dense, dop.Inputs(1))
        out_s, out_zp = _q(dense, dop.Outputs(0))
        assert w_s.size == (w.shape[0] if variant == "per_channel" else 1)
        w_s = np.broadcast_to(w_s, (w.shape[0],))
        expect = [_ref_mult_shift(float(in_s[0]) * float(s) / float(out_s[0])) for s in w_s]
        np.testing.assert_array_equal(arrays["out_multiplier"], [m for m, _ in expect])
        np.testing.assert_array_equal(arrays["out_shift"], [s for _, s in expect])
        # XNNPACK's fp32 requantization scale: float32 product, then float32 division.
        fp32 = [np.float32(np.float32(in_s[0]) * np.float32(s)) / np.float32(out_s[0]) for s in w_s]
        np.testing.assert_array_equal(arrays["out_scale"], np.array(fp32, np.float32))
        # Output clamp: ReLU clamps at the zero point, ReLU6 also at zp + round(6 / scale).
        lo = -128 if act == 0 else max(-128, int(out_zp[0]))
        hi = 127 if act != 3 else min(127, int(out_zp[0]) + int(np.floor(6.0 / out_s[0] + 0.5)))
        assert arrays["meta"].tolist() == [2, w.shape[1], w.shape[0], g, len(col_idx), 1, act,
                                 int(in_zp[0]), int(out_zp[0]), lo, hi] + [0] * 5
    _assert_aligned(b)


# ---------------------------------------------------------------------- builtin block-sparse
@pytest.fixture(scope="module")
def block4_model():
    return tl.stripped_model(32, [(16, "relu"), (8, None)], g=4, sparsity=0.75, seed=21)


def test_builtin_block_sparse_matches_the_converters_encoding(block4_model):
    conv = tf.lite.TFLiteConverter.from_keras_model(block4_model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        theirs = conv.convert()
    ours = exporter.rewrite_tflite(convert_keras(block4_model), formats={"dense": "builtin_sparse",
                                   "dense_1": "builtin_sparse"}, keras_model=block4_model).model_bytes
    for b in (ours,):
        _assert_aligned(b)

    def sparse_weights(b):
        out = []
        for op in tl.operators(b):
            t = tl.tensor(b, op.Inputs(1))
            sp = t.Sparsity()
            dims = [sp.DimMetadata(i) for i in range(sp.DimMetadataLength())]
            seg, idx = dims[1].ArraySegments(), dims[1].ArrayIndices()
            u8 = schema.Uint8Vector()
            u8.Init(seg.Bytes, seg.Pos)
            segs = u8.ValuesAsNumpy().tolist()
            u8.Init(idx.Bytes, idx.Pos)
            out.append((sp.TraversalOrderAsNumpy().tolist(), sp.BlockMapAsNumpy().tolist(),
                        [(d.Format(), d.DenseSize()) for d in dims], dims[1].ArraySegmentsType(),
                        segs, u8.ValuesAsNumpy().tolist(),
                        tl.root(b).Buffers(t.Buffer()).DataAsNumpy().tobytes(),
                        tl.opcode_of(b, op)))
        return out

    assert sparse_weights(ours) == sparse_weights(theirs)


def _run_stock(model_bytes, x):
    it = Interpreter(model_content=model_bytes, num_threads=1)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("quant", [None, "int8"])
def test_builtin_block_sparse_runs_like_dense(quant):
    # int8 blocks are (16, 1): 64 inputs, 16-wide pattern.
    model = tl.stripped_model(64, [(16, "relu"), (32, None)], g=16 if quant else 4,
                              sparsity=0.6, seed=31)
    rng = np.random.default_rng(4)
    calib = rng.standard_normal((32, 64)).astype(np.float32)
    dense = convert_keras(model, quant, calib if quant else None)
    res = exporter.rewrite_tflite(dense, formats={"dense": "builtin_sparse", "dense_1": "builtin_sparse"},
                                  keras_model=model)
    assert [lr.format for lr in res.report.layers] == ["builtin_sparse"] * 2
    assert len(res.model_bytes) < len(dense)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    ref, got = _run_stock(dense, x), _run_stock(res.model_bytes, x)
    if quant:
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# ------------------------------------------------------------------------- decisions & report
def test_cost_model_decisions_in_a_real_export():
    model = tl.stripped_model(512, [(256, "relu"), (64, None)], g=4, sparsity=0.0, seed=41)
    big = model.layers[0]
    k, bias = big.get_weights()
    rng = np.random.default_rng(42)
    dead = np.repeat(rng.random((128, 256)) < 0.95, 4, axis=0)
    k[dead] = 0
    big.set_weights([k, bias])
    res = exporter.export(model, formats={"dense_1": "dense"})
    sparse, dense_forced = res.report.layers
    assert sparse.layer == "dense" and sparse.format != "dense"
    assert sparse.expected_speedup > 1.15 and "predicted" in sparse.reason
    assert sparse.bytes_exported < sparse.bytes_dense / 5
    assert dense_forced.format == "dense" and dense_forced.reason == "kept dense: forced by formats="
    # Same layer, unforced: fully dense weights, sparse would be slower, and the report says so.
    auto = exporter.rewrite_tflite(res.dense_model_bytes, keras_model=model).report.layers[1]
    assert auto.format == "dense" and auto.reason.startswith("kept dense: best sparse choice")
    assert auto.density == 1.0 and auto.expected_speedup == 1.0


def test_unsupported_fused_activation_stays_dense(f32_dense, fmodel):
    m = flatbuffer.load(f32_dense)
    first_fc = next(op for op in m.subgraphs[0].operators if op.builtinOptions is not None)
    first_fc.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.TANH
    res = exporter.rewrite_tflite(flatbuffer.save(m), formats=_all("auto"), keras_model=fmodel)
    lr = res.report.layers[0]
    assert lr.format == "dense" and "fused activation tanh not supported" in lr.reason
    with pytest.raises(ValueError, match="layer 'dense': cannot force custom: fused activation tanh"):
        exporter.rewrite_tflite(flatbuffer.save(m), formats={"dense": "custom"}, keras_model=fmodel)


def test_report_table_dict_and_json(f32_dense, fmodel):
    res = exporter.rewrite_tflite(f32_dense, formats={"dense": "custom", "dense_1": "dense"},
                                  group_sizes={"dense": 4}, keras_model=fmodel)
    d = json.loads(res.report.to_json())
    assert d["target"] == "x86-avx2" and d["quantize"] == "float32"
    assert d["model_bytes"] == len(res.model_bytes) and d["dense_model_bytes"] == len(f32_dense)
    rows = {r["layer"]: r for r in d["layers"]}
    assert list(rows) == NAMES
    assert rows["dense"]["format"] == "custom" and rows["dense"]["g"] == 4
    assert rows["dense"]["shape"] == [37, 24] and rows["dense"]["activation"] == "relu"
    w = tl.fc_weights(f32_dense, np.float32)[0]
    assert rows["dense"]["density"] == pytest.approx(np.count_nonzero(w) / w.size, abs=1e-6)
    assert rows["dense"]["bytes_dense"] == w.nbytes + 24 * 4
    n_groups = len(tl.reference_group_csr(w, 4)[1])
    assert rows["dense"]["stored_units"] == n_groups
    (op,) = _custom_ops(res.model_bytes)
    blob = tl.tensor_array(res.model_bytes, op.Inputs(1), np.uint8)
    assert rows["dense"]["bytes_exported"] == blob.nbytes
    arrays = n_groups * 4 * 4 + n_groups * 2 + 25 * 4 + 64 + 24 * 4
    # The blob adds a header, a directory and 64-byte alignment of each of its 5 sections.
    assert arrays < blob.nbytes <= arrays + 96 + 5 * 15 + 23
    table = str(res)
    for name in NAMES:
        assert name in table
    assert "custom" in table and "kept dense: forced by formats=" in table


def test_hint_errors_name_the_layer_and_allowed_values(f32_dense, fmodel):
    with pytest.raises(ValueError, match=r"group_sizes: no FULLY_CONNECTED layer named \['dense_9'\]; "
                                         r"layers are \['dense', 'dense_1', 'dense_2'\]"):
        exporter.rewrite_tflite(f32_dense, group_sizes={"dense_9": 4}, keras_model=fmodel)
    with pytest.raises(ValueError, match=r"layer 'dense_1': group size 5 not in"):
        exporter.rewrite_tflite(f32_dense, group_sizes={"dense_1": 5}, keras_model=fmodel)
    with pytest.raises(ValueError, match=r"quantize='int4': allowed values are \(None, 'int8'\)"):
        exporter.export(fmodel, quantize="int4")
    with pytest.raises(ValueError, match="needs representative_data"):
        exporter.export(fmodel, quantize="int8")


def test_model_without_dense_layers_exports_as_converted(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Activation("relu")])
    out = tmp_path / "plain.tflite"
    res = exporter.export(model, output=str(out))
    assert res.report.layers == () and "no FULLY_CONNECTED" in res.report.table()
    assert out.read_bytes() == res.model_bytes
    x = np.linspace(-1, 1, 8, dtype=np.float32)[None]
    np.testing.assert_array_equal(_run_stock(res.model_bytes, x), np.maximum(x, 0))


def test_output_file_is_atomic(f32_dense, fmodel, tmp_path):
    out = tmp_path / "m.tflite"
    res = exporter.rewrite_tflite(f32_dense, output=str(out), keras_model=fmodel)
    assert out.read_bytes() == res.model_bytes and res.output == str(out)
    # A failing export leaves neither the file nor a temporary beside it.
    bad = tmp_path / "bad.tflite"
    with pytest.raises(ValueError):
        exporter.rewrite_tflite(f32_dense, output=str(bad), group_sizes={"nope": 4}, keras_model=fmodel)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        exporter.rewrite_tflite(f32_dense, output=str(tmp_path / "no_dir" / "m.tflite"))
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_dense_on_3d_input_stays_dense_with_reason():
    import keras

    model = keras.Sequential([keras.Input((5, 16)), keras.layers.Dense(8, name="dense"),
                              keras.layers.Flatten(), keras.layers.Dense(4, name="dense_1")])
    res = exporter.export(model, formats={"dense_1": "custom"})
    first, second = res.report.layers
    # The converter reshapes dynamically, leaving a placeholder [1, 1] input shape: the custom
    # op's output-shape rule could not hold, so the layer must stay the builtin.
    assert first.format == "dense" and "last dimension is not in=16" in first.reason
    assert second.format == "custom" and second.shape == (40, 4)
