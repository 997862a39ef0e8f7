"""The host runtime (tflite_export.runtime) on LiteRT's C API, with and without our custom op."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

import custom_op_testlib as tl
from tflite_export import flatbuffer, kernels, params_blob, runtime


def _dense_model(in_f, out_f, activation=None, seed=0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((in_f,)), keras.layers.Dense(out_f, activation=activation)])
    rng = np.random.default_rng(seed)
    m.layers[0].bias.assign(rng.normal(size=out_f).astype(np.float32) * 0.3)
    return m


def _convert(model, int8=False, in_f=None):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(1)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.normal(size=(1, in_f)).astype(np.float32)] for _ in range(30))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def _ops(runtime_obj):
    return runtime_obj.custom_op_runs(runtime.CUSTOM_OP_NAME)


def test_plain_keras_model_matches_keras_at_several_batch_sizes(tmp_path):
    model = _dense_model(40, 12, "relu")
    data = _convert(model)
    path = tmp_path / "dense.tflite"
    path.write_bytes(data)
    rng = np.random.default_rng(0)
    for source in (data, str(path)):
        with runtime.load(source) as rt:
            assert rt.input_details[0].dtype is np.float32
            for batch in (1, 5, 2):
                x = rng.normal(size=(batch, 40)).astype(np.float32)
                (y,) = rt.run(x)
                np.testing.assert_allclose(y, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_conv_flatten_model_at_several_batch_sizes():
    """Keras' Flatten converts to SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE: the output shape is
    only known at run time, and LiteRT's pre-run layout says batch 1. The runtime must size the
    output by the input batch (a buffer sized from the stale layout would be overrun)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    rt = runtime.load(_convert(model))
    rng = np.random.default_rng(4)
    for batch in (1, 3, 64, 2):
        xb = rng.normal(size=(batch, 12, 12, 1)).astype(np.float32)
        (out,) = rt.run(xb)
        assert out.shape == (batch, 5)
        np.testing.assert_allclose(out, model.predict(xb, verbose=0), rtol=1e-4, atol=1e-5)
    rt.close()


def test_num_threads_option_gives_the_same_result():
    model = _dense_model(64, 32)
    data = _convert(model)
    x = np.random.default_rng(3).normal(size=(4, 64)).astype(np.float32)
    with runtime.load(data, num_threads=1) as a, runtime.load(data, num_threads=2) as b:
        np.testing.assert_allclose(a.run(x)[0], b.run(x)[0], rtol=1e-6)
    with pytest.raises(ValueError, match="num_threads"):
        runtime.load(data, num_threads=0)


@pytest.mark.parametrize("g", [1, 4, 16])
@pytest.mark.parametrize("batch", [1, 3])
def test_float_custom_op_model_equals_dense_tflite(g, batch):
    """Same weights: the custom-op model on our runtime vs the converted dense model on stock."""
    rng = np.random.default_rng(g)
    in_f, out_f = 45, 20  # 45 % g != 0 for g > 1: ragged tails
    model = _dense_model(in_f, out_f, "relu", seed=g)
    w = tl.random_group_sparse(rng, out_f, in_f, g, 0.3)
    model.layers[0].kernel.assign(w.T)
    bias = model.layers[0].bias.numpy()
    x = rng.normal(size=(batch, in_f)).astype(np.float32)
    with runtime.load_stock(_convert(model)) as dense:
        (want,) = dense.run(x)
    with runtime.load(tl.custom_op_model(tl.layer_arrays(w, bias, g, activation=1))) as rt:
        before = _ops(rt)
        (got,) = rt.run(x)
        assert _ops(rt) == before + 1  # our kernel really ran
    scale = np.abs(x) @ np.abs(w).T + np.abs(bias)
    assert np.all(np.abs(got - want) <= 1e-5 * scale + 1e-7)


