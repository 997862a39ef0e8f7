"""Shared helpers for the exporter tests: seeded "stripped" models and independent flatbuffer readers.

Nothing here calls the exporter's own encoders: the references are written plainly (loops) so a
bug in the exporter cannot hide behind the same bug in its reference.
"""
from __future__ import annotations

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema


def stripped_model(in_features, layers, g, sparsity, seed, bias=True):
    """A Sequential of Dense layers whose kernels have whole (g, 1) Keras blocks zeroed.

    `layers` is a list of (units, activation), named dense, dense_1, ...; each layer's column blocks of g input rows
    (ragged last block included) are zeroed with probability `sparsity`, seeded.
    """
    rng = np.random.default_rng(seed)
    # Explicit names: Keras' automatic ones keep counting across models in one process.
    names = ["dense"] + [f"dense_{i}" for i in range(1, len(layers))]
    model = keras.Sequential(
        [keras.Input((in_features,))]
        + [keras.layers.Dense(u, activation=a, use_bias=bias, name=n) for (u, a), n in zip(layers, names)]
    )
    for layer in model.layers:
        weights = layer.get_weights()
        k = rng.standard_normal(weights[0].shape).astype(np.float32) * 0.5
        n_in, n_out = k.shape
        n_blocks = -(-n_in // g)
        dead = rng.random((n_blocks, n_out)) < sparsity
        k[np.repeat(dead, g, axis=0)[:n_in]] = 0.0
        new = [k]
        if bias:
            new.append(rng.standard_normal(n_out).astype(np.float32) * 0.1)
        layer.set_weights(new)
    return model


def root(model_bytes):
    return schema.Model.GetRootAs(model_bytes, 0)


def opcode_of(model_bytes, op):
    oc = root(model_bytes).OperatorCodes(op.OpcodeIndex())
    return max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), oc.CustomCode(), oc.Version()


def operators(model_bytes, sg=0):
    s = root(model_bytes).Subgraphs(sg)
    return [s.Operators(i) for i in range(s.OperatorsLength())]


def tensor_array(model_bytes, tensor_index, dtype, sg=0):
    r = root(model_bytes)
    t = r.Subgraphs(sg).Tensors(tensor_index)
    data = r.Buffers(t.Buffer()).DataAsNumpy()
    if isinstance(data, int):  # flatbuffers returns 0 for an absent vector
        return None
    return np.frombuffer(data.tobytes(), dtype=dtype).reshape(t.ShapeAsNumpy())


def custom_op_arrays(model_bytes, op):
    """The named arrays in a TFS_GROUP_SPARSE_FC node's parameter blob (input 1)."""
    from tflite_export import params_blob

    return params_blob.unpack_params(tensor_array(model_bytes, op.Inputs(1), np.uint8))


def tensor(model_bytes, tensor_index, sg=0):
    return root(model_bytes).Subgraphs(sg).Tensors(tensor_index)


def fc_weights(model_bytes, dtype):
    """The weight arrays [out, in] of every FULLY_CONNECTED in op order (dense model)."""
    out = []
    for op in operators(model_bytes):
        if opcode_of(model_bytes, op)[0] == schema.BuiltinOperator.FULLY_CONNECTED:
            out.append(tensor_array(model_bytes, op.Inputs(1), dtype))
    return out


def buffer_file_offsets(model_bytes):
    """Offset in the file of every non-empty buffer's data, found via numpy views (not the exporter)."""
    base = np.frombuffer(model_bytes, dtype=np.uint8).__array_interface__["data"][0]
    r = root(model_bytes)
    offsets = []
    for i in range(r.BuffersLength()):
        data = r.Buffers(i).DataAsNumpy()
        if not isinstance(data, int) and data.size:
            offsets.append(data.__array_interface__["data"][0] - base)
    return offsets


def reference_group_csr(w, g):
    """Group-CSR of w[out, in] by plain loops (FORMAT.md version 2: col_idx holds group indices,
    uint8 when a row has at most 256 groups, else uint16)."""
    out_f, in_f = w.shape
    values, col_idx, row_ptr = [], [], [0]
    for r in range(out_f):
        for c in range(0, in_f, g):
            group = w[r, c : c + g]
            if np.any(group != 0):
                padded = np.zeros(g, dtype=w.dtype)
                padded[: group.size] = group
                values.extend(padded.tolist())
                col_idx.append(c // g)
        row_ptr.append(len(col_idx))
    index_dtype = np.uint8 if (in_f + g - 1) // g <= 256 else np.uint16
    return (np.array(values, dtype=w.dtype), np.array(col_idx, dtype=index_dtype),
            np.array(row_ptr, dtype=np.int32))
