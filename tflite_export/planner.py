"""Per-layer format choice: dense builtin, or a format of the registry (`tflite_export.formats`).

Every registered format the target's profile prices is a candidate, at each width it offers.
The cost model predicts each candidate's batch-1 time from the actual weights (stored groups or
blocks counted on the TFLite weight `[out, in]`, so quantization zeros count too). The cheapest
candidate wins if it beats dense by the profile's `min_speedup`; otherwise the layer stays dense.
Callers can pin g (`group_size`) or force a format; every decision carries a human reason.
"""
from __future__ import annotations

import dataclasses

from tflite_export import formats
from tflite_export.cost_model import CostModel, Estimate
from tflite_export.fc_layers import FCLayer

#: What ``export(formats=...)`` may force per layer: "auto", "dense" or a registered format.
FORMAT_CHOICES = ("auto", "dense") + formats.names()


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with one FC layer, and why."""

    format: str  # "dense" or a registered format's name ("custom", "builtin_sparse", "2:4")
    g: int  # custom: group width; builtin_sparse: block width; dense and 2:4: 0
    units: int  # stored groups / blocks / windows; weights for dense
    dense: Estimate
    chosen: Estimate
    reason: str

    @property
    def expected_speedup(self) -> float:
        return self.dense.time_ns / self.chosen.time_ns if self.chosen.time_ns > 0 else 1.0


def decide(layer: FCLayer, cost: CostModel, group_size: int | None = None, force: str = "auto") -> Decision:
    """Choose the format for `layer` (see module docstring)."""
    formats.check_request(layer, force, FORMAT_CHOICES, group_size)
    if layer.unsupported:
        dense = _dense_only(layer, cost)
        return dataclasses.replace(dense, reason=f"kept dense: {layer.unsupported}")

    dense = cost.dense(layer.dtype, layer.in_features, layer.out_features)
    # a profile prices the formats its target runs
    priced = [fmt for fmt in formats.all_formats() if cost.prices(fmt.name)]
    options, notes = formats.candidates(layer, priced, force, cost, group_size,
                                        refusal=lambda fmt: cost.unsupported(fmt.name, layer.dtype))
    candidates = [cost.estimate(fmt.name, layer.dtype, g, layer.out_features, n)
                  for fmt, g, n in options]
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
    return formats.get(e.format).label(e.g)


def decide_fixed(layer: FCLayer, fmt, force: str = "auto") -> Decision:
    """Without a cost model: ``fmt`` wherever the layer is eligible, else dense with the reason
    (the 2:4 export for sparse tensor cores, whose speed a CPU profile cannot predict).
    ``force``: "auto", "dense" or ``fmt.name`` (which raises where the layer is not eligible)."""
    if force not in ("auto", "dense", fmt.name):
        raise ValueError(f"layer {layer.name!r}: format {force!r} not in "
                         f"{('auto', 'dense', fmt.name)} (the target exports only {fmt.name})")
    units = layer.in_features * layer.out_features
    dense = Estimate("dense", 0, units, 0.0)
    if force == "dense":
        return Decision("dense", 0, units, dense, dense, "kept dense: forced by formats=")
    why = fmt.eligible(layer)
    if why and force != "auto":
        raise ValueError(f"layer {layer.name!r}: cannot force {force}: {why}")
    if why:
        return Decision("dense", 0, units, dense, dense, why)
    n = fmt.stored_units(layer.weights, 0)
    return Decision(fmt.name, 0, n, dense, Estimate(fmt.name, 0, n, 0.0),
                    f"{fmt.label(0)}: every eligible layer (no cost model)")


def _dense_only(layer: FCLayer, cost: CostModel) -> Decision:
    dtype = layer.dtype if layer.dtype in ("float32", "int8") else "float32"
    dense = cost.dense(dtype, layer.in_features, layer.out_features)
    return Decision("dense", 0, dense.units, dense, dense, "")
