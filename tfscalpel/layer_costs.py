"""Predicted latency, flash, arena and energy of one layer at a sparsity, from a target's profile.

What the budget allocator (:mod:`tfscalpel.budget`) weighs. Every number is a prediction of what
the exporter (``tflite_export``) will write, made from data only (the training side never
imports the deployment side):

- **latency**: the profile's formula (:mod:`tfscalpel.cost_profile`) for dense and for the
  group-sparse custom op at the layer's ``g``; a convolution as the exporter prices it (below).
  The exporter's own rule applies: the sparse format is only used where it is predicted at
  least the profile's ``min_speedup`` faster than dense; elsewhere the layer stays dense and
  costs what dense costs (in every metric);
- **flash**: the bytes the layer's tensors occupy in the ``.tflite`` file, as the formats' size
  accounting counts them (``tflite_export/formats/group_sparse.py``,
  ``tflite_export/params_blob.py``, ``tflite_export/flatbuffer.py`` and FORMAT.md). Custom op:
  its parameter blob (values, one uint8 / uint16 group index per group, int32 row pointers, the
  meta section, bias, for int8 the per-channel requantization arrays, a convolution's geometry,
  the blob's header and 16-byte section alignment, padded to a whole number of its rows).
  Dense: the weights and the bias buffers; int8 adds both tensors' per-channel scale (float32)
  and zero point (int64), as ``export`` quantizes by default (the converter drops an all-zero
  bias, so an untrained layer's file is smaller). Every buffer sits 64-byte aligned after its 4-byte length, so each
  costs ``align64(bytes + 4)`` in the file. What no layer owns (the flatbuffer's tables, tensor
  names, the graph's other constants) is a profile's ``measured[dtype]["model_bytes"]``, added
  once to every model total like ``model_ns`` (``tflite_export.host_profile.measure_flash``
  measures it from the dense export). Energy counts what the kernel reads (no file padding);
- **arena**: the layer's working set, input plus output activations, plus the custom op's
  scratch where the profile's ``"arena"`` entry gives it (TFLite Micro: int8 inputs widened to
  int16 once per node); the model's arena is the largest layer's (the planner reuses memory);
- **energy**: :func:`tfscalpel.energy.layer_energy` with the target's table.

A profile measured on the host for one model (``tflite_export.host_profile``) also has a
``"measured"`` table: a dense layer whose shape is in it is priced from its measured times
(dense, and the custom op per ``g``, linear in stored groups between the measured sparsities),
and the table's ``model_ns`` (the whole model minus its measured layers timed alone: pooling
and the interpreter's per-run cost) is added once to every model total by the allocator. A
convolution is looked up as ``conv:<K>x<filters>@<positions>`` and priced from its measured
times the same way (dense alone, and the whole model's change with it in TFS_GROUP_SPARSE_CONV2D);
in a table without conv entries its dense time is in ``model_ns`` and it costs 0 latency of its
own; other dense layers fall back to the formula.

A convolution is priced with the profile's ``custom_conv`` entry where it has one (Cortex-M:
the exporter's TFS_GROUP_SPARSE_CONV2D against the runtime's own dense CONV_2D), by the formula
the exporter decides by (:func:`tfscalpel.cost_profile.conv_time`); only there is a
convolution's sparse form priced. Elsewhere a conv layer costs its dense figure at every
sparsity, its latency estimated with the dense FC coefficients over its output positions.
"""
import dataclasses
import json
import math
import os

from tfscalpel import energy
from tfscalpel.cost_profile import conv_time, linear_time, unit_cost

