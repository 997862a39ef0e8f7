"""tflite_export.verifier: every corrupt model is refused with a message naming the place and the
rule, before LiteRT sees it (the cases below each crashed or misled LiteRT without it)."""
import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

import custom_op_testlib as tl
from tflite_export import flatbuffer, runtime, verifier

IN, OUT = 32, 8


def _arrays(int8=False):
    rng = np.random.default_rng(3)
    w = tl.random_group_sparse(rng, OUT, IN, 4, 0.5)
    if not int8:
        return tl.layer_arrays(w, np.zeros(OUT, np.float32), 4)
    params = dict(in_zp=-3, out_zp=5, act_min=-128, act_max=127, multiplier=np.full(OUT, 1 << 30),
                  shift=np.zeros(OUT), scale=np.full(OUT, 0.01, np.float32))
    wq = np.clip(np.round(w * 40), -127, 127).astype(np.int8)
    return tl.layer_arrays(wq, np.zeros(OUT, np.int32), 4, int8=params)


def _model(int8=False):
    if int8:
        return tl.custom_op_model(_arrays(True), tl._quant(0.05, -3), tl._quant(0.1, 5))
    return tl.custom_op_model(_arrays())


def _edited(edit, int8=False):
    m = flatbuffer.load(_model(int8))
    edit(m)
    return flatbuffer.save(m)


def _refused(data, message):
    """verify() and runtime.load() both refuse `data` with a message matching `message`."""
    with pytest.raises(verifier.InvalidModelError, match=message):
        verifier.verify(data)
    with pytest.raises(runtime.InvalidModelError, match=message) as info:
        runtime.load(data)
    assert isinstance(info.value, runtime.LiteRtError) and isinstance(info.value, ValueError)


def test_valid_models_pass_and_report_their_custom_nodes():
    for int8 in (False, True):
        summary = verifier.verify(_model(int8))
        (node,) = summary.custom_nodes
        assert (node.name, node.version, node.options_bytes) == ("TFS_GROUP_SPARSE_FC", 1, 0)
        assert summary.input_bytes == [IN * (1 if int8 else 4)]
        ((key, offset),) = summary.constant_offsets.items()
        assert key == (0, 0, 1) and offset % 64 == 0


def _set_zero_point(zp):
    def edit(m):
        m.subgraphs[0].tensors[0].quantization.zeroPoint = [zp]
    return edit


def test_int8_zero_point_out_of_range():
    # A zero point of 128 segfaulted in LiteRtCreateCompiledModel.
    _refused(_edited(_set_zero_point(128), int8=True),
             r"subgraph 0 tensor 0 \('x'\): quantization zero_point\[0\] = 128: a int8 zero "
             r"point must lie in \[-128, 127\]")
    _refused(_edited(_set_zero_point(-129), int8=True), r"zero_point\[0\] = -129")


@pytest.mark.parametrize("scale, shown", [(0.0, "0.0"), (float("nan"), "nan"), (-1.0, "-1.0"),
                                          (float("inf"), "inf")])
def test_quantization_scale_must_be_finite_and_positive(scale, shown):
    def edit(m):
        m.subgraphs[0].tensors[0].quantization.scale = [scale]
    _refused(_edited(edit, int8=True), rf"scale\[0\] = {shown}: scales must be finite and > 0")


def test_quantization_scales_and_zero_points_pair_up_and_match_channels():
    def two_zero_points(m):
        m.subgraphs[0].tensors[0].quantization.zeroPoint = [0, 0]
    _refused(_edited(two_zero_points, int8=True), "1 scales and 2 zero points")

    def per_channel(m):
        q = m.subgraphs[0].tensors[0].quantization
        q.scale, q.zeroPoint, q.quantizedDimension = [0.1] * 3, [0] * 3, 1
    _refused(_edited(per_channel, int8=True),
             r"3 per-channel scales but dimension 1 of shape \[1, 32\] has 32 channels")

    def bad_dim(m):
        q = m.subgraphs[0].tensors[0].quantization
        q.scale, q.zeroPoint, q.quantizedDimension = [0.1] * 2, [0] * 2, 5
    _refused(_edited(bad_dim, int8=True), "quantized_dimension 5 is not a dimension")


def test_custom_op_input_minus_one_is_refused():
    # -1 (absent) on a custom op segfaulted LiteRT; builtin FC may have -1 for its bias only.
    def edit(m):
        m.subgraphs[0].operators[0].inputs = [0, -1]
    _refused(_edited(edit), r"operator 0 \(TFS_GROUP_SPARSE_FC\): inputs\[1\] = -1: a tensor "
                            r"index must lie in \[0, 3\)")


