"""Per-layer cost model: which format (dense, TFLite block-sparse, custom group-sparse) is fastest.

Every format's batch-1 time is modelled as `fixed_ns + row_ns * out + unit_ns * units` with the
coefficients of a target's cost profile: data in the target registry (`tfscalpel/targets.py`
says where each number comes from), or a JSON / dict profile of the same layout. The
decision is made at batch 1, one thread: the latency case the product targets. A sparse format
is only chosen when its predicted speedup over dense is at least the profile's `min_speedup`.

A profile may cover only some dtypes (`"dtypes": ["int8"]`; a microcontroller profile measured
on int8 kernels) and may mark TFLite's block-sparse FC as unavailable on its runtime
(`"builtin_sparse": {"int8": {"unsupported": "why"}}`; TFLite Micro has no sparse FC). Its
`time_unit` (default "ns") only labels the numbers: decisions use ratios.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Iterable, Mapping

import numpy as np

from tflite_export.group_csr import ALLOWED_GROUP_SIZES
from tfscalpel import targets

DTYPES = ("float32", "int8")
FORMATS = ("dense", "builtin_sparse", "custom")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A predicted batch-1 time for one layer in one format."""

    format: str  # "dense" | "builtin_sparse" | "custom"
    g: int  # group / block width along the input dimension; 0 for dense
    units: int  # weights (dense), blocks (builtin_sparse) or groups (custom)
    time_ns: float


class CostModel:
    """Predicts per-layer times from a cost profile (a dict in the layout of the profiles in
    `tfscalpel/targets.py`)."""

    def __init__(self, profile: Mapping):
        _validate_profile(profile)
        self.profile = copy.deepcopy(dict(profile))
        self.name = str(self.profile.get("name", "custom-profile"))
        self.min_speedup = float(self.profile.get("min_speedup", 1.0))
        self.dtypes = tuple(self.profile.get("dtypes", DTYPES))
        self.time_unit = str(self.profile.get("time_unit", "ns"))
        self.borrowed_from = self.profile.get("borrowed_from")
        self.source = str(self.profile.get("source", ""))

    def _coeffs(self, fmt: str, dtype: str) -> Mapping:
        if dtype not in self.dtypes:
            raise ValueError(f"target {self.name} has costs for {', '.join(self.dtypes)} only, not "
                             f"{dtype}" + (" (export with quantize='int8')" if self.dtypes == ("int8",) else ""))
        return self.profile["formats"][fmt][dtype]

    def prices(self, fmt: str) -> bool:
        """True if the profile has costs for format ``fmt`` (a target's profile lists the
        formats its runtime runs; the others are no candidates)."""
        return fmt in self.profile["formats"]

    def unsupported(self, fmt: str, dtype: str) -> str | None:
        """Why format ``fmt`` cannot be used on this target for ``dtype``, or None when it can."""
        reason = self._coeffs(fmt, dtype).get("unsupported")
        return None if reason is None else str(reason)

    def estimate(self, fmt: str, dtype: str, g: int, out_features: int, units: int) -> Estimate:
        """Predicted time of format ``fmt`` at width ``g`` storing ``units`` (groups, blocks,
        windows); ``unit_ns`` is one number or one per width (``{"4": ...}``)."""
        c = self._coeffs(fmt, dtype)
        unit = c["unit_ns"][str(g)] if isinstance(c["unit_ns"], Mapping) else c["unit_ns"]
        return Estimate(fmt, g, units, _linear(c, out_features, units, unit))

    def builtin_block(self, dtype: str) -> int:
        """Block width of TFLite's block-sparse FC for `dtype` (4 float32, 16 int8)."""
        return int(self._coeffs("builtin_sparse", dtype)["block"])

    def dense(self, dtype: str, in_features: int, out_features: int) -> Estimate:
        c = self._coeffs("dense", dtype)
        units = in_features * out_features
        return Estimate("dense", 0, units, _linear(c, out_features, units, c["unit_ns"]))

    def builtin_sparse(self, dtype: str, out_features: int, n_blocks: int) -> Estimate:
        return self.estimate("builtin_sparse", dtype, self.builtin_block(dtype), out_features, n_blocks)

    def custom(self, dtype: str, g: int, out_features: int, n_groups: int) -> Estimate:
        return self.estimate("custom", dtype, g, out_features, n_groups)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.profile)


def _linear(c: Mapping, rows: int, units: int, unit_ns: float) -> float:
    return float(c["fixed_ns"]) + float(c["row_ns"]) * rows + float(unit_ns) * units


def _validate_profile(profile: Mapping) -> None:
    dtypes = tuple(profile.get("dtypes", DTYPES)) if isinstance(profile, Mapping) else DTYPES
    if not dtypes or any(d not in DTYPES for d in dtypes):
        raise ValueError(f"invalid target profile: dtypes {dtypes!r} must be a non-empty subset of {DTYPES}")
    try:
        formats = profile["formats"]
        for dtype in dtypes:
            builtin = formats["builtin_sparse"][dtype]
            for key in ("fixed_ns", "row_ns", "unit_ns"):
                float(formats["dense"][dtype][key])
                if "unsupported" not in builtin:
                    float(builtin[key])
            if "unsupported" not in builtin:
                int(builtin["block"])
            custom = formats["custom"][dtype]
            float(custom["fixed_ns"])
            float(custom["row_ns"])
            for g in ALLOWED_GROUP_SIZES:
                float(custom["unit_ns"][str(g)])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"invalid target profile: missing or non-numeric entry {e!r}; expected formats "
            f"{FORMATS} x dtypes {DTYPES} with fixed_ns/row_ns/unit_ns (custom: unit_ns per g "
            f"in {ALLOWED_GROUP_SIZES})"
        ) from None


