"""Reading a target's cost profile (the data in :mod:`tfscalpel.targets`): the one formula.

A profile prices one fully-connected layer at batch 1 as ``fixed_ns + row_ns * out + unit_ns *
units`` per format and dtype, where ``units`` is weights (dense), stored groups (the custom op,
``unit_ns`` one number per group width ``g``) or stored blocks (TFLite's block-sparse FC). The
deployment side's cost model (``tflite_export/cost_model.py``) and the budget allocator
(:mod:`tfscalpel.budget`) both evaluate it here, so a prediction the allocator makes is the
one the exporter decides by.
"""
from collections.abc import Mapping


def unit_cost(coeffs, g=0):
    """The per-unit cost of one (format, dtype) entry at width ``g`` (``unit_ns`` is one number
    or ``{"<g>": cost}``)."""
    unit = coeffs["unit_ns"]
    if isinstance(unit, Mapping):
        if str(g) not in unit:
            raise ValueError(f"the cost profile has no unit_ns for g={g}; it prices "
                             f"g in {sorted(unit, key=int)}")
        return float(unit[str(g)])
    return float(unit)


def linear_time(coeffs, rows, units, unit):
    """``fixed_ns + row_ns * rows + unit * units`` of one profile entry."""
    return float(coeffs["fixed_ns"]) + float(coeffs["row_ns"]) * rows + float(unit) * units
