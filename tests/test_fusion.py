"""Fused chains of custom-op layers (tflite_export/fusion.py, FORMAT.md "Fused chains"): the fused
model is bit-exact with the unfused one, runs one node per chain, fuses only what it may, and the
LiteRT adapter refuses a malformed chain with a message naming the fault."""
import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

import custom_op_testlib as tl
from export_testlib import stripped_model
from tflite_export import exporter, flatbuffer, fusion, params_blob, runtime

OP = "TFS_GROUP_SPARSE_FC"
LAYERS = [(24, "relu"), (16, "relu6"), (12, None), (5, None)]


def _export(dtype, formats=None):
    model = stripped_model(40, LAYERS, g=4, sparsity=0.7, seed=11)
    names = ["dense"] + [f"dense_{i}" for i in range(1, len(LAYERS))]
    formats = formats or {n: "custom" for n in names}
    groups = {n: 4 for n, f in formats.items() if f == "custom"}
    rng = np.random.default_rng(0)
    rep = (lambda: ([rng.normal(size=(1, 40)).astype(np.float32)] for _ in range(16))) \
        if dtype == "int8" else None
    return exporter.export(model, target="x86-avx2", quantize="int8" if dtype == "int8" else None,
                           representative_data=rep, formats=formats, group_sizes=groups,
                           int8_io=dtype == "int8").model_bytes


def _custom_nodes(model_bytes):
    model = flatbuffer.load(model_bytes)
    sg = model.subgraphs[0]
    return [(op, sg) for op in sg.operators if flatbuffer.custom_code(model, op) == OP], model


@pytest.fixture(scope="module", params=["float32", "int8"])
def exported(request):
    return request.param, _export(request.param)


def test_fused_chain_is_bit_exact_and_runs_one_node(exported):
    dtype, plain = exported
    fused = fusion.fuse(plain)
    assert len(_custom_nodes(plain)[0]) == 4
    ((op, sg),), model = _custom_nodes(fused)
    assert flatbuffer.text(sg.tensors[int(op.inputs[1])].name) == \
        "dense+dense_1+dense_2+dense_3/tfs_params"
    blob = flatbuffer.tensor_data(model, sg.tensors[int(op.inputs[1])], np.uint8)
    assert blob.shape[0] == 5 and params_blob.is_chain(blob)
    assert len(params_blob.split_chain(blob)) == 4
    rng = np.random.default_rng(3)
    with runtime.load(plain) as a, runtime.load(fused) as f:
        for batch in (1, 2, 7):
            if dtype == "int8":
                x = rng.integers(-128, 128, (batch, 40)).astype(np.int8)
            else:
                x = rng.normal(size=(batch, 40)).astype(np.float32)
            (ya,), (yf,) = a.run(x), f.run(x)
            assert yf.dtype == ya.dtype and yf.shape == (batch, 5)
            np.testing.assert_array_equal(yf, ya)
        # One node run per inference (load's check run included), four before fusion.
        assert f.custom_op_runs(OP) == 4 and a.custom_op_runs(OP) == 16


def test_fusion_stops_at_a_dense_layer():
    plain = _export("float32", {"dense": "custom", "dense_1": "custom", "dense_2": "dense",
                                "dense_3": "custom"})
    fused = fusion.fuse(plain)
    nodes, model = _custom_nodes(fused)
    names = [flatbuffer.text(sg.tensors[int(op.inputs[1])].name) for op, sg in nodes]
    assert names == ["dense+dense_1/tfs_params", "dense_3/tfs_params"]
    x = np.random.default_rng(5).normal(size=(3, 40)).astype(np.float32)
    with runtime.load(plain) as a, runtime.load(fused) as f:
        np.testing.assert_array_equal(f.run(x)[0], a.run(x)[0])


def _two_nodes(extra_reader=False):
    """y1 = op(x), y2 = op(y1) with one 8x8 blob; y2 is the model's output. ``extra_reader``:
    a third node also reads y1."""
    rng = np.random.default_rng(1)
    w = tl.random_group_sparse(rng, 8, 8, 4, 0.5)
    arrays = tl.layer_arrays(w, rng.normal(size=8).astype(np.float32), 4)
    model = flatbuffer.load(tl.custom_op_model(arrays))
    sg = model.subgraphs[0]
    first = sg.operators[0]
    y1, blob = int(first.outputs[0]), int(first.inputs[1])
    for k in range(2 if extra_reader else 1):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = f"y{k + 2}".encode(), [1, 8], schema.TensorType.FLOAT32, 0
        sg.tensors.append(t)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs = first.opcodeIndex, np.array([y1, blob], np.int32)
        op.outputs = np.array([len(sg.tensors) - 1], np.int32)
        sg.operators.append(op)
    y2 = int(sg.operators[1].outputs[0])
    sg.outputs = np.array([y2], np.int32)
    model.signatureDefs[0].outputs[0].tensorIndex = y2
    return model, w, arrays["bias"]