@pytest.mark.parametrize("field, value, message", [
    ("inputs", [0, 7], r"inputs\[1\] = 7: a tensor index must lie in \[0, 3\)"),
    ("outputs", [9], r"outputs\[0\] = 9"),
    ("opcodeIndex", 4, r"opcode_index 4 >= the model's 1 operator codes"),
])
def test_operator_indices_in_range(field, value, message):
    def edit(m):
        setattr(m.subgraphs[0].operators[0], field, value)
    _refused(_edited(edit), message)


def test_tensor_buffer_and_subgraph_indices_in_range():
    def buffer(m):
        m.subgraphs[0].tensors[1].buffer = 99
    _refused(_edited(buffer), r"tensor 1 \('params'\): buffer index 99 >= the model's 2 buffers")

    def sg_input(m):
        m.subgraphs[0].inputs = [5]
    _refused(_edited(sg_input), r"subgraph 0: inputs\[0\] = 5")

    def signature(m):
        m.signatureDefs[0].outputs[0].tensorIndex = 3
    _refused(_edited(signature), r"signature 0: outputs\[0\] = 3")


def test_signature_names_are_required():
    # A signature output without a name aborted the process (std::string from NULL).
    def edit(m):
        m.signatureDefs[0].outputs[0].name = None
    _refused(_edited(edit), r"signature 0: outputs\[0\] has no name")


def test_signature_and_subgraph_name_the_same_tensors():
    # A signature output that is not the subgraph's output aborted the process.
    def edit(m):
        m.subgraphs[0].outputs = [1]
    _refused(_edited(edit), r"signature 0: outputs name tensors \[2\], but subgraph 0's outputs "
                            r"are \[1\]; they must be the same")


def test_builtin_op_input_counts():
    # A QUANTIZE turned STRIDED_SLICE (one input, four expected) crashed LiteRtCreateCompiledModel.
    def edit(m):
        m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = \
            schema.BuiltinOperator.STRIDED_SLICE
    _refused(_edited(edit), r"operator 0 \(STRIDED_SLICE\): 2 inputs; STRIDED_SLICE takes 4")


def test_a_tensor_has_one_writer():
    # Two operators writing one tensor crashed LiteRtCreateCompiledModel.
    def edit(m):
        m.subgraphs[0].operators[0].outputs = [0]
    _refused(_edited(edit), r"operator 0 \(TFS_GROUP_SPARSE_FC\): outputs\[0\] = tensor 0 is "
                            r"already written by the subgraph's inputs; a tensor has one writer")


def test_operator_cannot_write_a_constant():
    def edit(m):
        m.subgraphs[0].operators[0].outputs = [1]
    _refused(_edited(edit), r"outputs\[0\] = tensor 1 is a constant")


def test_buffer_size_must_equal_the_declared_tensor_size():
    # A blob tensor declared smaller than its data was accepted.
    def edit(m):
        t = m.subgraphs[0].tensors[1]
        t.shape = [t.shape[0], t.shape[1] - 16]
    _refused(_edited(edit), r"tensor 1 \('params'\): buffer 1 holds \d+ bytes but shape "
                            r"\[8, \d+\] of uint8 needs exactly \d+")


def test_shape_signature_and_size_cap():
    # One flipped byte in a shape signature made load() allocate a 5.7 GB test input.
    def huge(m):
        m.subgraphs[0].tensors[0].shape = [1, 1 << 29]
        m.subgraphs[0].tensors[0].shapeSignature = [-1, 1 << 29]
    _refused(_edited(huge), r"tensor 0 \('x'\): shape \[1, 536870912\] of float32 needs "
                            r"2147483648 bytes, over the cap of 1073741824")

    def disagree(m):
        m.subgraphs[0].tensors[0].shapeSignature = [-1, 33]
    _refused(_edited(disagree), r"shape_signature \[-1, 33\] disagrees with shape \[1, 32\]")

    def negative(m):
        m.subgraphs[0].tensors[0].shape = [1, -32]
    _refused(_edited(negative), r"shape \[1, -32\] has a negative dimension")

    def rank(m):
        m.subgraphs[0].tensors[0].shape = [1] * 9
        m.subgraphs[0].tensors[0].shapeSignature = None
    _refused(_edited(rank), r"rank 9 > 8")


