"""TFS_NM_SPARSE_FC: 2:4 structured sparsity, the layout sparse tensor cores consume (FORMAT.md).

Per output row the 2 kept values of each window of 4 inputs, and their 2-bit positions, two per
window, packed as one little-endian bit stream per row. Where a window has fewer than 2
nonzeros, zeros are stored at the lowest free positions (positions strictly increase).

Eligibility is the training side's N:M shape rule (:func:`tfscalpel.nm_rule.nm_shape_reason`,
the one ``tfscalpel.plan`` and ``tfscalpel.prune_2_4`` use), then the weights must be 2:4.
No CPU cost profile prices it (its host kernels run at about dense speed,
``benchmarks/bench_nm_cpu.py``): targets that run it (``gpu-ampere``) rewrite every eligible
layer without a cost model.
"""
from __future__ import annotations

import numpy as np

from tflite_export.formats.base import CustomOpFormat, bias_and_requant, meta_head

N, M = 2, 4


def index_stride(in_features: int) -> int:
    """Bytes of positions per row: 4 bits per window of 4 inputs, rounded up to whole bytes."""
    return (in_features // 4 + 1) // 2


def not_2_4(w: np.ndarray) -> str | None:
    """Why ``w[out, in]`` (``in % 4 == 0``) is not 2:4, naming the first offending window."""
    counts = np.count_nonzero(np.asarray(w).reshape(w.shape[0], -1, M), axis=2)
    if (counts > N).any():
        r, k = np.argwhere(counts > N)[0]
        return f"weights are not 2:4: output {r}, window at input {M * k} has {counts[r, k]} nonzeros"
    return None


def encode_2_4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compress ``w[out, in]`` (2:4 along ``in``) to ``(values[out, in/2], indices uint8[out, stride])``.

    Raises ValueError if ``in % 4 != 0`` or some window holds more than 2 nonzeros.
    """
    from tfscalpel.nm_rule import nm_shape_reason  # here: importing the registry stays light

    w = np.asarray(w)
    out_f, in_f = w.shape
    why = nm_shape_reason("dense", in_f, out_f, m=M) or not_2_4(w)
    if why:
        raise ValueError(why)
    win = w.reshape(out_f, in_f // 4, 4)
    nz = win != 0
    # Positions: the nonzeros first, then the lowest zero positions, 2 per window, ascending.
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


class NMSparseFC(CustomOpFormat):
    name = "2:4"
    title = "2:4 custom op"
    op_name = "TFS_NM_SPARSE_FC"
    op_version = 1
    format_version = 1
    params_suffix = "tfs_nm_params"
    litert_op_table = "tfs_nm_litert_op"
    tflm_registration = None  # no TFLite Micro adapter yet

    def layer_reason(self, layer):
        from tfscalpel.nm_rule import nm_shape_reason

        return (nm_shape_reason("dense", layer.in_features, layer.out_features, m=M)
                or not_2_4(layer.weights))

    def widths(self, layer, cost, pinned=None):
        return (M,)

    def stored_units(self, weights, g):
        return int(weights.size // M)  # windows: each stores 2 values and 4 bits of positions

    def arrays(self, model, layer, g):
        values, indices = encode_2_4(layer.weights)
        meta = meta_head(layer, self.format_version, N, M, 0 if layer.dtype == "float32" else 1,
                         layer.activation)
        arrays = {"values": values.reshape(-1), "indices": indices.reshape(-1), "meta": meta}
        arrays.update(bias_and_requant(model, layer, meta))
        return arrays

    def decode(self, arrays):
        return decode_2_4(arrays["values"], arrays["indices"], int(arrays["meta"][1]))

    def kernel(self, arrays):
        from tflite_export.kernels.nm import NMSparseFC as Kernel

        return Kernel(*[arrays.get(name) for name in self.sections])


FORMAT = NMSparseFC()
