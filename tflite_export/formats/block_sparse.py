"""TFLite's own block-sparse FULLY_CONNECTED: the builtin op with sparse weights.

The weight keeps its tensor and gets TFLite's sparsity parameters, in the layout the converter
writes under ``Optimize.EXPERIMENTAL_SPARSITY`` (dims ``[out]`` dense, ``[in / block]`` CSR,
``[block]`` dense). TFLite's kernels compute sparse only for blocks of 1x4 (float32) and 1x16
(int8) along the input dimension; the block width is the cost profile's ``builtin_sparse``
entry's ``block``. A target whose runtime has no sparse FC (TFLite Micro) marks the entry
``unsupported``.
"""
from __future__ import annotations

import numpy as np

from tflite_export import group_csr
from tflite_export.formats.base import SparseFormat

#: The blocks TFLite's sparse FC kernels compute sparse (1 x block along the input dimension).
TFLITE_BLOCKS = {"float32": 4, "int8": 16}
# First FULLY_CONNECTED version whose kernels accept sparse weights (what the converter writes).
SPARSE_FC_MIN_VERSION = 8
# The int8 builtin kernel keeps per-row block counts and block indices in uint8 ("ledger").
_INT8_MAX_BLOCKS = 255


def _index_vector(values: np.ndarray):
    """The smallest SparseIndexVector type holding `values` (as the converter chooses)."""
    from tensorflow.lite.python import schema_py_generated as schema

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


def block_sparse_parameters(weights: np.ndarray, block: int) -> tuple:
    """TFLite block-sparse encoding of `weights[out, in]` with 1 x `block` blocks along `in`:
    ``(SparsityParametersT, values)``."""
    from tensorflow.lite.python import schema_py_generated as schema

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


class BlockSparseFC(SparseFormat):
    name = "builtin_sparse"
    title = "builtin block-sparse"
    op_name = None
    op_version = SPARSE_FC_MIN_VERSION

    def width_reason(self, layer, block):
        """Why TFLite's sparse FC kernel cannot take ``layer`` with 1 x ``block`` blocks."""
        if layer.in_features % block:
            return f"in={layer.in_features} is not a multiple of the builtin block {block}"
        if layer.dtype == "int8" and layer.in_features // block > _INT8_MAX_BLOCKS + 1:
            return f"in={layer.in_features} has more than 256 int8 blocks per row"
        return None

    def widths(self, layer, cost, pinned=None):
        return (cost.builtin_block(layer.dtype),)

    def stored_units(self, weights, g):
        return group_csr.count_groups(weights, g)

    def label(self, g):
        return f"builtin block-sparse 1x{g}"

    def rewrite(self, model, layer, g):
        """Re-encode the weight as TFLite block-sparse (same FC op); returns the new bytes used."""
        from tensorflow.lite.python import schema_py_generated as schema

        from tflite_export import flatbuffer

        sg = model.subgraphs[layer.subgraph]
        sparsity, values = block_sparse_parameters(layer.weights, g)
        wt = sg.tensors[layer.weight]
        wt.sparsity = sparsity
        # A fresh buffer: the converter may share one buffer between identical constants.
        wt.buffer = flatbuffer.add_buffer(model, values)
        op = sg.operators[layer.op_index]
        old = model.operatorCodes[op.opcodeIndex]
        version = max(int(old.version), self.op_version)
        op.opcodeIndex = flatbuffer.opcode_index(model, schema.BuiltinOperator.FULLY_CONNECTED, version)
        seg = sparsity.dimMetadata[1].arraySegments.values
        idx = sparsity.dimMetadata[1].arrayIndices.values
        return int(values.nbytes + seg.nbytes + idx.nbytes)


FORMAT = BlockSparseFC()