def priced_targets() -> list[str]:
    """Registered targets that carry a cost profile (what `load` accepts by name)."""
    return [n for n in targets.known_targets() if targets.get_target(n).cost_profile is not None]


def load(target) -> CostModel:
    """A CostModel for `target`: a registered target's name or `HardwareTarget` (its cost
    profile), a path to a JSON profile, a dict, or a CostModel.

    Raises ValueError for an unknown target, one the exporter cannot serve (with its reason), or
    one without a cost profile (``gpu-ampere``: the exporter rewrites its format without one)."""
    if isinstance(target, CostModel):
        return target
    if isinstance(target, targets.HardwareTarget) or (
            isinstance(target, str) and target in targets.known_targets()):
        t = targets.get_target(target)
        if t.export_unsupported:
            raise ValueError(f"target {t.name!r} cannot be exported: {t.export_unsupported}")
        if t.cost_profile is None:
            raise ValueError(f"target {t.name!r} has no cost profile (it exports every eligible "
                             f"layer as {list(t.export_formats)} without a cost model)")
        return CostModel(t.cost_profile)
    if isinstance(target, Mapping):
        return CostModel(target)
    if isinstance(target, str) and target.endswith(".json") and os.path.isfile(target):
        with open(target, encoding="utf-8") as f:
            return CostModel(json.load(f))
    raise ValueError(
        f"unknown target {target!r}; allowed: {priced_targets()}, a path to a JSON profile, a "
        f"profile dict or a CostModel"
    )


def _nonnegative_fit(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: a coefficient the unconstrained fit makes
    negative is fixed at 0 and the rest refitted (clipping after one fit, instead, leaves the
    others fitted to a model that used the negative one)."""
    free = np.ones(a.shape[1], bool)
    coef = np.zeros(a.shape[1])
    while free.any():
        coef[:] = 0.0
        coef[free] = np.linalg.lstsq(a[:, free], y, rcond=None)[0]
        if (coef[free] >= 0).all():
            return coef
        free &= coef > 0
    return coef


def calibrate(base: CostModel, measurements: Iterable[Mapping], name: str | None = None,
              relative: bool = False) -> CostModel:
    """Refit a profile's coefficients from measured timings (e.g. `tflite_export.calibrate`).

    Each measurement is a mapping with `format` ("dense" | "builtin_sparse" | "custom"),
    `dtype` ("float32" | "int8"), `g` (custom only), `out`, `units` (weights, blocks or groups)
    and `time_ns`. Per (format, dtype), `fixed_ns`, `row_ns` and `unit_ns` are fitted by least
    squares (coefficients kept >= 0; dense: fixed and per weight only); for the custom op, one `unit_ns` per measured g with `fixed_ns` and
    `row_ns` shared across g (as the profile layout has them). A (format, dtype) whose
    measurements cannot determine every coefficient keeps the base profile's values.
    `relative`: minimise relative errors (each row weighted by 1 / its time) instead of absolute
    ones, for measurements spanning orders of magnitude (a 100x10 layer next to a 1024x1024 one),
    where absolute least squares lets the large layers' residuals set the fixed cost.
    """
    profile = base.to_dict()
    groups: dict[tuple, list] = {}
    for m in measurements:
        fmt, dtype = m["format"], m["dtype"]
        if fmt not in FORMATS or dtype not in DTYPES:
            raise ValueError(f"measurement {dict(m)}: format must be in {FORMATS}, dtype in {DTYPES}")
        g = int(m.get("g", 0)) if fmt == "custom" else 0
        if fmt == "custom" and g not in ALLOWED_GROUP_SIZES:
            raise ValueError(f"measurement {dict(m)}: g must be in {ALLOWED_GROUP_SIZES}")
        groups.setdefault((fmt, dtype), []).append((g, float(m["out"]), float(m["units"]), float(m["time_ns"])))
    for (fmt, dtype), rows in sorted(groups.items()):
        gs = sorted({r[0] for r in rows})
        # Columns: fixed, per row, then one per-unit column for each g (0 for other g's rows).
        a = np.array([[1.0, out] + [units if g == k else 0.0 for k in gs] for g, out, units, _ in rows])
        y = np.array([r[3] for r in rows])
        if np.linalg.matrix_rank(a) < a.shape[1]:
            continue
        if relative:
            a, y = a / y[:, None], np.ones_like(y)
        if fmt == "dense":
            # A dense layer's work is its weights: a per-row term would let the fit price a
            # 4096-input layer like a 16-input one (it did, on XNNPACK's float32 tiles).
            a[:, 1] = 0.0
            coef = _nonnegative_fit(a[:, [0, 2]], y)
            coef = np.array([coef[0], 0.0, coef[1]])
        else:
            coef = _nonnegative_fit(a, y)
        c = profile["formats"][fmt][dtype]
        c["fixed_ns"], c["row_ns"] = float(coef[0]), float(coef[1])
        if fmt == "custom":
            for k, unit in zip(gs, coef[2:]):
                c["unit_ns"][str(k)] = float(unit)
        else:
            c["unit_ns"] = float(coef[2])
    profile["name"] = name or f"{base.name}-calibrated"
    profile["source"] = "calibrated from measured kernel timings"
    return CostModel(profile)
