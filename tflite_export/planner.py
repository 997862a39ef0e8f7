"""Per-layer format choice: dense builtin, TFLite block-sparse FC, or TFS_GROUP_SPARSE_FC with some g.

The cost model predicts each candidate's batch-1 time from the actual weights (stored groups or
blocks counted on the TFLite weight `[out, in]`, so quantization zeros count too). The cheapest
candidate wins if it beats dense by the profile's `min_speedup`; otherwise the layer stays dense.
Callers can pin g (`group_size`) or force a format; every decision carries a human reason.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflite_export import group_csr
from tflite_export.cost_model import CostModel, Estimate
from tflite_export.fc_layers import FCLayer

FORMAT_CHOICES = ("auto", "dense", "custom", "builtin_sparse")
# The int8 builtin kernel keeps per-row block counts and block indices in uint8 ("ledger").
_BUILTIN_INT8_MAX_BLOCKS = 255


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with one FC layer, and why."""

    format: str  # "dense" | "custom" | "builtin_sparse"
    g: int  # custom: group width; builtin_sparse: block width; dense: 0
    units: int  # stored groups / blocks; weights for dense
    dense: Estimate
    chosen: Estimate
    reason: str

    @property
    def expected_speedup(self) -> float:
        return self.dense.time_ns / self.chosen.time_ns if self.chosen.time_ns > 0 else 1.0


def builtin_blocks(weights: np.ndarray, block: int) -> int | None:
    """Stored blocks of TFLite's block-sparse FC, or None when the layer cannot use it."""
    if weights.shape[1] % block:
        return None
    return group_csr.count_groups(weights, block)


def _builtin_unusable(layer: FCLayer, block: int) -> str | None:
    if layer.in_features % block:
        return f"in={layer.in_features} is not a multiple of the builtin block {block}"
    if layer.dtype == "int8" and layer.in_features // block > _BUILTIN_INT8_MAX_BLOCKS + 1:
        return f"in={layer.in_features} has more than 256 int8 blocks per row"
    return None


def decide(layer: FCLayer, cost: CostModel, group_size: int | None = None, force: str = "auto") -> Decision:
    """Choose the format for `layer` (see module docstring)."""
    if force not in FORMAT_CHOICES:
        raise ValueError(f"layer {layer.name!r}: format {force!r} not in {FORMAT_CHOICES}")
    if group_size is not None and group_size not in group_csr.ALLOWED_GROUP_SIZES:
        raise ValueError(
            f"layer {layer.name!r}: group size {group_size!r} not in {group_csr.ALLOWED_GROUP_SIZES}"
        )
    if layer.unsupported:
        dense = _dense_only(layer, cost)
        if force in ("custom", "builtin_sparse"):
            raise ValueError(f"layer {layer.name!r}: cannot force {force}: {layer.unsupported}")
        return dataclasses.replace(dense, reason=f"kept dense: {layer.unsupported}")

    dense = cost.dense(layer.dtype, layer.in_features, layer.out_features)
    w = layer.weights
    candidates: list[Estimate] = []
    notes = []
    if force in ("auto", "custom"):
        for g in [group_size] if group_size else group_csr.ALLOWED_GROUP_SIZES:
            n = group_csr.count_groups(w, g)
            if n:  # zero-length tensors are not allowed, so an all-zero layer stays dense
                candidates.append(cost.custom(layer.dtype, g, layer.out_features, n))
    if force in ("auto", "builtin_sparse"):
        why_not = cost.builtin_unsupported(layer.dtype)
        block = 0 if why_not else cost.builtin_block(layer.dtype)
        why_not = why_not or _builtin_unusable(layer, block)
        n = None if why_not else builtin_blocks(w, block)
        if why_not:
            notes.append(f"builtin block-sparse unusable: {why_not}")
        elif n:
            candidates.append(cost.builtin_sparse(layer.dtype, layer.out_features, n))
    if force == "dense":
        return Decision("dense", 0, dense.units, dense, dense, "kept dense: forced by formats=")
    if not candidates:
        if force != "auto":
            raise ValueError(
                f"layer {layer.name!r}: cannot force {force}: "
                + ("; ".join(notes) or "all weights are zero (nothing to store)")
            )
        reason = "kept dense: all weights are zero" if not notes else "kept dense: " + "; ".join(notes)
        return Decision("dense", 0, dense.units, dense, dense, reason)

    best = min(candidates, key=lambda e: e.time_ns)
    speedup = dense.time_ns / best.time_ns
    label = _label(best)
    if force != "auto":
        return Decision(best.format, best.g, best.units, dense, best,
                        f"{label} forced by formats= (predicted {speedup:.2f}x vs dense)")
    if speedup < cost.min_speedup:
        return Decision(
            "dense", 0, dense.units, dense, dense,
            f"kept dense: best sparse choice {label} predicted {speedup:.2f}x vs dense "
            f"(< {cost.min_speedup:.2f}x required on {cost.name})" + "".join(f"; {n}" for n in notes),
        )
    runner_up = [e for e in candidates if e.format != best.format]
    alt = ""
    if runner_up:
        r = min(runner_up, key=lambda e: e.time_ns)
        alt = f"; best {r.format} alternative {_label(r)} {dense.time_ns / r.time_ns:.2f}x"
    pin = " (g pinned by group_sizes=)" if group_size and best.format == "custom" else ""
    return Decision(best.format, best.g, best.units, dense, best,
                    f"{label} predicted {speedup:.2f}x vs dense on {cost.name}{pin}{alt}")


def _label(e: Estimate) -> str:
    return f"custom g={e.g}" if e.format == "custom" else f"builtin block-sparse 1x{e.g}"


def _dense_only(layer: FCLayer, cost: CostModel) -> Decision:
    dtype = layer.dtype if layer.dtype in ("float32", "int8") else "float32"
    dense = cost.dense(dtype, layer.in_features, layer.out_features)
    return Decision("dense", 0, dense.units, dense, dense, "")
