"""2:4 export: FULLY_CONNECTED layers with 2:4 weights -> the ``TFS_NM_SPARSE_FC`` custom op.

The compressed layout (FORMAT.md, "TFS_NM_SPARSE_FC") is the one sparse tensor cores consume:
per output row the 2 kept values of each window of 4 inputs, and their 2-bit positions, two per
window, packed as one little-endian bit stream per row::

    result = export_nm(stripped_model, output="model_2_4.tflite")           # float32
    result = export_nm(stripped_model, quantize="int8", representative_data=x)
    print(result)                                                           # per-layer table

A layer stays the dense builtin, with its reason in the report, when it cannot leave it (see
``fc_layers``), when ``in % 4 != 0``, or when its weights are not 2:4. Where a window has fewer
than 2 nonzeros, zeros are stored at the lowest free positions (positions strictly increase).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, keras_names, params_blob, quantization
from tflite_export.atomic import write_atomic
from tflite_export.fc_layers import FCLayer, bias_values, find_fully_connected
from tflite_export.static_shapes import freeze_batch_reshapes

CUSTOM_CODE = "TFS_NM_SPARSE_FC"
CUSTOM_OP_VERSION = 1
FORMAT_VERSION = 1
META_LEN = 16
INPUT_NAMES = params_blob.OP_SECTIONS[CUSTOM_CODE]  # the blob's sections, FORMAT.md order
_TT = schema.TensorType


# ---------------------------------------------------------------------------------------------
# The compressed layout
# ---------------------------------------------------------------------------------------------

def index_stride(in_features: int) -> int:
    """Bytes of positions per row: 4 bits per window of 4 inputs, rounded up to whole bytes."""
    return (in_features // 4 + 1) // 2


def encode_2_4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compress ``w[out, in]`` (2:4 along ``in``) to ``(values[out, in/2], indices uint8[out, stride])``.

    Raises ValueError if ``in % 4 != 0`` or some window holds more than 2 nonzeros.
    """
    w = np.asarray(w)
    out_f, in_f = w.shape
    if in_f % 4:
        raise ValueError(f"in = {in_f} is not a multiple of 4")
    win = w.reshape(out_f, in_f // 4, 4)
    nz = win != 0
    counts = nz.sum(axis=2)
    if (counts > 2).any():
        r, k = np.argwhere(counts > 2)[0]
        raise ValueError(f"weights are not 2:4: output {r}, window at input {4 * k} has {counts[r, k]} nonzeros")
    # Positions: the nonzeros first, then the lowest zero positions, 2 per window, ascending.
    # Sort key: nonzero first (0) then position; take the first two, then sort those ascending.
    key = np.where(nz, 0, 4) + np.arange(4)
    chosen = np.sort(np.argsort(key, axis=2, kind="stable")[:, :, :2], axis=2).astype(np.uint8)
    values = np.take_along_axis(win, chosen.astype(np.intp), axis=2).reshape(out_f, in_f // 2)
    nibbles = chosen[:, :, 0] | (chosen[:, :, 1] << 2)  # [out, windows]
    stride = index_stride(in_f)
    padded = np.zeros((out_f, 2 * stride), np.uint8)
    padded[:, : in_f // 4] = nibbles
    indices = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(values), np.ascontiguousarray(indices)


def decode_2_4(values: np.ndarray, indices: np.ndarray, in_features: int) -> np.ndarray:
    """The dense ``w[out, in]`` of a compressed layer (inverse of :func:`encode_2_4`)."""
    values = np.asarray(values)
    out_f = values.shape[0] if values.ndim == 2 else values.size // (in_features // 2)
    values = values.reshape(out_f, in_features // 2)
    idx = np.asarray(indices, np.uint8).reshape(out_f, index_stride(in_features))
    nibbles = np.stack([idx & 0xF, idx >> 4], axis=2).reshape(out_f, -1)[:, : in_features // 4]
    pos = np.stack([nibbles & 3, nibbles >> 2], axis=2).astype(np.intp)  # [out, windows, 2]
    if (pos[:, :, 0] >= pos[:, :, 1]).any():
        raise ValueError("positions are not strictly increasing within a window")
    w = np.zeros((out_f, in_features // 4, 4), values.dtype)
    np.put_along_axis(w, pos, values.reshape(out_f, -1, 2), axis=2)
    return w.reshape(out_f, in_features)


# ---------------------------------------------------------------------------------------------
# Rewriting one FULLY_CONNECTED
# ---------------------------------------------------------------------------------------------

def custom_op_arrays(model: schema.ModelT, layer: FCLayer) -> dict[str, np.ndarray]:
    """The constant arrays 1.. of TFS_NM_SPARSE_FC for ``layer`` (its parameter blob's sections),
    in FORMAT.md order."""
    values, indices = encode_2_4(layer.weights)
    meta = np.zeros(META_LEN, np.int32)
    meta[:7] = [FORMAT_VERSION, layer.in_features, layer.out_features, 2, 4,
                0 if layer.dtype == "float32" else 1, layer.activation]
    arrays = {"values": values.reshape(-1), "indices": indices.reshape(-1), "meta": meta,
              "bias": bias_values(model, layer)}
    if layer.dtype == "int8":
        # The same requantization parameters the group-sparse op carries (FORMAT.md).
        sg = model.subgraphs[layer.subgraph]
        qx, qy = sg.tensors[layer.input].quantization, sg.tensors[layer.output].quantization
        qw = sg.tensors[layer.weight].quantization
        in_zp, out_zp = int(qx.zeroPoint[0]), int(qy.zeroPoint[0])
        meta[7:11] = [in_zp, out_zp, *quantization.activation_range(layer.activation, float(qy.scale[0]), out_zp)]
        arrays["out_multiplier"], arrays["out_shift"] = quantization.per_channel_multipliers(
            float(qx.scale[0]), np.asarray(qw.scale), float(qy.scale[0]), layer.out_features)
        arrays["out_scale"] = quantization.per_channel_scales(
            qx.scale[0], np.asarray(qw.scale), qy.scale[0], layer.out_features).astype(np.float32)
    return arrays


def _opcode_index(model: schema.ModelT) -> int:
    for i, oc in enumerate(model.operatorCodes):
        cc = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
        if cc == CUSTOM_CODE and int(oc.version) == CUSTOM_OP_VERSION:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    oc.version, oc.customCode = CUSTOM_OP_VERSION, CUSTOM_CODE
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def to_nm_custom(model: schema.ModelT, layer: FCLayer) -> int:
    """Replace ``layer``'s FC with TFS_NM_SPARSE_FC; returns the bytes its constants use.

    The node's inputs are the activations and one constant uint8 parameter blob holding every
    array (``params_blob``), as for TFS_GROUP_SPARSE_FC: LiteRT's per-run cost grows with the
    number of node inputs."""
    blob = params_blob.pack_params(custom_op_arrays(model, layer), layer.out_features, INPUT_NAMES)
    sg = model.subgraphs[layer.subgraph]
    t = schema.TensorT()
    t.name = f"{layer.name}/tfs_nm_params"
    t.shape = np.array(blob.shape, np.int32)
    t.type = _TT.UINT8
    t.buffer = flatbuffer.add_buffer(model, blob)
    sg.tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex = _opcode_index(model)
    op.inputs = np.array([layer.input, len(sg.tensors) - 1], np.int32)
    op.outputs = np.array([layer.output], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.NONE
    op.customOptions = None
    sg.operators[layer.op_index] = op
    return int(blob.nbytes)


def nm_reason(layer: FCLayer) -> str | None:
    """Why ``layer`` stays dense, or None when it becomes TFS_NM_SPARSE_FC."""
    if layer.unsupported:
        return layer.unsupported
    if layer.in_features % 4:
        return f"in = {layer.in_features} is not a multiple of 4"
    counts = np.count_nonzero(layer.weights.reshape(layer.out_features, -1, 4), axis=2)
    if (counts > 2).any():
        r, k = np.argwhere(counts > 2)[0]
        return f"weights are not 2:4 (output {r}, window at input {4 * k}: {counts[r, k]} nonzeros)"
    return None


@dataclasses.dataclass(frozen=True)
class NMLayerExport:
    layer: str
    shape: tuple  # (in, out)
    dtype: str
    format: str  # "2:4" | "dense"
    bytes_dense: int
    bytes_exported: int
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class NMExportResult:
    model_bytes: bytes
    dense_model_bytes: bytes
    layers: tuple
    output: str | None

    def __str__(self):
        head = f"{'layer':<16}{'in x out':>12}{'dtype':>9}{'format':>8}{'dense B':>11}{'stored B':>11}  note"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            shape = f"{r.shape[0]}x{r.shape[1]}"
            lines.append(f"{r.layer[:15]:<16}{shape:>12}{r.dtype:>9}{r.format:>8}{r.bytes_dense:>11,}"
                         f"{r.bytes_exported:>11,}  {r.reason}")
        lines.append(f"file: {len(self.model_bytes):,} B (dense {len(self.dense_model_bytes):,} B)")
        return "\n".join(lines)


def rewrite_nm(tflite_bytes: bytes, output: str | None = None, keras_model=None) -> NMExportResult:
    """Rewrite every 2:4 FULLY_CONNECTED of a converted `.tflite` into TFS_NM_SPARSE_FC."""
    model = flatbuffer.load(tflite_bytes)
    fcs = find_fully_connected(model)
    if keras_model is not None:
        keras_names.assign_names(keras_model, model, fcs)
    rows = []
    for fc in fcs:
        dense_b = 0 if fc.weights is None else int(fc.weights.nbytes) + (0 if fc.bias < 0 else 4 * fc.out_features)
        reason = nm_reason(fc)
        stored = dense_b if reason else to_nm_custom(model, fc)
        rows.append(NMLayerExport(fc.name, (fc.in_features, fc.out_features), fc.dtype,
                                  "dense" if reason else "2:4", dense_b, stored, reason or ""))
    freeze_batch_reshapes(model)  # a custom op after Flatten needs an aligned (static) input
    flatbuffer.compact(model)
    out = flatbuffer.save(model)
    if output is not None:
        write_atomic(output, out)
    return NMExportResult(out, bytes(tflite_bytes), tuple(rows), output)


def export_nm(model, output: str | None = None, quantize: str | None = None,
              representative_data=None, int8_io: bool = False) -> NMExportResult:
    """Convert a stripped 2:4 Keras model (e.g. ``tfscalpel.strip(prune_2_4(...)[0])`` after
    fine-tuning) to `.tflite` with its 2:4 dense layers as TFS_NM_SPARSE_FC (float32 or int8).

    Every 2:4 layer is rewritten, without a cost model: the file carries the compressed layout
    that sparse tensor cores consume, and its host kernels make it runnable and testable on a CPU,
    at about dense speed (`benchmarks/bench_nm_cpu.py`). For CPU latency export group-sparse
    models with `tflite_export.export`, which chooses the format per layer."""
    from tflite_export.converter import convert_keras

    dense = convert_keras(model, quantize, representative_data, int8_io)
    return rewrite_nm(dense, output, keras_model=model)


# ---------------------------------------------------------------------------------------------
# check_nm support: a TFS_NM_SPARSE_FC node, validated by the C validator
# ---------------------------------------------------------------------------------------------

def check_custom_node(model: schema.ModelT, sg, op, n: int, m: int):
    """An ``NMLayerCheck`` for one TFS_NM_SPARSE_FC node: the kernel's validator checks every
    field and position; the decoded weights are then checked for ``n:m``."""
    from tfscalpel.nm import NMLayerCheck, check_nm_weights
    from tflite_export.kernels import KernelFormatError
    from tflite_export.kernels.nm import NMSparseFC

    name = sg.tensors[int(op.inputs[1])].name  # "<layer>/tfs_nm_params" when we wrote it
    name = name.decode() if isinstance(name, bytes) else str(name)
    name = name[: -len("/tfs_nm_params")] if name.endswith("/tfs_nm_params") else name
    try:
        if len(op.inputs) != 2:
            raise KernelFormatError(f"{len(op.inputs)} inputs, expected 2 (activations, parameter blob)")
        t = sg.tensors[int(op.inputs[1])]
        blob = flatbuffer.tensor_data(model, t, np.uint8)
        if blob is None or t.type != _TT.UINT8:
            raise KernelFormatError("input 1 is not a constant uint8 parameter blob")
        layer = NMSparseFC.from_blob(blob)
    except KernelFormatError as e:
        return NMLayerCheck(name, CUSTOM_CODE, (), "invalid", reason=str(e))
    arrays = layer.arrays
    meta = arrays[2]
    w = decode_2_4(arrays[0], arrays[1], int(meta[1]))
    check = check_nm_weights(w, n, m, name, CUSTOM_CODE)
    return check
