"""Find the FULLY_CONNECTED operators of a converted model and describe what the rewriter needs.

Each FC becomes an `FCLayer`: its tensors, shapes, dtype, weights as numpy `[out, in]`, and, when
it cannot leave the dense builtin (hybrid quantization, an activation the custom op lacks, a
non-constant weight, ...), the reason why. The rewriter never touches a layer with a reason.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer
from tflite_export.group_csr import MAX_IN_FEATURES
from tflite_export.quantization import SUPPORTED_ACTIVATIONS, per_channel_scales

_TT = schema.TensorType
_ACT_NAMES = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}


@dataclasses.dataclass
class FCLayer:
    """One FULLY_CONNECTED operator and everything needed to re-encode it."""

    subgraph: int
    op_index: int
    name: str  # TFLite weight tensor name until a Keras layer name is matched
    input: int  # tensor indices in the subgraph
    weight: int
    bias: int  # -1 when the layer has none
    output: int
    in_features: int
    out_features: int
    dtype: str  # "float32" | "int8" | a description of an unsupported combination
    activation: int  # TFLite ActivationFunctionType
    weights: np.ndarray | None  # [out, in], float32 or int8; None if not constant
    unsupported: str | None = None  # why the layer must stay the dense builtin

    @property
    def activation_name(self) -> str:
        return _ACT_NAMES.get(self.activation, str(self.activation)).lower()


def builtin_code(opcode: schema.OperatorCodeT) -> int:
    # Codes < 127 may only be set in the deprecated field by old writers.
    return max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))


def find_fully_connected(model: schema.ModelT) -> list[FCLayer]:
    """Every FULLY_CONNECTED operator in every subgraph, in execution order."""
    layers = []
    for sg_index, sg in enumerate(model.subgraphs):
        for op_index, op in enumerate(sg.operators):
            if builtin_code(model.operatorCodes[op.opcodeIndex]) != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            layers.append(_describe(model, sg_index, op_index))
    return layers


def _describe(model: schema.ModelT, sg_index: int, op_index: int) -> FCLayer:
    sg = model.subgraphs[sg_index]
    op = sg.operators[op_index]
    inputs = [int(t) for t in op.inputs]
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else -1
    y = int(op.outputs[0])
    wt = sg.tensors[w]
    opts = op.builtinOptions
    act = int(opts.fusedActivationFunction) if opts is not None else 0
    shape = [int(d) for d in wt.shape] if wt.shape is not None else []
    out_f, in_f = (shape + [0, 0])[:2] if len(shape) == 2 else (0, 0)
    types = (sg.tensors[x].type, wt.type, sg.tensors[y].type)
    dtype = {(_TT.FLOAT32,) * 3: "float32", (_TT.INT8,) * 3: "int8"}.get(
        types, f"input/weight/output types {types}"
    )
    np_dtype = {"float32": np.float32, "int8": np.int8}.get(dtype)
    weights = None
    if np_dtype is not None and len(shape) == 2 and wt.sparsity is None:
        weights = flatbuffer.tensor_data(model, wt, np_dtype)
    layer = FCLayer(
        subgraph=sg_index, op_index=op_index, name=_name(wt.name), input=x, weight=w, bias=b,
        output=y, in_features=in_f, out_features=out_f, dtype=dtype, activation=act,
        weights=weights,
    )
    layer.unsupported = _unsupported_reason(model, layer, op)
    return layer


def _name(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _unsupported_reason(model: schema.ModelT, layer: FCLayer, op: schema.OperatorT) -> str | None:
    sg = model.subgraphs[layer.subgraph]
    wt = sg.tensors[layer.weight]
    opts = op.builtinOptions
    if layer.dtype not in ("float32", "int8"):
        return f"unsupported dtype combination ({layer.dtype}); only float32 and full int8"
    if wt.sparsity is not None:
        return "weights are already sparse-encoded by the converter"
    if layer.weights is None:
        return "weights are not a constant 2-D tensor"
    if opts is not None and int(opts.weightsFormat) != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        return f"weights format {opts.weightsFormat} is not DEFAULT"
    if layer.activation not in SUPPORTED_ACTIVATIONS:
        return (
            f"fused activation {layer.activation_name} not supported by the custom op "
            f"(allowed: {sorted(SUPPORTED_ACTIVATIONS.values())})"
        )
    x_shape = _dims(sg.tensors[layer.input].shape)
    if not x_shape or x_shape[-1] != layer.in_features:
        return f"input shape {x_shape}: last dimension is not in={layer.in_features}"
    # The custom op's output is the input's shape with the last dimension replaced by out
    # (FORMAT.md); an FC that flattens a higher-rank input would need a RESHAPE first.
    y_shape = _dims(sg.tensors[layer.output].shape)
    if y_shape != x_shape[:-1] + [layer.out_features]:
        return f"output shape {y_shape} is not the input shape {x_shape} with out={layer.out_features} last"
    if layer.in_features > MAX_IN_FEATURES:
        return f"in={layer.in_features} exceeds {MAX_IN_FEATURES} (the custom op format's limit)"
    if layer.bias >= 0:
        bt = sg.tensors[layer.bias]
        want = _TT.FLOAT32 if layer.dtype == "float32" else _TT.INT32
        if bt.type != want or flatbuffer.tensor_data(model, bt, _np(want)) is None:
            return "bias is not a constant tensor of the expected type"
    if layer.dtype == "int8":
        return int8_quantization_reason(sg, layer, wt, "weights")
    return None


def int8_quantization_reason(sg, layer, wt, what: str) -> str | None:
    """Why an int8 FC or CONV_2D's quantization is not one the custom ops reproduce bit for bit,
    or None: per-tensor input and output, symmetric per-tensor or per-output-channel ``what``
    (weights, filters) along dimension 0, requantization scales in XNNPACK's (0, 256)."""
    for role, t in (("input", layer.input), ("output", layer.output)):
        q = sg.tensors[t].quantization
        if q is None or q.scale is None or len(q.scale) != 1:
            return f"{role} is not per-tensor quantized"
    q = wt.quantization
    if q is None or q.scale is None or len(q.scale) not in (1, layer.out_features):
        return f"{what} have no per-tensor or per-output-channel scales"
    if q.zeroPoint is not None and np.any(np.asarray(q.zeroPoint) != 0):
        return f"{what} are not symmetrically quantized (zero point != 0)"
    if len(q.scale) > 1 and int(q.quantizedDimension) != 0:
        return f"{what} quantized along dimension {q.quantizedDimension}, expected 0 (out)"
    qx, qy = sg.tensors[layer.input].quantization, sg.tensors[layer.output].quantization
    scales = per_channel_scales(qx.scale[0], np.asarray(q.scale), qy.scale[0], layer.out_features)
    if not np.all((scales > 0) & (scales < 256)):
        # XNNPACK rejects such layers and TFLite's fixed-point kernel runs instead, whose
        # rounding the custom op (fp32 requantization) would not reproduce.
        return "a requantization scale is outside XNNPACK's range (0, 256)"
    return None


def _dims(shape) -> list[int]:
    return [] if shape is None else [int(d) for d in shape]


def _np(tensor_type: int):
    return {_TT.FLOAT32: np.float32, _TT.INT32: np.int32, _TT.INT8: np.int8}[tensor_type]


def bias_values(model: schema.ModelT, layer: FCLayer) -> np.ndarray:
    """The layer's bias (float32 or int32, length out), zeros when the FC has none."""
    dtype = np.float32 if layer.dtype == "float32" else np.int32
    if layer.bias < 0:
        return np.zeros(layer.out_features, dtype=dtype)
    data = flatbuffer.tensor_data(model, model.subgraphs[layer.subgraph].tensors[layer.bias], dtype)
    return np.ascontiguousarray(data.reshape(-1))
