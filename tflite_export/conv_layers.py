"""The CONV_2D layers of a converted model, and their rewrite into a conv format of the registry.

Each float32 or int8 CONV_2D becomes a :class:`ConvLayer`: an ``FCLayer`` view of its filters
``[cout, kh*kw*cin]`` (the im2col order, along which ``tfscalpel.GroupPrunedConv2D`` prunes groups,
so the FC formats' encoders and the requantization arrays apply unchanged) plus its geometry.
:func:`decide` chooses dense or a conv format (``formats.conv_formats()``) from the target
profile's costs: a conv costs, per output position, one FC over its patch (the profile's
``dense`` / ``custom`` entries) plus im2col (``custom_conv``'s ``position_ns`` per position and
``patch_ns`` per patch byte; the sparse path also widens the patch to int16, ``widen_ns`` per
byte), and the sparse path pays the FC core's fixed cost once per tile of positions.
:func:`rewrite_convs` is the exporter's conv loop; it runs for targets whose profile prices a conv
format (``custom_conv``) and for ``target="host"``, which measures each conv (``host.py``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, group_csr
from tflite_export import formats as formats_registry
from tflite_export.cost_model import CostModel, Estimate
from tflite_export.fc_layers import FCLayer, builtin_code, int8_quantization_reason
from tflite_export.planner import Decision
from tflite_export.quantization import SUPPORTED_ACTIVATIONS
from tflite_export.report import LayerReport
from tfscalpel.cost_profile import conv_time

_TT = schema.TensorType
DIM_MAX = 65535  # the conv op's limit on every geometry field (FORMAT.md)


@dataclasses.dataclass
class ConvLayer(FCLayer):
    """One CONV_2D: ``weights`` are its filters flattened to ``[cout, kh*kw*cin]``
    (``in_features`` = kh*kw*cin, ``out_features`` = cout), plus its geometry (one image, NHWC;
    ``padding`` is TFLite's enum, 0 SAME, 1 VALID; out and pads as TFLite computes them)."""

    in_h: int = 0
    in_w: int = 0
    cin: int = 0
    kh: int = 0
    kw: int = 0
    stride_h: int = 1
    stride_w: int = 1
    dil_h: int = 1
    dil_w: int = 1
    padding: int = 1
    out_h: int = 0
    out_w: int = 0
    pad_top: int = 0
    pad_left: int = 0
    input_zero_point: int = 0

    @property
    def positions(self) -> int:
        """Output positions of one image."""
        return self.out_h * self.out_w

    def geometry(self) -> dict:
        """The im2col geometry (the keys of ``tfs_conv_geom``, pad_value the input zero point)."""
        return dict(in_h=self.in_h, in_w=self.in_w, cin=self.cin, out_h=self.out_h,
                    out_w=self.out_w, kh=self.kh, kw=self.kw, stride_h=self.stride_h,
                    stride_w=self.stride_w, dil_h=self.dil_h, dil_w=self.dil_w,
                    pad_top=self.pad_top, pad_left=self.pad_left, pad_value=self.input_zero_point)


def _axis(in_size: int, k: int, stride: int, dil: int, same: bool) -> tuple[int, int]:
    """TFLite's output size and SAME padding along one axis (ComputePaddingHeightWidth)."""
    eff = (k - 1) * dil + 1
    if same:
        out = -(-in_size // stride)
        return out, max((out - 1) * stride + eff - in_size, 0) // 2
    return ((in_size - eff) // stride + 1 if in_size >= eff else 0), 0


def _name(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _dims(shape) -> list[int]:
    return [] if shape is None else [int(d) for d in shape]


def find_conv2d(model: schema.ModelT) -> list[ConvLayer]:
    """Every CONV_2D in every subgraph, in execution order, each with the reason it must stay
    the dense builtin (``unsupported``), if any."""
    found = []
    for si, sg in enumerate(model.subgraphs):
        for oi, op in enumerate(sg.operators):
            if builtin_code(model.operatorCodes[op.opcodeIndex]) == schema.BuiltinOperator.CONV_2D:
                found.append(_describe(model, si, oi))
    return found


def _describe(model: schema.ModelT, si: int, oi: int) -> ConvLayer:
    sg = model.subgraphs[si]
    op = sg.operators[oi]
    x, w, y = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
    b = int(op.inputs[2]) if len(op.inputs) > 2 else -1
    T = sg.tensors
    wshape = _dims(T[w].shape)
    cout, kh, kw, cin = wshape if len(wshape) == 4 else (0, 0, 0, 0)
    types = (T[x].type, T[w].type, T[y].type)
    dtype = {(_TT.FLOAT32,) * 3: "float32", (_TT.INT8,) * 3: "int8"}.get(
        types, f"input/weight/output types {types}")
    W = None
    if dtype in ("float32", "int8") and len(wshape) == 4 and T[w].sparsity is None:
        W = flatbuffer.tensor_data(model, T[w], np.float32 if dtype == "float32" else np.int8)
    o = op.builtinOptions
    act = int(o.fusedActivationFunction) if o is not None else 0
    layer = ConvLayer(
        subgraph=si, op_index=oi, name=_name(T[w].name), input=x, weight=w, bias=b, output=y,
        in_features=kh * kw * cin, out_features=cout, dtype=dtype, activation=act,
        weights=None if W is None else np.ascontiguousarray(W.reshape(cout, -1)), cin=cin, kh=kh,
        kw=kw)
    layer.unsupported = _geometry(layer, T[x], T[y], o) or _unsupported_reason(model, layer)
    return layer


def _geometry(layer: ConvLayer, xt, yt, o) -> str | None:
    """Fill the layer's geometry from the op; the reason it is unusable, if any."""
    if o is None:
        return "CONV_2D without options"
    xs, ys = _dims(xt.shape), _dims(yt.shape)
    if len(xs) != 4 or len(ys) != 4:
        return f"activations of rank {len(xs)} / output of rank {len(ys)}, expected 4 (NHWC)"
    layer.in_h, layer.in_w = xs[1], xs[2]
    layer.stride_h, layer.stride_w = int(o.strideH), int(o.strideW)
    layer.dil_h, layer.dil_w = int(o.dilationHFactor), int(o.dilationWFactor)
    layer.padding = int(o.padding)
    if layer.padding not in (schema.Padding.SAME, schema.Padding.VALID):
        return f"padding {layer.padding} is neither SAME nor VALID"
    fields = dict(in_h=layer.in_h, in_w=layer.in_w, cin=layer.cin, kh=layer.kh, kw=layer.kw,
                  stride_h=layer.stride_h, stride_w=layer.stride_w, dil_h=layer.dil_h,
                  dil_w=layer.dil_w)
    bad = {k: v for k, v in fields.items() if not 1 <= v <= DIM_MAX}
    if bad:
        return f"geometry {bad} outside [1, {DIM_MAX}] (the conv op's limit)"
    same = layer.padding == schema.Padding.SAME
    layer.out_h, layer.pad_top = _axis(layer.in_h, layer.kh, layer.stride_h, layer.dil_h, same)
    layer.out_w, layer.pad_left = _axis(layer.in_w, layer.kw, layer.stride_w, layer.dil_w, same)
    if [layer.out_h, layer.out_w, layer.out_features] != ys[1:] or xs[3] != layer.cin:
        return f"shapes {xs} -> {ys} do not match the filters and TFLite's output size"
    if xs[0] != ys[0]:
        return f"batch {xs[0]} -> {ys[0]}"
    return None


def _unsupported_reason(model: schema.ModelT, layer: ConvLayer) -> str | None:
    sg = model.subgraphs[layer.subgraph]
    wt = sg.tensors[layer.weight]
    if layer.dtype not in ("int8", "float32"):
        return f"unsupported dtype combination ({layer.dtype}); only float32 or full int8"
    if wt.sparsity is not None:
        return "weights are already sparse-encoded by the converter"
    if layer.weights is None:
        return "filters are not a constant 4-D tensor"
    if layer.activation not in SUPPORTED_ACTIVATIONS:
        return (f"fused activation {layer.activation_name} not supported by the custom op "
                f"(allowed: {sorted(SUPPORTED_ACTIVATIONS.values())})")
    if layer.in_features > group_csr.MAX_IN_FEATURES:
        return f"kh*kw*cin = {layer.in_features} exceeds {group_csr.MAX_IN_FEATURES}"
    if layer.bias >= 0:
        bt, (btype, bdtype) = sg.tensors[layer.bias], ((_TT.INT32, np.int32) if layer.dtype == "int8"
                                                      else (_TT.FLOAT32, np.float32))
        if bt.type != btype or flatbuffer.tensor_data(model, bt, bdtype) is None:
            return f"bias is not a constant {np.dtype(bdtype).name} tensor"
    if layer.dtype == "float32":
        return None
    why = int8_quantization_reason(sg, layer, wt, "filters")
    if why:
        return why
    layer.input_zero_point = int(sg.tensors[layer.input].quantization.zeroPoint[0])
    return None


def keras_conv_layers(keras_model) -> list:
    """Every Keras layer with a 4-D kernel ``(kh, kw, cin, cout)`` (Conv2D and its kin), nested
    models included, in model order."""
    found, stack = [], list(reversed(getattr(keras_model, "layers", [])))
    while stack:
        layer = stack.pop()
        if getattr(layer, "layers", None):
            stack.extend(reversed(layer.layers))
        elif getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) == 4:
            found.append(layer)
    return found


def assign_names(keras_model, model: schema.ModelT, convs: list[ConvLayer]) -> None:
    """Set each conv's name to the Keras layer with a 4-D kernel ``(kh, kw, cin, cout)`` whose
    filters are closest to the conv's dequantized ones (in place; as ``keras_names`` for FCs)."""
    found = keras_conv_layers(keras_model)
    for conv in convs:
        if conv.weights is None:
            continue
        q = model.subgraphs[conv.subgraph].tensors[conv.weight].quantization
        scale = np.asarray(q.scale, np.float32).reshape(-1, 1) if q is not None and q.scale is not None else 1.0
        w = conv.weights.astype(np.float32) * scale
        best, best_err = None, np.inf
        for k in found:
            if tuple(k.kernel.shape) != (conv.kh, conv.kw, conv.cin, conv.out_features):
                continue
            kt = np.transpose(np.asarray(k.kernel), (3, 0, 1, 2)).reshape(conv.out_features, -1)
            err = float(np.mean(np.abs(kt - w)))
            if err < best_err:
                best, best_err = k, err
        if best is not None:
            conv.name = best.name
            found.remove(best)


def conv_formats_priced(cost) -> tuple:
    """The conv formats a cost model prices (none: the exporter leaves CONV_2D alone)."""
    if not isinstance(cost, CostModel):
        return ()
    return tuple(f for f in formats_registry.conv_formats() if cost.prices(f.name))


def _entry(cost: CostModel, layer: ConvLayer) -> dict | None:
    """The profile's ``custom_conv`` coefficients for the layer's dtype (None: not priced)."""
    return cost.profile["formats"].get("custom_conv", {}).get(layer.dtype)


def estimate(cost: CostModel, layer: ConvLayer, g: int, n_groups: int) -> Estimate:
    """Predicted time of the conv op at width ``g`` storing ``n_groups``
    (``tfscalpel.cost_profile.conv_time``: the formula the budget allocator uses too)."""
    return Estimate("custom_conv", g, n_groups, conv_time(
        cost.profile, layer.dtype, "custom_conv", layer.in_features, layer.out_features,
        layer.positions, g, n_groups))


def dense_estimate(cost: CostModel, layer: ConvLayer) -> Estimate:
    """Predicted time of the dense CONV_2D (``tfscalpel.cost_profile.conv_time``: with
    ``custom_conv``'s ``dense_conv`` entry the runtime's own CONV_2D as measured, else im2col
    + one dense FC per output position)."""
    return Estimate("dense", 0, layer.in_features * layer.out_features, conv_time(
        cost.profile, layer.dtype, "dense", layer.in_features, layer.out_features, layer.positions))


def decide(layer: ConvLayer, cost: CostModel, group_size: int | None = None,
           force: str = "auto") -> Decision:
    """Dense or a conv format for ``layer`` (as ``planner.decide`` for FC layers)."""
    fmts = conv_formats_priced(cost)
    choices = ("auto", "dense") + tuple(f.name for f in fmts)
    formats_registry.check_request(layer, force, choices, group_size, " (a conv layer)")
    units = layer.in_features * layer.out_features
    if layer.unsupported:
        d = Estimate("dense", 0, units, 0.0)
        return Decision("dense", 0, units, d, d, f"kept dense: {layer.unsupported}")
    if _entry(cost, layer) is None:
        if force not in ("auto", "dense"):
            raise ValueError(f"layer {layer.name!r}: cannot force {force}: {cost.name} prices no "
                             f"{layer.dtype} convolution")
        d = Estimate("dense", 0, units, 0.0)
        return Decision("dense", 0, units, d, d,
                        f"kept dense: {cost.name} prices no {layer.dtype} convolution")
    dense = dense_estimate(cost, layer)
    if force == "dense":
        return Decision("dense", 0, units, dense, dense, "kept dense: forced by formats=")
    options, notes = formats_registry.candidates(layer, fmts, force, cost, group_size)
    candidates = [estimate(cost, layer, g, n) for _, g, n in options]
    if not candidates:
        if force != "auto":
            raise ValueError(f"layer {layer.name!r}: cannot force {force}: "
                             + ("; ".join(notes) or "all weights are zero"))
        return Decision("dense", 0, units, dense, dense,
                        "kept dense: " + ("; ".join(notes) or "all weights are zero"))
    best = min(candidates, key=lambda e: e.time_ns)
    speedup = dense.time_ns / best.time_ns
    label = formats_registry.get(best.format).label(best.g)
    if force != "auto":
        return Decision(best.format, best.g, best.units, dense, best,
                        f"{label} forced by formats= (predicted {speedup:.2f}x vs dense)")
    if speedup < cost.min_speedup:
        return Decision("dense", 0, units, dense, dense,
                        f"kept dense: best sparse choice {label} predicted {speedup:.2f}x vs dense "
                        f"(< {cost.min_speedup:.2f}x required on {cost.name})")
    pin = " (g pinned by group_sizes=)" if group_size else ""
    return Decision(best.format, best.g, best.units, dense, best,
                    f"{label} predicted {speedup:.2f}x vs dense on {cost.name}{pin}")


def find_for(model: schema.ModelT, cost, keras_model=None) -> list[ConvLayer]:
    """The conv layers the exporter rewrites for ``cost`` (none if it prices no conv format;
    ``cost`` None: every CONV_2D, for a chooser that measures them, the host target), named
    after their Keras layers when ``keras_model`` is given."""
    if cost is not None and not conv_formats_priced(cost):
        return []
    convs = find_conv2d(model)
    if keras_model is not None:
        assign_names(keras_model, model, convs)
    return convs


def rewrite_convs(model: schema.ModelT, convs: list[ConvLayer], choose) -> list[LayerReport]:
    """Decide (``choose(conv) -> Decision``: :func:`decide` on a cost model, or the host
    target's measurement) and rewrite every conv of ``convs`` in place; returns their report
    rows."""
    rows = []
    for conv in convs:
        d = choose(conv)
        dense_b = 0 if conv.weights is None else int(conv.weights.nbytes) + (
            4 * conv.out_features if conv.bias >= 0 else 0)
        stored = dense_b if d.format == "dense" else formats_registry.get(d.format).rewrite(model, conv, d.g)
        density = 1.0 if conv.weights is None else float(np.count_nonzero(conv.weights)) / max(conv.weights.size, 1)
        rows.append(LayerReport(
            layer=conv.name, shape=(conv.in_features, conv.out_features), dtype=conv.dtype,
            activation=conv.activation_name, format=d.format, g=d.g, density=round(density, 6),
            stored_units=d.units, bytes_dense=dense_b, bytes_exported=stored,
            expected_speedup=round(d.expected_speedup, 3), reason=d.reason))
    return rows


__all__ = ["ConvLayer", "find_conv2d", "assign_names", "decide", "estimate", "dense_estimate",
           "find_for", "rewrite_convs"]