def test_activations_together_are_capped():
    # A flipped shape byte made one conv output need 870 MB (under the per-tensor cap).
    def big(m):
        m.subgraphs[0].tensors[0].shape = [1, 150_000_000]
        m.subgraphs[0].tensors[0].shapeSignature = [-1, 150_000_000]
    _refused(_edited(big), r"subgraph 0: its non-constant tensors need 600000032 bytes together, "
                           r"over the cap of 536870912 \(the largest: subgraph 0 tensor 0 \('x'\)")


def test_load_caps_its_check_run_inputs():
    def big(m):  # 320 MB of float32 input: under the tensor cap, over load()'s check-run cap
        m.subgraphs[0].tensors[0].shape = [1, 80_000_000]
        m.subgraphs[0].tensors[0].shapeSignature = [-1, 80_000_000]
    data = _edited(big)
    verifier.verify(data)
    with pytest.raises(runtime.InvalidModelError, match="inputs need 320000000 bytes at batch 1, "
                                                         "over load\\(\\)'s cap of 268435456"):
        runtime.load(data)


def test_unknown_types_and_union_members():
    def ttype(m):
        m.subgraphs[0].tensors[0].type = 99
    _refused(_edited(ttype), "type 99 is not a TensorType")

    # Give the operator a well-formed ReshapeOptions, then overwrite its union type byte with
    # a type this LiteRT does not have.
    m = flatbuffer.load(_model())
    m.subgraphs[0].operators[0].builtinOptionsType = schema.BuiltinOptions.ReshapeOptions
    opts = schema.ReshapeOptionsT()
    opts.newShape = [1, 8]
    m.subgraphs[0].operators[0].builtinOptions = opts
    patched = bytearray(flatbuffer.save(m))
    op = schema.Model.GetRootAs(bytes(patched), 0).Subgraphs(0).Operators(0)
    pos = op._tab.Pos + op._tab.Offset(10)  # builtin_options_type (vtable slot 3)
    assert patched[pos] == schema.BuiltinOptions.ReshapeOptions
    verifier.verify(bytes(patched))  # a well-formed option table is walked and accepted
    patched[pos] = 250
    _refused(bytes(patched), "250 is not a BuiltinOptions type this LiteRT knows")


def test_custom_op_rules_of_the_runtime():
    # Version 2 would be an unresolved op (LiteRT resolves custom ops at version 1 only).
    def version(m):
        m.operatorCodes[0].version = 2
    with pytest.raises(runtime.InvalidModelError,
                       match=r"operator 0 \(TFS_GROUP_SPARSE_FC\): operator code version 2; "
                             r"LiteRT resolves custom ops at version 1 only"):
        runtime.load(_edited(version))


def test_every_truncation_is_refused():
    for data in (_model(), _model(int8=True)):
        for cut in range(len(data)):
            with pytest.raises(verifier.InvalidModelError):
                verifier.verify(data[:cut])


def test_random_corruption_raises_only_invalid_model_error():
    """Byte overwrites anywhere: verify() accepts or raises InvalidModelError, never another
    exception (IndexError, struct.error, ...) and never loops."""
    rng = np.random.default_rng(11)
    base = _model(int8=True)
    accepted = refused = 0
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        try:
            verifier.verify(bytes(data))
            accepted += 1
        except verifier.InvalidModelError:
            refused += 1
    assert accepted + refused == 3000 and refused > 300 and accepted > 300


def test_not_a_model_and_file_errors(tmp_path, monkeypatch):
    with pytest.raises(verifier.InvalidModelError, match="'TFL3' file identifier is missing"):
        verifier.verify(b"this is not a flatbuffer" * 10)
    with pytest.raises(runtime.InvalidModelError, match="is a directory"):
        runtime.load(tmp_path)
    path = tmp_path / "m.tflite"
    path.write_bytes(_model())
    monkeypatch.setattr(verifier, "MAX_MODEL_BYTES", 100)
    with pytest.raises(runtime.InvalidModelError, match=r"is \d+ bytes; a .tflite flatbuffer "
                                                        r"holds at most 100"):
        runtime.load(path)


def test_path_and_bytes_take_the_same_checks(tmp_path):
    data = _edited(_set_zero_point(128), int8=True)
    path = tmp_path / "zp.tflite"
    path.write_bytes(data)
    with pytest.raises(runtime.InvalidModelError, match="zero_point"):
        runtime.load(str(path))
    path.write_bytes(_model())
    x = np.random.default_rng(1).standard_normal((2, IN)).astype(np.float32)
    with runtime.load(path) as a, runtime.load(_model()) as b:
        np.testing.assert_array_equal(a.run(x)[0], b.run(x)[0])