METRICS = ("latency", "flash", "arena", "energy")
_META_BYTES = 64  # the custom op's meta section: 16 int32 (FORMAT.md)
_UINT8_MAX_GROUPS = 256  # FORMAT.md version 2: uint8 group indices up to 256 groups per row
_GEOMETRY_BYTES = 64  # TFS_GROUP_SPARSE_CONV2D's geometry section: 16 int32 (FORMAT.md)
_BUFFER_ALIGN = 64  # every buffer's data 64-byte aligned in the file (tflite_export/flatbuffer.py)
_QUANT_BYTES = 12  # per channel of a per-channel int8 tensor: float32 scale + int64 zero point


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """What the cost of one weighted layer depends on."""

    name: str
    kind: str  # "dense" or "conv"
    fan_in: int  # K (kh*kw*cin for a convolution)
    units: int  # N
    positions: int  # output positions (1 for a dense layer on a vector)
    in_values: int  # input activation values per inference
    out_values: int  # output activation values per inference
    #: rows of the custom op's parameter blob (its padding unit): a convolution's output shape
    #: must follow from the blob's leading dims (cout, VALID window extents, strides:
    #: ``tflite_export.formats.group_sparse_conv.blob_dims``); 0 means ``units`` (an FC layer)
    blob_rows: int = 0

    @classmethod
    def of(cls, layer, kind, fan_in):
        """The shape of a built Keras layer inside a functional model."""
        try:
            out_shape = tuple(layer.output.shape[1:])
            in_shape = tuple(layer.input.shape[1:])
        except (AttributeError, ValueError):
            raise ValueError(f"layer {layer.name!r}: a budget needs each priced layer called "
                             "once in the model graph (its input and output shapes); a shared "
                             "layer has several") from None
        if None in out_shape or None in in_shape:
            raise ValueError(f"layer {layer.name!r}: a budget needs static shapes, got input "
                             f"{in_shape} and output {out_shape} (give the model a fixed input "
                             "shape)")
        units = int(out_shape[-1])
        return cls(layer.name, kind, int(fan_in), units,
                   int(math.prod(out_shape[:-1])) if len(out_shape) > 1 else 1,
                   int(math.prod(in_shape)), int(math.prod(out_shape)),
                   _blob_rows(layer, units) if kind == "conv" else 0)

    def groups(self, g):
        """Groups of width ``g`` the dense kernel has (ragged tails count as groups)."""
        return -(-self.fan_in // g) * self.units


@dataclasses.dataclass(frozen=True)
class Costs:
    """Predicted costs of one layer (or a model's sum; arena: the largest layer's)."""

    latency: float  # the profile's time unit (ns or cycles)
    flash: float  # bytes
    arena: float  # bytes
    energy: float  # picojoules

    def __getitem__(self, metric):
        return getattr(self, metric)

    def __add__(self, other):
        return Costs(self.latency + other.latency, self.flash + other.flash,
                     max(self.arena, other.arena), self.energy + other.energy)


ZERO = Costs(0.0, 0.0, 0.0, 0.0)


def _align16(n):
    return -(-n // 16) * 16


def _in_file(nbytes):
    """The bytes one buffer of ``nbytes`` takes in the file: its 4-byte length, then its data at
    the next 64-byte boundary (the padding before the next buffer is counted with this one)."""
    return -(-(nbytes + 4) // _BUFFER_ALIGN) * _BUFFER_ALIGN


def _blob_rows(layer, units):
    """A convolution's blob rows: ``cout * ekh * ekw * stride_h * stride_w`` with ``ek`` the
    VALID window's extent (1 for SAME), as the exporter shapes it."""
    kh, kw = getattr(layer, "kernel_size", (1, 1))
    sh, sw = getattr(layer, "strides", (1, 1))
    dh, dw = getattr(layer, "dilation_rate", (1, 1))
    valid = str(getattr(layer, "padding", "valid")).lower() == "valid"
    ekh, ekw = ((kh - 1) * dh + 1, (kw - 1) * dw + 1) if valid else (1, 1)
    return int(units * ekh * ekw * sh * sw)


@dataclasses.dataclass(frozen=True)
class Option:
    """One choice for a layer: its sparsity, g, the format the exporter will pick, the costs."""

    sparsity: float
    g: int
    format: str  # the exporter's format name: "dense", "custom" (FC) or "custom_conv"
    stored_groups: int
    costs: Costs

    @property
    def label(self):
        """The format as the exporter's reports name it, e.g. ``custom_conv g=8``."""
        return "dense" if self.format == "dense" else f"{self.format} g={self.g}"


class ProfileCosts:
    """Prices layers for one target from its cost profile (a dict in the layout of
    :mod:`tfscalpel.targets`' profiles; measured ones from ``python -m tflite_export.calibrate``
    have it too)."""

    def __init__(self, target, profile=None, dtype=None):
        profile = target.cost_profile if profile is None else profile
        if isinstance(profile, (str, os.PathLike)):  # a JSON profile written by a tool
            with open(profile, encoding="utf-8") as f:
                profile = json.load(f)
        if not isinstance(profile, dict) or "formats" not in profile:
            raise ValueError(
                f"target {target.name!r} has no cost profile to budget with; pass profile= (a "
                "profile dict in tfscalpel/targets.py's layout, e.g. measured on the device "
                "with python -m tflite_export.calibrate)")
        self.profile = profile
        self.name = str(profile.get("name", target.name))
        self.dtype = target.default_dtype if dtype is None else dtype
        dtypes = profile.get("dtypes", ("float32", "int8"))
        if self.dtype not in dtypes or self.dtype not in profile["formats"]["dense"]:
            raise ValueError(f"cost profile {self.name!r} prices {list(dtypes)} only, not "
                             f"dtype {self.dtype!r}")
        self.time_unit = str(profile.get("time_unit", "ns"))
        self.min_speedup = float(profile.get("min_speedup", 1.0))
        #: the conv op's costs (the exporter prices convolutions only where this exists)
        self.conv = profile["formats"].get("custom_conv", {}).get(self.dtype)
        self.energy_table = energy.table_for(profile)
        self.value_bytes = 1 if self.dtype == "int8" else 4
        custom = profile["formats"].get("custom", {}).get(self.dtype, {})
        self.custom_reason = custom.get("unsupported") if custom else "no custom op entry"
        measured = (profile.get("measured") or {}).get(self.dtype) or {}
        self.measured = measured.get("layers") or {}
        #: Added once to every model total (measured profiles: the whole model minus its layers
        #: timed one at a time; 0 for a fitted profile, which leaves the per-run cost out).
        self.model_ns = float(measured.get("model_ns", 0.0))
        #: Flash no layer owns, added once to every model total (the dense export's file minus
        #: its layers' :meth:`_flash`, ``tflite_export.host_profile.measure_flash``; 0 without).
        self.model_bytes = float(measured.get("model_bytes", 0.0))

    def sparse_reason(self, shape):
        """Why ``shape``'s layer cannot be exported sparse on this target, or None."""
        if self.custom_reason:
            return f"the profile has no group-sparse costs for {self.dtype}: {self.custom_reason}"
        if shape.kind == "conv" and not self.conv:
            return "convolutions run dense on this target"
        return None

    def _measured(self, fmt, shape, units, g):
        """The layer's time from the profile's ``"measured"`` table (this host, this shape:
        ``tflite_export.host_profile``), or None where it has none. Between measured stored-group
        counts the time is interpolated linearly; beyond them the nearest segment's slope
        extends it (one point: that point's time per stored group)."""
        if not self.measured:
            return None
        if shape.kind == "conv":
            # tflite_export.host_profile.shape_key; a profile measured before convolutions were
            # (no conv entries) has their dense time in model_ns: they cost 0 of their own
            entry = self.measured.get(f"conv:{shape.fan_in}x{shape.units}@{shape.positions}")
            if entry is None:
                return 0.0
        else:
            entry = self.measured.get(f"{shape.fan_in}x{shape.units}")
        if entry is None:
            return None
        if fmt == "dense":
            return float(entry["dense_ns"])
        points = sorted((float(n), float(t)) for n, t in entry.get("custom", {}).get(str(g), ()))
        if not points:
            return None
        if len(points) == 1:
            return points[0][1] * units / points[0][0]
        k = next((i for i in range(1, len(points) - 1) if units <= points[i][0]), len(points) - 1)
        (n0, t0), (n1, t1) = points[k - 1], points[k]
        return t0 + (t1 - t0) * (units - n0) / (n1 - n0)

    def _latency(self, fmt, shape, units, g=0):
        measured = self._measured(fmt, shape, units, g)
        if measured is not None:
            return max(measured, 0.0)
        if shape.kind == "conv" and self.conv:  # the exporter's formula, its conv op's entry
            return conv_time(self.profile, self.dtype, "dense" if fmt == "dense" else "custom_conv",
                             shape.fan_in, shape.units, shape.positions, g,
                             None if fmt == "dense" else units)
        # Elsewhere a convolution runs dense as one node over every output position: the
        # node's fixed cost once, the per-row and per-unit work per position.
        c = self.profile["formats"][fmt][self.dtype]
        per_position = linear_time(c, shape.units, units, unit_cost(c, g)) - float(c["fixed_ns"])
        return float(c["fixed_ns"]) + shape.positions * per_position

    def _arena(self, shape, fmt):
        base = (shape.in_values + shape.out_values) * self.value_bytes
        scratch = (self.profile.get("arena") or {}).get(fmt, {}).get(self.dtype)
        if scratch:
            base += scratch["per_input"] * shape.fan_in + scratch["fixed"]
        return float(base)

    def _read(self, shape, fmt, groups=0, g=0):
        """Bytes the kernel reads from flash (energy): the weights or the blob, no file padding."""
        n, b = shape.units, self.value_bytes
        int8 = self.dtype == "int8"
        if fmt == "dense":  # weights, bias, int8: per-channel scale (4 B) and zero point (8 B)
            return float(shape.fan_in * n * b + 4 * n + (12 * n if int8 else 0))
        return float(self._blob(shape, groups, g))

    def _blob(self, shape, groups, g):
        """The custom op's parameter blob (tflite_export/params_blob.py, FORMAT.md): a 16-byte
        header and one 16-byte entry per section, each section 16-byte aligned, the whole padded
        to a multiple of the blob's rows; tests/test_budget.py checks it against the exporter."""
        n, b = shape.units, self.value_bytes
        index = 1 if -(-shape.fan_in // g) <= _UINT8_MAX_GROUPS else 2
        sections = [groups * g * b, groups * index, 4 * (n + 1), _META_BYTES, 4 * n]
        sections += [4 * n] * 3 if self.dtype == "int8" else []  # multiplier, shift, scale
        sections += [_GEOMETRY_BYTES] if shape.kind == "conv" else []
        total = _align16(16 + 16 * len(sections)) + sum(_align16(x) for x in sections)
        rows = shape.blob_rows or n
        return -(-total // rows) * rows

    def _flash(self, shape, fmt, groups=0, g=0):
        """Bytes the layer's tensors take in the ``.tflite`` file (module docstring)."""
        n = shape.units
        if fmt != "dense":  # one uint8 blob tensor, no quantization parameters
            return float(_in_file(self._blob(shape, groups, g)))
        weights = _in_file(shape.fan_in * n * self.value_bytes) + _in_file(4 * n)  # + bias
        # int8 per channel: the weights' and the bias' scale and zero point, in the tensor tables
        return float(weights + (2 * _QUANT_BYTES * n if self.dtype == "int8" else 0))

    def dense(self, shape):
        """Costs of the layer left dense."""
        macs = shape.fan_in * shape.units * shape.positions
        flash = self._flash(shape, "dense")
        e = energy.layer_energy(macs, shape.units, shape.positions, self._read(shape, "dense"),
                                self.dtype, self.energy_table)
        return Costs(self._latency("dense", shape, shape.fan_in * shape.units), flash,
                     self._arena(shape, "dense"), e.total)

    def option(self, shape, sparsity, g):
        """The layer pruned to ``sparsity`` of its ``g``-groups (magnitude ranks remove
        ``round(sparsity * groups)``, as :meth:`tfscalpel.SparsityPattern.keep_blocks`), with
        the format the exporter would choose."""
        total = shape.groups(g)
        stored = total - int(round(sparsity * total))
        dense = self.dense(shape)
        if sparsity == 0 or stored == 0 or self.sparse_reason(shape):
            return Option(sparsity, g, "dense", total, dense)
        latency = self._latency("custom", shape, stored, g)
        if dense.latency < self.min_speedup * latency:
            return Option(sparsity, g, "dense", total, dense)  # the exporter keeps it dense
        flash = self._flash(shape, "custom", stored, g)
        e = energy.layer_energy(stored * g * shape.positions, shape.units, shape.positions,
                                self._read(shape, "custom", stored, g), self.dtype,
                                self.energy_table, stored_groups=stored)
        return Option(sparsity, g, "custom_conv" if shape.kind == "conv" else "custom", stored,
                      Costs(latency, flash, self._arena(shape, "custom"), e.total))
