"""int8 requantization parameters, computed exactly the way TFLite's FULLY_CONNECTED Prepare does.

The custom op must be bit-exact with TFLite's int8 FC on the same weights, so every number here
follows TFLite's `kernel_util.cc` / `quantization_util.cc`: the effective scale is computed in
double from the float32 scales, `QuantizeMultiplier` rounds half away from zero, and the
activation clamp quantizes 0 and 6 with a float32 division.
"""
from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127

# TFLite ActivationFunctionType values the custom op accepts (FORMAT.md, meta[6]).
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 3
SUPPORTED_ACTIVATIONS = {ACT_NONE: "none", ACT_RELU: "relu", ACT_RELU6: "relu6"}


def _round_half_away(x: float) -> int:
    # TfLiteRound is std::round: halves go away from zero (Python's round() goes to even).
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite's `QuantizeMultiplier`: `real ~= multiplier * 2**(shift - 31)`, multiplier in [2**30, 2**31).

    Returns `(multiplier, shift)`; shift > 0 is a left shift. Zero maps to (0, 0); exponents
    below -31 flush to (0, 0) and above 30 saturate, as TFLite does.
    """
    if real_multiplier < 0 or not math.isfinite(real_multiplier):
        raise ValueError(f"requantization scale must be finite and >= 0, got {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift


def _channel_scales(weight_scales, out_features: int) -> np.ndarray:
    """Weight scales as float32 ``[out_features]``: one per-tensor scale is replicated."""
    scales = np.asarray(weight_scales, dtype=np.float32).reshape(-1)
    if scales.size == 1:
        scales = np.repeat(scales, out_features)
    if scales.size != out_features:
        raise ValueError(
            f"weight scales: expected 1 or {out_features} (out) values, got {scales.size}"
        )
    return scales


def per_channel_multipliers(
    input_scale: float, weight_scales: np.ndarray, output_scale: float, out_features: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel `(out_multiplier, out_shift)` int32 arrays of length `out_features`.

    `weight_scales` has one entry (per-tensor weights, replicated) or `out_features` entries.
    The scales are float32 in the model; TFLite widens each to double before multiplying.
    """
    scales = _channel_scales(weight_scales, out_features)
    in_s = float(np.float32(input_scale))
    out_s = float(np.float32(output_scale))
    if out_s <= 0:
        raise ValueError(f"output scale must be > 0, got {out_s}")
    mult = np.empty(out_features, dtype=np.int32)
    shift = np.empty(out_features, dtype=np.int32)
    for c, w_s in enumerate(scales):
        mult[c], shift[c] = quantize_multiplier(in_s * float(w_s) / out_s)
    return mult, shift


def per_channel_scales(
    input_scale: float, weight_scales: np.ndarray, output_scale: float, out_features: int
) -> np.ndarray:
    """Per-output-channel float32 requantization scales, as XNNPACK computes them.

    LiteRT's CPU path runs int8 FULLY_CONNECTED through XNNPACK, which requantizes in fp32 with
    `input_scale * kernel_scale[c] / output_scale` evaluated in float32, left to right; the
    custom op must use the very same float to be bit-exact with it.
    """
    scales = _channel_scales(weight_scales, out_features)
    return (np.float32(input_scale) * scales) / np.float32(output_scale)


def activation_range(activation: int, output_scale: float, output_zero_point: int) -> tuple[int, int]:
    """TFLite's `CalculateActivationRangeQuantized` for an int8 output."""
    if activation not in SUPPORTED_ACTIVATIONS:
        raise ValueError(
            f"fused activation {activation} not supported; allowed: {SUPPORTED_ACTIVATIONS}"
        )
    scale = np.float32(output_scale)

    def quantize(f: float) -> int:
        # float32 division, as in TFLite's lambda `zero_point + TfLiteRound(f / scale)`.
        return int(output_zero_point) + _round_half_away(float(np.float32(f) / scale))

    if activation == ACT_RELU:
        return max(INT8_MIN, quantize(0.0)), INT8_MAX
    if activation == ACT_RELU6:
        return max(INT8_MIN, quantize(0.0)), min(INT8_MAX, quantize(6.0))
    return INT8_MIN, INT8_MAX
