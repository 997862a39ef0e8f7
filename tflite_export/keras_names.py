"""Give each FULLY_CONNECTED of a converted model the name of the Keras layer it came from.

The converter's tensor names carry uniquified name scopes (`dense_1_2/MatMul`), not reliable layer
names, so FCs are matched by their weights instead: a Keras layer with a 2-D `kernel` of shape
`(in, out)` whose transpose is closest to the FC's (dequantized) weight `[out, in]`. An
EinsumDense kernel of higher rank (``cde`` in ``abc,cde->abde``) converts to an FC over its
flattened contraction and output axes, so it is compared reshaped to `(in, out)`.
"""
from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export.fc_layers import FCLayer


def _kernel_layers(model) -> list:
    """Every layer (nested models included) with a `kernel` of rank >= 2, in model order."""
    found, stack = [], list(reversed(getattr(model, "layers", [])))
    while stack:
        layer = stack.pop()
        sub = getattr(layer, "layers", None)
        if sub:
            stack.extend(reversed(sub))
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) >= 2:
            found.append(layer)
    return found


def _float_weights(tflite: schema.ModelT, fc: FCLayer) -> np.ndarray | None:
    if fc.weights is None:
        return None
    if fc.weights.dtype == np.float32:
        return fc.weights
    q = tflite.subgraphs[fc.subgraph].tensors[fc.weight].quantization
    scale = np.asarray(q.scale, dtype=np.float32).reshape(-1, 1) if q is not None and q.scale is not None else 1.0
    return fc.weights.astype(np.float32) * scale


def assign_names(keras_model, tflite: schema.ModelT, fcs: list[FCLayer]) -> None:
    """Set `fc.name` to the matching Keras layer's name where one matches (in place)."""
    unused = _kernel_layers(keras_model)
    for fc in fcs:
        w = _float_weights(tflite, fc)
        if w is None:
            continue
        best, best_err = None, np.inf
        for layer in unused:
            kernel = _as_in_out(layer.kernel, fc.in_features, fc.out_features)
            if kernel is None:
                continue
            err = float(np.mean(np.abs(kernel.T - w)))
            if err < best_err:
                best, best_err = layer, err
        if best is not None:
            fc.name = best.name
            unused.remove(best)


def _as_in_out(kernel, in_f: int, out_f: int) -> np.ndarray | None:
    """The kernel as `(in, out)`: as is when 2-D, else when its leading axes multiply to `in`
    and the rest to `out` (the converter's flattening of an EinsumDense); None otherwise."""
    shape = tuple(int(d) for d in kernel.shape)
    if len(shape) == 2:
        return np.asarray(kernel) if shape == (in_f, out_f) else None
    for split in range(1, len(shape)):
        if int(np.prod(shape[:split])) == in_f and int(np.prod(shape[split:])) == out_f:
            return np.asarray(kernel).reshape(in_f, out_f)
    return None