def _fc_int8_params(data):
    """The int8 FC's weights, bias and quantization from a converted model."""
    m = flatbuffer.load(data)
    sg = m.subgraphs[0]
    (op,) = [o for o in sg.operators
             if m.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED]
    t = sg.tensors
    w = flatbuffer.tensor_data(m, t[op.inputs[1]], np.int8)
    b = flatbuffer.tensor_data(m, t[op.inputs[2]], np.int32) if op.inputs[2] >= 0 else None
    qx, qw, qy = (t[i].quantization for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return w, b, qx, qw, qy, op.builtinOptions.fusedActivationFunction


@pytest.mark.parametrize("g,in_f,index_dtype,forced", [
    (2, 70, np.uint8, False), (8, 70, np.uint8, False),
    (2, 70, np.uint16, True),      # a valid, non-narrowest col_idx
    (1, 300, np.uint16, False)])   # 300 groups a row: the exporter's uint16
def test_int8_custom_op_model_is_bit_exact_with_stock_int8_fc(g, in_f, index_dtype, forced):
    rng = np.random.default_rng(10 + g)
    out_f = 24
    model = _dense_model(in_f, out_f, "relu", seed=g)
    w = tl.random_group_sparse(rng, out_f, in_f, g, 0.35)
    model.layers[0].kernel.assign(w.T)
    data = _convert(model, int8=True, in_f=in_f)
    wq, bq, qx, qw, qy, act = _fc_int8_params(data)
    assert act == 1 and len(qw.scale) == out_f  # per-channel weights, fused ReLU
    in_s, out_s = np.float32(qx.scale[0]), np.float32(qy.scale[0])
    in_zp, out_zp = int(qx.zeroPoint[0]), int(qy.zeroPoint[0])
    scale = (in_s * np.asarray(qw.scale, np.float32)) / out_s  # float32, XNNPACK's order
    params = dict(in_zp=in_zp, out_zp=out_zp, act_min=max(out_zp, -128), act_max=127,
                  multiplier=np.full(out_f, 1 << 30), shift=np.zeros(out_f), scale=scale)
    bias = bq if bq is not None else np.zeros(out_f, np.int32)
    arrays = tl.layer_arrays(wq, bias, g, activation=1, int8=params,
                             index_dtype=index_dtype if forced else None)
    assert arrays["col_idx"].dtype == index_dtype
    x = rng.integers(-128, 128, size=(300, in_f)).astype(np.int8)
    with runtime.load_stock(data) as dense:
        (want,) = dense.run(x)
    xq = qx
    with runtime.load(tl.custom_op_model(arrays, tl._quant(xq.scale[0], in_zp),
                                         tl._quant(qy.scale[0], out_zp))) as rt:
        (got,) = rt.run(x)
    np.testing.assert_array_equal(got, want)


def test_stock_runtime_rejects_custom_op_ours_runs_it(capfd):
    rng = np.random.default_rng(5)
    w = tl.random_group_sparse(rng, 8, 32, 4, 0.5)
    data = tl.custom_op_model(tl.layer_arrays(w, np.zeros(8, np.float32), 4))
    x = rng.normal(size=(1, 32)).astype(np.float32)
    with pytest.raises(runtime.LiteRtError) as info:
        with runtime.load_stock(data) as stock:
            stock.run(x)
    assert "unresolved custom op: TFS_GROUP_SPARSE_FC" in capfd.readouterr().err
    # Our message names the op and its version, and both fixes.
    assert str(info.value).startswith("unresolved custom op TFS_GROUP_SPARSE_FC (version 1): ")
    assert "tflite_export.runtime.load()" in str(info.value)
    assert 'resolver.AddCustom("TFS_GROUP_SPARSE_FC", ' in str(info.value)
    with runtime.load(data) as rt:
        np.testing.assert_allclose(rt.run(x)[0], x @ w.T, rtol=1e-5, atol=1e-6)


def test_corrupt_metadata_is_rejected_at_load():
    rng = np.random.default_rng(6)
    w = tl.random_group_sparse(rng, 8, 32, 4, 0.5)
    arrays = tl.layer_arrays(w, np.zeros(8, np.float32), 4)
    arrays["col_idx"] = arrays["col_idx"].copy()
    arrays["col_idx"][-1] = 8  # group 8 = columns 32..35, past `in`
    with pytest.raises(runtime.LiteRtError, match=r"col_idx\[\d+\] = 8 >= ceil\(in / g\) = 8"):
        runtime.load(tl.custom_op_model(arrays))
    with pytest.raises(runtime.LiteRtError, match="custom options must be empty"):
        runtime.load(tl.custom_op_model(tl.layer_arrays(w, np.zeros(8, np.float32), 4),
                                        custom_options=b"\x01"))


def _corrupt_blob(edit):
    """A valid 8x32 float32 node's parameter blob with ``edit(words)`` applied to its int32
    header and directory words (``words`` is a view of the first 96 bytes)."""
    rng = np.random.default_rng(7)
    w = tl.random_group_sparse(rng, 8, 32, 4, 0.5)
    arrays = tl.layer_arrays(w, np.zeros(8, np.float32), 4)
    blob = params_blob.pack_params(arrays, 8).copy()
    words = blob.reshape(-1)[:96].view("<i4")
    edit(words)
    return arrays, blob


@pytest.mark.parametrize("edit, message", [
    (lambda w: w.__setitem__(0, 0x12345678), "params blob: bad magic"),
    (lambda w: w.__setitem__(1, 6), "params blob: 6 sections, expected 5"),
    (lambda w: w.__setitem__(2, 1), "reserved header fields must be 0"),
    (lambda w: w.__setitem__(4, 5), "section values has element type 5"),
    (lambda w: w.__setitem__(5, -1), "section values has count -1"),
    (lambda w: w.__setitem__(4 + 2, 100), "section values at offset 100: not a 16-byte aligned"),
    (lambda w: w.__setitem__(4 + 2, 0), "section values at offset 0: not a 16-byte aligned offset past the directory"),
    (lambda w: w.__setitem__(4 + 4 + 1, 10**6), "section col_idx .* runs past the blob"),
    (lambda w: w.__setitem__(4 + 12 + 3, 1), "section meta: reserved field must be 0"),
])
def test_corrupt_parameter_blob_is_rejected_at_load(edit, message):
    arrays, blob = _corrupt_blob(edit)
    with pytest.raises(runtime.LiteRtError, match=message):
        runtime.load(tl.custom_op_model(arrays, blob=blob))


def test_blob_first_dimension_must_be_out():
    arrays, blob = _corrupt_blob(lambda w: None)
    wrong = np.zeros((4, blob.size // 4), np.uint8)
    wrong.reshape(-1)[:] = blob.reshape(-1)
    with pytest.raises(runtime.LiteRtError, match="first dimension must equal the layer's out"):
        runtime.load(tl.custom_op_model(arrays, blob=wrong))


def test_blob_round_trip():
    arrays, blob = _corrupt_blob(lambda w: None)
    back = params_blob.unpack_params(blob)
    assert list(back) == list(arrays)
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])
        assert back[name].dtype == arrays[name].dtype


def test_errors_are_python_exceptions(tmp_path):
    with pytest.raises(runtime.LiteRtError, match="not found"):
        runtime.load(str(tmp_path / "missing.tflite"))
    with pytest.raises(runtime.LiteRtError):
        runtime.load(b"this is not a flatbuffer" * 10)
    data = _convert(_dense_model(8, 3))
    with runtime.load(data) as rt:
        with pytest.raises(ValueError, match="takes 1 inputs"):
            rt.run()
        with pytest.raises(ValueError, match="does not match"):
            rt.run(np.zeros((1, 9), np.float32))
    rt.close()  # idempotent
    with pytest.raises(runtime.LiteRtError, match="closed"):
        rt.run(np.zeros((1, 8), np.float32))


def test_runtime_forced_kernel_paths_agree():
    """The adapter honours set_runtime_impl; every available path gives the same int8 bytes."""
    rng = np.random.default_rng(7)
    wq = np.clip(np.round(tl.random_group_sparse(rng, 33, 50, 8, 0.4) * 40), -127, 127).astype(np.int8)
    params = dict(in_zp=3, out_zp=-5, act_min=-128, act_max=127, multiplier=np.full(33, 1 << 30),
                  shift=np.zeros(33), scale=np.full(33, 0.01, np.float32))
    data = tl.custom_op_model(tl.layer_arrays(wq, rng.integers(-500, 500, 33).astype(np.int32), 8,
                                              int8=params))
    x = rng.integers(-128, 128, size=(4, 50)).astype(np.int8)
    outs = {}
    try:
        for impl in kernels.available_impls():
            kernels.set_runtime_impl(impl)
            with runtime.load(data) as rt:
                outs[impl] = rt.run(x)[0]
    finally:
        kernels.set_runtime_impl("auto")
    for impl, y in outs.items():
        np.testing.assert_array_equal(y, outs["portable"], err_msg=impl)


def _flatten_model(kind):
    """28x28 -> Flatten (or Reshape) -> Dense(32, relu) -> Dense(10), with zeroed groups so the
    exporter can put the custom op after the reshape."""
    keras.utils.set_random_seed(21)
    head = keras.layers.Flatten() if kind == "flatten" else keras.layers.Reshape((784,))
    model = keras.Sequential([keras.Input((28, 28)), head,
                              keras.layers.Dense(32, activation="relu", name="dense"),
                              keras.layers.Dense(10, name="dense_1")])
    rng = np.random.default_rng(22)
    for layer in model.layers[1:]:
        k, b = layer.get_weights()
        k[np.repeat(rng.random((-(-k.shape[0] // 4), k.shape[1])) < 0.6, 4, axis=0)[:k.shape[0]]] = 0
        layer.set_weights([k, b])
    return model


@pytest.mark.parametrize("kind", ["flatten", "reshape"])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_custom_op_after_flatten_or_reshape_runs_at_every_batch_size(kind, dtype):
    """The converter computes a Flatten's target shape at run time (SHAPE -> STRIDED_SLICE ->
    PACK -> RESHAPE); LiteRT mallocs such dynamic tensors unaligned and refuses them to a custom
    op. The exporter gives the RESHAPE a constant [-1, 784] shape, so every batch runs."""
    from tflite_export import exporter

    model = _flatten_model(kind)
    calib = np.random.default_rng(23).standard_normal((32, 28, 28)).astype(np.float32)
    res = exporter.export(model, quantize=None if dtype == "float32" else "int8",
                          representative_data=calib, formats={"dense": "custom", "dense_1": "custom"},
                          group_sizes={"dense": 4, "dense_1": 4})
    assert [lr.format for lr in res.report.layers] == ["custom", "custom"]
    root = schema.Model.GetRootAs(res.model_bytes, 0)
    codes = {max(root.OperatorCodes(i).BuiltinCode(), root.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(root.OperatorCodesLength())}
    sg = root.Subgraphs(0)
    used = {max(root.OperatorCodes(sg.Operators(k).OpcodeIndex()).BuiltinCode(),
                root.OperatorCodes(sg.Operators(k).OpcodeIndex()).DeprecatedBuiltinCode())
            for k in range(sg.OperatorsLength())}
    assert schema.BuiltinOperator.RESHAPE in used and schema.BuiltinOperator.SHAPE not in used
    assert schema.BuiltinOperator.RESHAPE in codes
    rng = np.random.default_rng(24)
    with runtime.load(res.model_bytes) as rt, runtime.load_stock(res.dense_model_bytes) as dense:
        for batch in range(1, 17):
            x = rng.standard_normal((batch, 28, 28)).astype(np.float32)
            before = rt.custom_op_runs(runtime.CUSTOM_OP_NAME)
            (got,) = rt.run(x)
            assert rt.custom_op_runs(runtime.CUSTOM_OP_NAME) == before + 2
            (want,) = dense.run(x)
            assert got.shape == (batch, 10)
            if dtype == "int8":
                np.testing.assert_array_equal(got, want, err_msg=f"batch {batch}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
                np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_unknown_custom_op_is_named_in_the_error():
    m = flatbuffer.load(tl.custom_op_model(tl.layer_arrays(
        tl.random_group_sparse(np.random.default_rng(8), 8, 32, 4, 0.5), np.zeros(8, np.float32), 4)))
    m.operatorCodes[0].customCode = b"SOMEONE_ELSES_OP"
    with pytest.raises(runtime.LiteRtError, match=r"^unresolved custom op SOMEONE_ELSES_OP "
                                                  r"\(version 1\): this runtime has no kernel"):
        runtime.load(flatbuffer.save(m))


@pytest.mark.parametrize("op, message", [
    ("tfs_gsfc_litert_op", "TFS_GROUP_SPARSE_FC format version 2 keeps every parameter"),
    ("tfs_nm_litert_op", "TFS_NM_SPARSE_FC format version 1 keeps every parameter")])
def test_kernel_init_names_the_op_and_its_format_version(op, message):
    """The runtime refuses custom options before LiteRT; the adapter's Init (reached by other
    hosts of the vtable) says the same, with the op's own format version."""
    import ctypes

    k = runtime._kernels()
    lib = runtime._litert()
    ctx = k.tfs_litert_ctx_create(getattr(k, op)(), *[ctypes.cast(getattr(lib, n), ctypes.c_void_p)
                                                      for n in ("LiteRtGetTensorBufferTensorType",
                                                                "LiteRtGetTensorBufferSize",
                                                                "LiteRtGetTensorBufferHostMemory")])
    try:
        init = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
            ctypes.cast(k.tfs_litert_kernel(), ctypes.POINTER(ctypes.c_void_p))[0])
        assert init(ctx, b"\x01", 1) == 0  # LiteRT ignores the status: the error slot says it
        buf = ctypes.create_string_buffer(256)
        assert k.tfs_litert_ctx_take_error(ctx, buf, 256) == 1
        assert buf.value.decode() == f"custom options must be empty ({message} in the parameter blob)"
    finally:
        k.tfs_litert_ctx_destroy(ctx)
