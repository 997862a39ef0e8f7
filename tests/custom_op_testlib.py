"""Test helper: a minimal one-node `.tflite` holding TFS_GROUP_SPARSE_FC, built with the schema's
object API (and tflite_export.flatbuffer's 64-byte aligned writer), so the runtime can be tested
end to end independently of the exporter. Also: the layer arrays for given dense weights."""
from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, group_csr, params_blob
from tflite_export.kernels import FORMAT_VERSION, META_LEN

CUSTOM = schema.BuiltinOperator.CUSTOM
_TYPES = {np.dtype(np.float32): schema.TensorType.FLOAT32, np.dtype(np.int8): schema.TensorType.INT8,
          np.dtype(np.int32): schema.TensorType.INT32, np.dtype(np.uint16): schema.TensorType.UINT16,
          np.dtype(np.uint8): schema.TensorType.UINT8}


def _quant(scale, zp):
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [float(scale)], [int(zp)]
    return q


def layer_arrays(w: np.ndarray, bias: np.ndarray, g: int, activation: int = 0, int8=None,
                 index_dtype=None) -> dict:
    """Constant inputs 1..8 for weights ``w[out, in]`` (float32, or int8 with ``int8`` = dict of
    in_zp, out_zp, act_min, act_max, multiplier, shift, scale). ``col_idx`` is the exporter's
    narrowest type unless ``index_dtype`` (np.uint8 / np.uint16) is given."""
    out_f, in_f = w.shape
    csr = group_csr.encode(w, g)
    col_idx = csr.col_idx if index_dtype is None else csr.col_idx.astype(index_dtype)
    meta = np.zeros(META_LEN, np.int32)
    meta[:7] = [FORMAT_VERSION, in_f, out_f, g, csr.n_groups, 0 if int8 is None else 1, activation]
    arrays = {"values": csr.values, "col_idx": col_idx, "row_ptr": csr.row_ptr, "meta": meta,
              "bias": bias}
    if int8 is not None:
        meta[7:11] = [int8["in_zp"], int8["out_zp"], int8["act_min"], int8["act_max"]]
        arrays.update(out_multiplier=np.asarray(int8["multiplier"], np.int32),
                      out_shift=np.asarray(int8["shift"], np.int32),
                      out_scale=np.asarray(int8["scale"], np.float32))
    return arrays


def custom_op_model(arrays: dict, x_quant=None, y_quant=None, custom_options=None, blob=None) -> bytes:
    """A model `y = TFS_GROUP_SPARSE_FC(x, params blob of arrays)` with a dynamic batch
    dimension; `blob` (a 2-D uint8 array) replaces the packed arrays, to test corrupt blobs."""
    meta = arrays["meta"]
    in_f, out_f = int(meta[1]), int(meta[2])
    io_dtype = np.dtype(np.int8) if int(meta[5]) == 1 else np.dtype(np.float32)
    model = schema.ModelT()
    model.version = 3
    model.description = "tfscalpel test: one TFS_GROUP_SPARSE_FC"
    empty = schema.BufferT()
    model.buffers = [empty]
    sg = schema.SubGraphT()
    sg.tensors = []

    def tensor(name, shape, dtype, buffer=0, quant=None, signature=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), _TYPES[np.dtype(dtype)], buffer
        if signature is not None:
            t.shapeSignature = list(signature)
        t.quantization = quant
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    x = tensor("x", [1, in_f], io_dtype, quant=x_quant, signature=[-1, in_f])
    if blob is None:
        blob = params_blob.pack_params(arrays, out_f)
    consts = [tensor("params", list(blob.shape), blob.dtype, flatbuffer.add_buffer(model, blob))]
    y = tensor("y", [1, out_f], io_dtype, quant=y_quant, signature=[-1, out_f])
    code = schema.OperatorCodeT()
    code.deprecatedBuiltinCode, code.builtinCode = CUSTOM, CUSTOM
    code.customCode, code.version = b"TFS_GROUP_SPARSE_FC", 1
    model.operatorCodes = [code]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [x] + consts, [y]
    if custom_options:
        op.customOptions = list(custom_options)
    sg.operators = [op]
    sg.inputs, sg.outputs = [x], [y]
    sg.name = b"main"
    model.subgraphs = [sg]
    sig = schema.SignatureDefT()
    ti, to = schema.TensorMapT(), schema.TensorMapT()
    ti.name, ti.tensorIndex = b"x", x
    to.name, to.tensorIndex = b"y", y
    sig.inputs, sig.outputs, sig.signatureKey, sig.subgraphIndex = [ti], [to], b"serving_default", 0
    model.signatureDefs = [sig]
    return flatbuffer.save(model)


def random_group_sparse(rng, out_f: int, in_f: int, g: int, density: float) -> np.ndarray:
    """float32 ``w[out, in]`` with whole groups of width g zeroed (keeping ragged tails)."""
    n_col = -(-in_f // g)
    keep = rng.random((out_f, n_col)) < density
    w = rng.standard_normal((out_f, n_col * g)).astype(np.float32) * np.repeat(keep, g, axis=1)
    return np.ascontiguousarray(w[:, :in_f])
