"""Reading a target's cost profile (the data in :mod:`tfscalpel.targets`): the one formula.

A profile prices one fully-connected layer at batch 1 as ``fixed_ns + row_ns * out + unit_ns *
units`` per format and dtype, where ``units`` is weights (dense), stored groups (the custom op,
``unit_ns`` one number per group width ``g``) or stored blocks (TFLite's block-sparse FC), and,
where it has a ``custom_conv`` entry (Cortex-M, x86), one convolution (:func:`conv_time`). The
deployment side's cost model (``tflite_export/cost_model.py``, ``tflite_export/conv_layers.py``)
and the budget allocator (:mod:`tfscalpel.budget`, :mod:`tfscalpel.layer_costs`) both evaluate
it here, so a prediction the allocator makes is the one the exporter decides by.
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


#: TFS_GSCONV_TILE_BYTES (tflite_export/kernels): the conv op runs im2col on as many output
#: positions per FC-core call as fit in this many patch bytes; the FC core's fixed cost is paid
#: once per tile, so the cost formula needs it (and the training side cannot import the kernels).
CONV_TILE_BYTES = 4096
#: TFS_GSCONV_HOST_TILE: the host runtime's adapter runs at least this many positions per tile,
#: so that x86 reaches the SpMM kernels (an entry with ``host_tile`` is priced at it).
CONV_HOST_TILE = 32


def conv_tile(positions, fan_in, elem_size=1, host=False):
    """Output positions per FC-core call of the conv op (at least 1, at most all): what fits
    :data:`CONV_TILE_BYTES` of patches of ``elem_size``-byte elements; ``host``: at least
    :data:`CONV_HOST_TILE`."""
    tile = max(1, CONV_TILE_BYTES // (int(fan_in) * int(elem_size)))
    return min(int(positions), max(tile, CONV_HOST_TILE) if host else tile)


def filters_with_groups(fan_in, out, g, units):
    """The expected number of the ``out`` filters that store at least one of ``units`` groups of
    ``g`` (of ``ceil(fan_in / g)`` per filter) were the stored groups spread at random:
    ``out * (1 - (1 - units / total) ** per_filter)``. Both the allocator (which knows only a
    sparsity) and the exporter price rows this way, so they agree; magnitude pruning is not
    random, which the fit to measured layers absorbs (benchmarks/mcu/bench_mcu.py --fit)."""
    per_filter = -(-int(fan_in) // int(g))
    total = per_filter * int(out)
    return int(out) * (1.0 - (1.0 - min(float(units), total) / total) ** per_filter)


def fc_time(profile, dtype, fmt, fan_in, out, g=0, units=None):
    """One fully-connected layer at batch 1 in format ``fmt`` (``units``: stored groups or
    blocks; dense: every weight)."""
    c = profile["formats"][fmt][dtype]
    units = int(fan_in) * int(out) if units is None else units
    return linear_time(c, out, units, unit_cost(c, g))


def conv_time(profile, dtype, fmt, fan_in, out, positions, g=0, units=None):
    """One convolution (``fan_in`` = kh*kw*cin, ``out`` filters, ``positions`` output positions)
    from the profile's ``custom_conv`` entry.

    ``fmt="dense"``: with ``dense_conv`` (the runtime's own CONV_2D measured, e.g. CMSIS-NN's on
    TFLite Micro), per position ``position_ns + patch_ns * K + output_ns * out + mac_ns * K *
    out``; without it, im2col plus one dense FC per position.

    ``fmt="custom_conv"`` (TFS_GROUP_SPARSE_CONV2D storing ``units`` groups of ``g``): im2col
    and the kernel's other per-position work (``position_ns`` per position, ``patch_ns`` per
    patch byte), the int16 widening of the patches (``widen_ns`` per byte), the FC core's fixed
    cost once per tile of positions (``tile_ns`` where the entry has it; tiles of
    :func:`conv_tile`), and per position ``row_ns * rows + unit_ns[g] * units``: the
    conv kernel's own per-row / per-group costs where ``unit_ns`` lists ``g`` (it shares each
    weight decode between two positions, so a group costs less than in a batch-1 FC), else the
    FC custom op's. ``rows`` are the filters that store a group (:func:`filters_with_groups`:
    the kernel writes the others once per tile, not per position)."""
    conv = profile["formats"]["custom_conv"][dtype]
    patch = positions * fan_in
    im2col = float(conv["position_ns"]) * positions + float(conv["patch_ns"]) * patch
    if fmt == "dense":
        d = conv.get("dense_conv")
        if d is None:
            return positions * fc_time(profile, dtype, "dense", fan_in, out) + im2col
        return positions * (float(d["position_ns"]) + float(d["patch_ns"]) * fan_in
                            + float(d["output_ns"]) * out + float(d["mac_ns"]) * fan_in * out)
    # tile_ns, where the entry has it, replaces the FC entry's fixed cost per call (on a CPU the
    # runtime's per-node cost sits in the FC entry's fixed_ns, and a conv pays it once, not per tile)
    fc_fixed = float(profile["formats"]["custom"][dtype]["fixed_ns"])
    fixed = float(conv.get("tile_ns", fc_fixed))
    conv_units = conv.get("unit_ns", {})
    if str(g) in conv_units:
        rows = filters_with_groups(fan_in, out, g, units)
        per_position = float(conv["row_ns"]) * rows + float(conv_units[str(g)]) * units
    else:
        per_position = fc_time(profile, dtype, "custom", fan_in, out, g, units) - fc_fixed
    elem_size = 1 if dtype == "int8" else 4
    tiles = -(-positions // conv_tile(positions, fan_in, elem_size, bool(conv.get("host_tile"))))
    return tiles * fixed + positions * per_position + im2col + float(conv["widen_ns"]) * patch