def test_two_nodes_fuse_into_one():
    model, w, bias = _two_nodes()
    assert fusion.fuse_chains(model) == ["params+params"]  # the test model's blob is "params"
    assert len(model.subgraphs[0].operators) == 1
    flatbuffer.compact(model)
    x = np.random.default_rng(6).normal(size=(3, 8)).astype(np.float32)
    with runtime.load(flatbuffer.save(model)) as rt:
        y = rt.run(x)[0]
    np.testing.assert_allclose(y, (x @ w.T + bias) @ w.T + bias, rtol=1e-5, atol=1e-5)


def test_a_tensor_read_twice_or_a_model_output_is_not_fused():
    model, _, _ = _two_nodes(extra_reader=True)
    assert fusion.fuse_chains(model) == []
    model, _, _ = _two_nodes()
    sg = model.subgraphs[0]
    sg.outputs = np.array([int(sg.operators[0].outputs[0]), int(sg.operators[1].outputs[0])], np.int32)
    assert fusion.fuse_chains(model) == []


def _chain_model(blob, in_f, out_f):
    """A one-node model whose blob is ``blob`` (any bytes), activations [1, in_f] -> [1, out_f]."""
    meta = np.zeros(16, np.int32)
    meta[:3] = [2, in_f, out_f]
    return tl.custom_op_model({"meta": meta}, blob=blob)


def _layer_blob(rng, in_f, out_f):
    w = tl.random_group_sparse(rng, out_f, in_f, 4, 0.5)
    return params_blob.pack_params(tl.layer_arrays(w, rng.normal(size=out_f).astype(np.float32), 4), out_f), w


def test_chain_round_trip_and_direct_run():
    rng = np.random.default_rng(2)
    (b1, w1), (b2, w2) = _layer_blob(rng, 12, 9), _layer_blob(rng, 9, 6)
    chain = params_blob.pack_chain([b1, b2], 6)
    assert chain.shape[0] == 6
    parts = params_blob.split_chain(chain)
    np.testing.assert_array_equal(parts[0], b1.ravel())
    np.testing.assert_array_equal(parts[1], b2.ravel())
    x = rng.normal(size=(2, 12)).astype(np.float32)
    with runtime.load(_chain_model(chain, 12, 6)) as rt:
        y = rt.run(x)[0]
    a1, a2 = params_blob.unpack_params(b1), params_blob.unpack_params(b2)
    ref = (x @ w1.T + a1["bias"]) @ w2.T + a2["bias"]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _refused(blob, in_f, out_f, match):
    with pytest.raises(runtime.LiteRtError, match=match):
        runtime.load(_chain_model(blob, in_f, out_f))


def test_malformed_chains_are_refused_with_the_fault():
    rng = np.random.default_rng(4)
    (b1, _), (b2, _) = _layer_blob(rng, 12, 9), _layer_blob(rng, 9, 6)
    good = params_blob.pack_chain([b1, b2], 6)

    def edited(pos, value):
        raw = good.copy().reshape(-1)
        raw[pos:pos + 4] = np.array([value], "<u4").view(np.uint8)
        return raw.reshape(good.shape)

    _refused(edited(4, 1), 12, 6, r"fused chain of 1 layers; allowed 2\.\.16")
    _refused(edited(4, 17), 12, 6, r"fused chain of 17 layers")
    _refused(edited(4, 4000), 12, 6, r"fused chain of 4000 layers")
    _refused(edited(16, 72), 12, 6, r"fused chain layer 0: blob at offset 72.*not a 16-byte aligned")
    _refused(edited(20, good.size), 12, 6, r"fused chain layer 0: .* inside the blob's")
    _refused(edited(32 + 4, 16), 12, 6, r"fused chain layer 1: params blob")  # a cut layer blob
    # A layer whose in is not the previous layer's out.
    (b3, _) = _layer_blob(rng, 7, 6)
    _refused(params_blob.pack_chain([b1, b3], 6), 12, 6, r"fused chain layer 1: activations")
    # The blob's first dimension is the last layer's out.
    bad = np.zeros((5, good.size // 5 + 1), np.uint8)
    bad.reshape(-1)[:good.size] = good.reshape(-1)
    _refused(bad, 12, 5, "first dimension must equal the last layer's out")


def test_pack_chain_refuses_a_bad_layer_count():
    with pytest.raises(ValueError, match=r"fused chain: 1 layers; allowed 2\.\.16"):
        params_blob.pack_chain([np.zeros((1, 16), np.uint8)], 1)


def test_c_array_refuses_a_fused_model(exported):
    from tflite_export import c_array

    _, plain = exported
    c_array.render(plain)  # unfused: fine
    with pytest.raises(ValueError, match=r"nodes \['dense\+dense_1\+dense_2\+dense_3'\] are fused "
                                         r"chains .* only the host runtime runs"):
        c_array.render(fusion.fuse(plain))


def test_check_nm_names_a_fused_node():
    from tflite_export import check_nm

    report = check_nm(fusion.fuse(_export("float32")))
    (layer,) = report.layers
    assert layer.status == "invalid" and "fused chain" in layer.reason
