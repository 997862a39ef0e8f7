"""Give each FULLY_CONNECTED of a converted model the name of the Keras layer it came from.

The converter's tensor names carry uniquified name scopes (`dense_1_2/MatMul`), not reliable layer
names, so FCs are matched by their weights instead. A candidate is every Keras layer whose kernel
can become an FC weight `[out, in]`: a Dense kernel `(in, out)` transposed, and an EinsumDense
kernel flattened along its contraction axes (MultiHeadAttention's projections included, named
`<attention layer>/<projection>`, e.g. `mha/query`). Pruned twins count with their masks applied.

A name is given only on a match within the FC's own precision: every weight within half a
quantization step of the Keras value (int8, per output row), or within a relative 1e-5 of the
largest weight (float32). An FC that no layer matches keeps its tensor name. An FC that several
*different* layers match is an error (ValueError naming the op and the layers), never a guess:
per-layer formats and report rows must not land on the wrong layer. One layer may match several
FCs (a layer called more than once).
"""
from __future__ import annotations

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export.fc_layers import FCLayer
from tfscalpel.attention_layers import einsum_fan_in_ndim

#: float32 FCs: allowed deviation, relative to the largest weight (converter rounding only).
FLOAT_RTOL = 1e-5


def _numpy_kernel(layer) -> np.ndarray:
    masked = getattr(layer, "_numpy_masked_kernel", None)
    return np.asarray(masked() if masked is not None else keras.ops.convert_to_numpy(layer.kernel),
                      dtype=np.float32)


def _fc_weight(layer) -> np.ndarray | None:
    """``layer``'s kernel as an FC weight ``[out, in]``, or None if it cannot be one."""
    kernel = _numpy_kernel(layer)
    if isinstance(layer, keras.layers.EinsumDense):
        try:
            k = einsum_fan_in_ndim(layer.equation, layer.name)
        except ValueError:  # the contraction is not a block of axes: not one FC weight
            return None
        if k < 0:  # contraction last: the kernel already is [out..., in...]
            return kernel.reshape(-1, int(np.prod(kernel.shape[k:])))
        return kernel.reshape(int(np.prod(kernel.shape[:k])), -1).T
    if kernel.ndim != 2:
        return None
    return kernel.T


def _candidates(model) -> list[tuple[str, np.ndarray]]:
    """``(name, FC weight [out, in])`` of every layer (nested models and MultiHeadAttention
    projections included) that can become an FC, in model order."""
    found, stack = [], [("", layer) for layer in reversed(getattr(model, "layers", []))]
    while stack:
        prefix, layer = stack.pop()
        name = prefix + layer.name
        sub = getattr(layer, "layers", None)
        if sub and isinstance(layer, keras.Model):
            stack.extend(("", s) for s in reversed(sub))
            continue
        if isinstance(layer, keras.layers.MultiHeadAttention):
            projections = [getattr(layer, a, None) for a in (
                "_query_dense", "_key_dense", "_gate_dense", "_value_dense", "_output_dense")]
            stack.extend((f"{name}/", p) for p in reversed(projections) if p is not None)
            continue
        if getattr(layer, "kernel", None) is None:
            continue
        w = _fc_weight(layer)
        if w is not None:
            found.append((name, w))
    return found


def _quantization_scale(tflite: schema.ModelT, fc: FCLayer) -> np.ndarray | None:
    q = tflite.subgraphs[fc.subgraph].tensors[fc.weight].quantization
    if q is None or q.scale is None:
        return None
    return np.asarray(q.scale, dtype=np.float32).reshape(-1, 1)


def _float_weights(tflite: schema.ModelT, fc: FCLayer):
    """``(weights [out, in] as float32, allowed deviation per row)`` or (None, None)."""
    if fc.weights is None:
        return None, None
    if np.issubdtype(fc.weights.dtype, np.floating):
        w = fc.weights.astype(np.float32)
        rtol = FLOAT_RTOL if fc.weights.dtype == np.float32 else 2.0 ** -10  # float16's step
        return w, rtol * float(np.max(np.abs(w), initial=0.0)) + 1e-12
    scale = _quantization_scale(tflite, fc)
    scale = np.float32(1.0) if scale is None else scale
    # Rounding to the nearest step is off by at most half a step; a little slack for the
    # converter's float arithmetic.
    return fc.weights.astype(np.float32) * scale, 0.5 * scale * (1 + 1e-3) + 1e-12


def assign_names(keras_model, tflite: schema.ModelT, fcs: list[FCLayer]) -> None:
    """Set `fc.name` to the matching Keras layer's name where exactly one layer matches (in
    place; see the module docstring).

    Raises:
        ValueError: if an FC's weights match several different Keras layers.
    """
    candidates = _candidates(keras_model)
    for fc in fcs:
        w, tolerance = _float_weights(tflite, fc)
        if w is None:
            continue
        matches = [name for name, k in candidates
                   if k.shape == w.shape and np.all(np.abs(k - w) <= tolerance)]
        if len(matches) > 1:
            raise ValueError(
                f"FULLY_CONNECTED op {fc.op_index} (subgraph {fc.subgraph}, weight "
                f"[{fc.out_features}, {fc.in_features}]) matches the weights of several Keras "
                f"layers: {matches}; its name is ambiguous, so per-layer formats and the report "
                "cannot be attributed. Give the layers distinct weights (train or initialise "
                "them differently)")
        if matches:
            fc.name = matches[0]
