"""Transformer layers on the CPU: a Dense on [batch, seq, d] and EinsumDense become the custom op.

TF 2.21 converts a rank-3 Dense to RESHAPE -> FULLY_CONNECTED -> RESHAPE (+ a bias ADD); the
exporter rewrites that to one FC with keep_num_dims and the bias folded in
(static_shapes.unwrap_tensordot), which the custom op replaces on the rank-3 tensor (rows =
batch * seq). int8 must equal TFLite's own FC on the same graph bit for bit on LiteRT (XNNPACK),
and the converter's graph (bias as a separate int8 ADD: two roundings) within one output step;
float32 within 1e-5 relative.
"""
import keras
import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import exporter, flatbuffer, runtime
from tflite_export.fc_layers import builtin_code

_OPS = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _sparsify(model, g=4, sparsity=0.8, seed=0):
    """Zero whole (g, 1) kernel blocks of every kernel and give every bias random values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not getattr(layer, "kernel", None) is not None:
            continue
        k = rng.standard_normal(tuple(layer.kernel.shape)).astype(np.float32) * 0.5
        flat = k.reshape(k.shape[0], -1)
        dead = rng.random((-(-flat.shape[0] // g), flat.shape[1])) < sparsity
        flat[np.repeat(dead, g, axis=0)[: flat.shape[0]]] = 0.0
        layer.kernel.assign(flat.reshape(k.shape))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.standard_normal(tuple(layer.bias.shape)).astype(np.float32) * 0.1)
    return model


def _ffn(seq=None):
    keras.utils.set_random_seed(0)
    x = keras.Input((seq, 32))
    h = keras.layers.Dense(64, activation="relu", name="ff1")(x)
    return _sparsify(keras.Model(x, keras.layers.Dense(16, name="ff2")(h)))


def _op_names(model_bytes):
    m = flatbuffer.load(model_bytes)
    return [_OPS.get(builtin_code(m.operatorCodes[op.opcodeIndex])) for op in m.subgraphs[0].operators]


def _calib(seq, n=16):
    return np.random.default_rng(5).standard_normal((n, seq, 32)).astype(np.float32)


def _run(model_bytes, x):
    with runtime.load(model_bytes) as rt:
        return rt.run(x)[0]


def _check_equal(dtype, got, want):
    if dtype == "int8":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _all_dense(result, model):
    """The exported graph with every layer kept as TFLite's own FULLY_CONNECTED."""
    return exporter.rewrite_tflite(result.dense_model_bytes, target="x86-avx512", keras_model=model,
                                   formats={r.layer: "dense" for r in result.layers}).model_bytes


def _output_step(model_bytes):
    """The quantization step of the int8 model's output (its DEQUANTIZE's input)."""
    m = flatbuffer.load(model_bytes)
    sg = m.subgraphs[0]
    (deq,) = [op for op in sg.operators if _OPS.get(builtin_code(m.operatorCodes[op.opcodeIndex])) == "DEQUANTIZE"]
    return float(sg.tensors[int(deq.inputs[0])].quantization.scale[0])


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_rank3_dense_becomes_the_custom_op_at_any_batch_and_sequence_length(dtype):
    model = _ffn(seq=None)
    quant = dict(quantize="int8", representative_data=_calib(7)) if dtype == "int8" else {}
    result = exporter.export(model, target="x86-avx512", formats={"ff1": "custom", "ff2": "custom"},
                             **quant)
    assert [(r.layer, r.format, r.shape) for r in result.layers] == \
        [("ff1", "custom", (32, 64)), ("ff2", "custom", (64, 16))]
    ops = _op_names(result.model_bytes)
    assert ops.count("CUSTOM") == 2 and "FULLY_CONNECTED" not in ops and "RESHAPE" not in ops
    assert "SHAPE" not in ops and "ADD" not in ops  # shape ops gone, bias ADDs folded
    dense = _all_dense(result, model)
    assert _op_names(dense).count("FULLY_CONNECTED") == 2
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        for seq in (1, 7, 64):
            x = rng.standard_normal((batch, seq, 32)).astype(np.float32)
            got = _run(result.model_bytes, x)
            assert got.shape == (batch, seq, 16)
            _check_equal(dtype, got, _run(dense, x))
            converter = _run(result.dense_model_bytes, x)
            if dtype == "float32":
                np.testing.assert_allclose(got, converter, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-5, atol=1e-5)
            else:
                assert np.max(np.abs(got - converter)) <= 1.001 * _output_step(result.model_bytes)


def test_rank3_dense_kept_dense_is_one_fully_connected_with_keep_num_dims():
    model = _ffn(seq=7)
    result = exporter.export(model, target="x86-avx512", formats={"ff1": "dense", "ff2": "dense"})
    assert _op_names(result.model_bytes) == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    m = flatbuffer.load(result.model_bytes)
    fcs = m.subgraphs[0].operators
    assert [(op.builtinOptions.keepNumDims, op.builtinOptions.fusedActivationFunction) for op in fcs] == \
        [(True, schema.ActivationFunctionType.RELU), (True, schema.ActivationFunctionType.NONE)]
    assert [len(op.inputs) for op in fcs] == [3, 3]  # the bias ADDs are folded in
    x = np.random.default_rng(2).standard_normal((3, 7, 32)).astype(np.float32)
    np.testing.assert_allclose(_run(result.model_bytes, x), _run(result.dense_model_bytes, x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_einsum_dense_becomes_the_custom_op(dtype):
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 32))
    h = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 64), bias_axes="d",
                                 activation="relu", name="proj")(x)
    y = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 4, 8), bias_axes="de",
                                 name="heads")(h)
    model = _sparsify(keras.Model(x, y))
    quant = dict(quantize="int8", representative_data=_calib(7)) if dtype == "int8" else {}
    result = exporter.export(model, target="x86-avx512", formats={"proj": "custom", "heads": "custom"},
                             **quant)
    assert [(r.layer, r.format, r.shape) for r in result.layers] == \
        [("proj", "custom", (32, 64)), ("heads", "custom", (64, 32))]
    assert _op_names(result.model_bytes).count("CUSTOM") == 2
    for batch in (1, 3):
        xs = np.random.default_rng(batch).standard_normal((batch, 7, 32)).astype(np.float32)
        got = _run(result.model_bytes, xs)
        assert got.shape == (batch, 7, 4, 8)
        _check_equal(dtype, got, _run(_all_dense(result, model), xs))


def test_host_measurement_times_a_rank3_layer_on_its_sequence_rows(tmp_path):
    """target="host" times each candidate on the layer's own input shape ([1, seq, in]: the
    rows the SpMM kernels run), not on one row."""
    from tflite_export.host import HostMeasurement

    shapes = []

    def timer(model_bytes, x):
        shapes.append(x.shape)
        with runtime.load(model_bytes) as rt:  # the cut-out layer runs on that input
            assert rt.run(x)[0].shape[:-1] == x.shape[:-1]
        return 1e-3 if len(shapes) % 2 else 1e-4  # any deterministic choice

    result = exporter.export(_ffn(seq=7), target=HostMeasurement(timer=timer, cache_dir=str(tmp_path)))
    assert [r.layer for r in result.layers] == ["ff1", "ff2"]
    # Every candidate runs on seq rows; ff2 alone takes [1, 7, 64], and behind a custom ff1 (timed
    # as the fused pair the exporter would emit) ff1's [1, 7, 32].
    assert shapes and {s[:2] for s in shapes} == {(1, 7)}
    assert (1, 7, 32) in shapes and set(shapes) <= {(1, 7, 32), (1, 7, 64)}
