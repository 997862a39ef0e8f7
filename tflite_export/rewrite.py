"""Rewrite one FULLY_CONNECTED of a ModelT in place: into TFS_GROUP_SPARSE_FC or TFLite's block-sparse FC.

Only the flatbuffer object API is used (new TensorT/BufferT/OperatorT/OperatorCodeT objects);
orphaned dense weights are removed afterwards by `flatbuffer.compact`. The custom op follows
FORMAT.md (format version 2); the block-sparse weight follows the layout TFLite's converter
emits under `Optimize.EXPERIMENTAL_SPARSITY` (dims [out] dense, [in / block] CSR, [block] dense).
"""
from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, group_csr, params_blob, quantization
from tflite_export.fc_layers import FCLayer, bias_values

CUSTOM_CODE = "TFS_GROUP_SPARSE_FC"
CUSTOM_OP_VERSION = 1  # LiteRT only resolves custom ops registered at the model's version 1
FORMAT_VERSION = 2
META_LEN = 16
DTYPE_CODES = {"float32": 0, "int8": 1}
# First FULLY_CONNECTED version whose kernels accept sparse weights (what the converter writes).
_SPARSE_FC_MIN_VERSION = 8

_TT = schema.TensorType


def _opcode_index(model: schema.ModelT, builtin: int, version: int, custom_code: str | None = None) -> int:
    for i, oc in enumerate(model.operatorCodes):
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        cc = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
        if code == builtin and int(oc.version) == version and cc == custom_code:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode = builtin
    # Codes below 127 must also be in the deprecated int8 field for older readers.
    oc.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    oc.version = version
    oc.customCode = custom_code
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _add_tensor(model: schema.ModelT, layer: FCLayer, suffix: str, data: np.ndarray, ttype: int) -> int:
    sg = model.subgraphs[layer.subgraph]
    t = schema.TensorT()
    t.name = f"{layer.name}/{suffix}"
    t.shape = np.array(data.shape, dtype=np.int32)
    t.type = ttype
    t.buffer = flatbuffer.add_buffer(model, data)
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def custom_op_arrays(model: schema.ModelT, layer: FCLayer, g: int) -> dict[str, np.ndarray]:
    """The constant inputs 1.. of TFS_GROUP_SPARSE_FC for `layer`, in FORMAT.md order, by name."""
    csr = group_csr.encode(layer.weights, g)
    meta = np.zeros(META_LEN, dtype=np.int32)
    meta[:7] = [FORMAT_VERSION, layer.in_features, layer.out_features, g, csr.n_groups,
                DTYPE_CODES[layer.dtype], layer.activation]
    arrays = {"values": csr.values, "col_idx": csr.col_idx, "row_ptr": csr.row_ptr, "meta": meta,
              "bias": bias_values(model, layer)}
    if layer.dtype == "int8":
        sg = model.subgraphs[layer.subgraph]
        qx = sg.tensors[layer.input].quantization
        qy = sg.tensors[layer.output].quantization
        qw = sg.tensors[layer.weight].quantization
        in_zp, out_zp = int(qx.zeroPoint[0]), int(qy.zeroPoint[0])
        act_min, act_max = quantization.activation_range(layer.activation, float(qy.scale[0]), out_zp)
        meta[7:11] = [in_zp, out_zp, act_min, act_max]
        mult, shift = quantization.per_channel_multipliers(
            float(qx.scale[0]), np.asarray(qw.scale), float(qy.scale[0]), layer.out_features)
        arrays["out_multiplier"], arrays["out_shift"] = mult, shift
        arrays["out_scale"] = quantization.per_channel_scales(
            qx.scale[0], np.asarray(qw.scale), qy.scale[0], layer.out_features)
    return arrays


def to_custom(model: schema.ModelT, layer: FCLayer, g: int) -> int:
    """Replace `layer`'s FC with TFS_GROUP_SPARSE_FC at group width g; returns the new bytes used.

    The node's inputs are the activations and one constant uint8 parameter blob holding every
    array (`params_blob`): LiteRT's per-run cost grows with the number of node inputs."""
    blob = params_blob.pack_params(custom_op_arrays(model, layer, g), layer.out_features)
    op = schema.OperatorT()
    op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.CUSTOM, CUSTOM_OP_VERSION, CUSTOM_CODE)
    op.inputs = np.array([layer.input, _add_tensor(model, layer, "tfs_params", blob, _TT.UINT8)],
                         dtype=np.int32)
    op.outputs = np.array([layer.output], dtype=np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.NONE
    op.customOptions = None  # every parameter is in the blob (FORMAT.md)
    model.subgraphs[layer.subgraph].operators[layer.op_index] = op
    return int(blob.nbytes)


def _index_vector(values: np.ndarray):
    """The smallest SparseIndexVector type holding `values` (as the converter chooses)."""
    top = int(values.max()) if values.size else 0
    for limit, kind, cls, dt in (
        (0xFF, schema.SparseIndexVector.Uint8Vector, schema.Uint8VectorT, np.uint8),
        (0xFFFF, schema.SparseIndexVector.Uint16Vector, schema.Uint16VectorT, np.uint16),
        (0x7FFFFFFF, schema.SparseIndexVector.Int32Vector, schema.Int32VectorT, np.int32),
    ):
        if top <= limit:
            vec = cls()
            vec.values = values.astype(dt)
            return kind, vec
    raise ValueError(f"sparse index {top} does not fit int32")


def block_sparse_parameters(weights: np.ndarray, block: int) -> tuple[schema.SparsityParametersT, np.ndarray]:
    """TFLite block-sparse encoding of `weights[out, in]` with 1 x `block` blocks along `in`."""
    out_features, in_features = weights.shape
    if in_features % block:
        raise ValueError(f"in={in_features} is not a multiple of block {block}")
    csr = group_csr.encode(weights, block)  # same grouping: blocks along in, row by row
    dims = []
    for fmt, size in ((schema.DimensionType.DENSE, out_features),
                      (schema.DimensionType.SPARSE_CSR, 0),
                      (schema.DimensionType.DENSE, block)):
        d = schema.DimensionMetadataT()
        d.format, d.denseSize = fmt, size
        dims.append(d)
    dims[1].arraySegmentsType, dims[1].arraySegments = _index_vector(csr.row_ptr)
    dims[1].arrayIndicesType, dims[1].arrayIndices = _index_vector(csr.col_idx.astype(np.int64))  # group indices = block indices
    sp = schema.SparsityParametersT()
    sp.traversalOrder = np.array([0, 1, 2], dtype=np.int32)
    sp.blockMap = np.array([1], dtype=np.int32)  # the block dimension subdivides dim 1 (in)
    sp.dimMetadata = dims
    return sp, csr.values


def to_builtin_sparse(model: schema.ModelT, layer: FCLayer, block: int) -> int:
    """Re-encode `layer`'s weight as TFLite block-sparse (same FC op); returns the new bytes used."""
    sg = model.subgraphs[layer.subgraph]
    sparsity, values = block_sparse_parameters(layer.weights, block)
    wt = sg.tensors[layer.weight]
    wt.sparsity = sparsity
    # A fresh buffer: the converter may share one buffer between identical constants.
    wt.buffer = flatbuffer.add_buffer(model, values)
    op = sg.operators[layer.op_index]
    old = model.operatorCodes[op.opcodeIndex]
    version = max(int(old.version), _SPARSE_FC_MIN_VERSION)
    op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.FULLY_CONNECTED, version)
    seg, idx = sparsity.dimMetadata[1].arraySegments.values, sparsity.dimMetadata[1].arrayIndices.values
    return int(values.nbytes + seg.nbytes + idx.nbytes)
