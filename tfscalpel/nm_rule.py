"""The N:M (2:4) shape rule: can a layer's weights hold N:M windows that hardware runs?

A sparse tensor core multiplies ``A[M, K] * B[K, N]`` with the windows of ``m`` running along the
reduction dimension ``K``. For a Dense layer ``K`` is its input width. For a Conv2D the kernel
``(kh, kw, cin, cout)`` is flattened row-major to ``kh*kw*cin`` (the im2col order of
:mod:`tfscalpel.patterns`), so windows run along ``cin`` inside one ``(kh, kw)`` position exactly
when ``cin % m == 0``; with any other ``cin`` a window would straddle two kernel positions,
which sparse tensor cores (TensorRT's 2:4 convolutions: windows along C) cannot run. A grouped
or depthwise convolution is not one GEMM.

This is the single rule: the planner (``tfscalpel.plan``), ``tfscalpel.prune_2_4``, and the
deployment side's N:M format (exporter and validator) all call :func:`nm_shape_reason`.
It depends on nothing but shapes, so both sides can import it.
"""
from __future__ import annotations

KINDS = ("dense", "conv")


def nm_shape_reason(kind: str, k: int, out: int, groups: int = 1, m: int = 4,
                    k_multiple: int | None = None, out_multiple: int = 1) -> str | None:
    """Why a layer cannot be N:M, or None when it can.

    Args:
        kind: ``"dense"`` or ``"conv"``.
        k: the axis the windows run along: a Dense layer's inputs, a Conv2D's input channels.
        out: output units / filters.
        groups: a convolution's ``groups`` (1 for a plain convolution).
        m: the window length (4 for 2:4).
        k_multiple, out_multiple: stricter multiples some libraries want (apex ASP's fp16 rule
            is ``k_multiple=16, out_multiple=8``); ``k_multiple`` defaults to ``m``.
    """
    if kind not in KINDS:
        raise ValueError(f"nm_shape_reason: kind must be one of {KINDS}, got {kind!r}")
    k_multiple = m if k_multiple is None else k_multiple
    if kind == "conv" and groups != 1:
        return f"grouped convolution (groups={groups}) is not one GEMM"
    if k % m:
        if kind == "conv":
            return f"cin = {k} is not a multiple of {m}: windows would straddle kernel positions"
        return f"in = {k} is not a multiple of {m}"
    if k % k_multiple:
        return f"K={k} not a multiple of {k_multiple}"
    if out % out_multiple:
        return f"out={out} not a multiple of {out_multiple}"
    return None


def keras_nm_reason(layer, m: int = 4, k_multiple: int | None = None,
                    out_multiple: int = 1) -> str | None:
    """:func:`nm_shape_reason` for a built Keras Dense / Conv2D (pruned twins included)."""
    shape = tuple(int(d) for d in layer.kernel.shape)
    kind = "dense" if len(shape) == 2 else "conv"
    return nm_shape_reason(kind, shape[-2], shape[-1], int(getattr(layer, "groups", 1) or 1), m,
                           k_multiple, out_multiple)
