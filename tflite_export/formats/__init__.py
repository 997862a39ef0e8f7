"""The format registry: every sparse format a FULLY_CONNECTED or CONV_2D layer can be exported in.

One module per format (``group_sparse``, ``nm``, ``block_sparse``, ``group_sparse_conv``; the
shared parts in ``base``), one line per format in :data:`FORMATS` (FULLY_CONNECTED) or
:data:`CONV_FORMATS` (CONV_2D, priced by ``tflite_export.conv_layers``) below. The exporter's rewrite, the cost model's
candidates (``tflite_export.planner``), the validator (``tflite_export.check``), the C-array
writer (``tflite_export.c_array``) and the runtime's op registration loop over this registry::

    from tflite_export import formats
    for fmt in formats.custom_ops():          # what a runtime registers
        fmt.op_name, fmt.op_version, fmt.litert_op_table, fmt.tflm_registration
    formats.get("2:4").eligible(fc_layer, target)   # None, or why not

A new format: a module with a :class:`~tflite_export.formats.base.SparseFormat` subclass and
its ``FORMAT`` instance, one line in :data:`FORMATS` (candidate order: ties go to the earlier).
"""
from __future__ import annotations

from tflite_export import group_csr
from tflite_export.formats import block_sparse, group_sparse, group_sparse_conv, nm
from tflite_export.formats.base import CustomOpFormat, SparseFormat

#: Every format, in the order the cost model prices them.
FORMATS: tuple[SparseFormat, ...] = (
    group_sparse.FORMAT,
    block_sparse.FORMAT,
    nm.FORMAT,
)

#: The formats of CONV_2D layers (int8): the conv planner's candidates (``conv_layers``).
CONV_FORMATS: tuple[SparseFormat, ...] = (
    group_sparse_conv.FORMAT,
)

__all__ = ["FORMATS", "CONV_FORMATS", "conv_formats", "SparseFormat", "CustomOpFormat", "all_formats", "names", "get",
           "custom_ops", "by_op_name"]


def all_formats() -> tuple[SparseFormat, ...]:
    """Every registered format of FULLY_CONNECTED layers (the FC planner's candidates)."""
    return FORMATS


def conv_formats() -> tuple[SparseFormat, ...]:
    """Every registered format of CONV_2D layers."""
    return CONV_FORMATS


def check_request(layer, force: str, choices: tuple, group_size: int | None = None,
                  kind: str = "") -> None:
    """The exporter's checks of a layer's ``formats=`` / ``group_sizes=`` values, before any
    decision (cost model or measured, FC or conv): ``force`` one of ``choices``, ``group_size``
    an allowed width, and no forced sparse format on a layer that cannot take one
    (``layer.unsupported``). ValueError naming the layer otherwise; ``kind`` ends the first
    message (e.g. " (a conv layer)")."""
    if force not in choices:
        raise ValueError(f"layer {layer.name!r}: format {force!r} not in {choices}{kind}")
    if group_size is not None and group_size not in group_csr.ALLOWED_GROUP_SIZES:
        raise ValueError(f"layer {layer.name!r}: group size {group_size!r} not in "
                         f"{group_csr.ALLOWED_GROUP_SIZES}")
    if layer.unsupported and force not in ("auto", "dense"):
        raise ValueError(f"layer {layer.name!r}: cannot force {force}: {layer.unsupported}")


def candidates(layer, fmts, force: str, cost, group_size: int | None = None,
               refusal=None) -> tuple[list, list]:
    """``([(format, g, stored units), ...], notes)``: every width of every format of ``fmts``
    that ``layer`` can take (``force``: "auto" or one format's name), the exporter's one walk
    over formats and widths for its cost-model and measured decisions (FC and conv alike).
    ``refusal(fmt)``: an extra reason to skip a format (e.g. a profile that does not price it
    for the layer's dtype). ``notes`` say why a format was unusable; an all-zero layer stores
    nothing (zero-length tensors are not allowed), so it yields no candidate and no note."""
    options, notes = [], []
    for fmt in fmts:
        if force not in ("auto", fmt.name):
            continue
        why_not = (refusal(fmt) if refusal else None) or fmt.eligible(layer)
        for g in () if why_not else fmt.widths(layer, cost, group_size):
            why_not = fmt.width_reason(layer, g)
            n = None if why_not else fmt.stored_units(layer.weights, g)
            if n:
                options.append((fmt, g, n))
        if why_not:
            notes.append(f"{fmt.title} unusable: {why_not}")
    return options, notes


def names() -> tuple[str, ...]:
    """The FC formats' names (the report's labels and ``export(formats=...)`` values of FC
    layers; a conv layer takes "auto", "dense" or a name of :func:`conv_formats`)."""
    return tuple(fmt.name for fmt in FORMATS)


def get(name: str) -> SparseFormat:
    """The format called ``name``; ValueError listing the known ones otherwise."""
    for fmt in FORMATS + CONV_FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown format {name!r}; known: {[f.name for f in FORMATS + CONV_FORMATS]}")


def custom_ops() -> tuple[CustomOpFormat, ...]:
    """The formats that are custom operators (what a runtime must register)."""
    return tuple(fmt for fmt in FORMATS + CONV_FORMATS if isinstance(fmt, CustomOpFormat))


def by_op_name(op_name: str | None) -> CustomOpFormat | None:
    """The custom-op format whose operator is called ``op_name``, or None."""
    for fmt in custom_ops():
        if fmt.op_name == op_name:
            return fmt
    return None
