"""``strip(model)``: a plain Keras model with the masks baked in, dead nodes removed, and a
per-layer report."""
import dataclasses
import math

import keras
import numpy as np

from tfscalpel import energy
from tfscalpel.attention_layers import GatedMultiHeadAttention, einsum_fan_in_ndim
from tfscalpel.layer_handlers import get_handler
from tfscalpel.layers import PrunableMixin, kernel_matrix


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """Sparsity and storage of one stripped layer.

    The kernel is viewed as TFLite stores it, ``rows = units`` (output neurons or filters) by
    ``cols = fan_in``. Byte counts assume float32 values:

    - dense: 4 bytes per weight;
    - CSR: ``2*nnz + rows + 1`` numbers of 4 bytes (values, column indices, row pointers);
    - group-CSR: ``g`` values per stored group, one group index per group (uint8 when a row has
      at most 256 groups, else uint16; the exporter's format version 2), and ``rows + 1`` int32
      row pointers.
    """

    name: str
    pattern: str
    group_size: int
    rows: int
    cols: int
    nonzero: int
    nonzero_groups: int
    total_groups: int
    #: Output nodes (units or filters) kept by node pruning, and before it; None when the
    #: model had no MaskLayer.
    nodes_kept: int = None
    nodes_total: int = None
    #: Output positions (a convolution's output pixels; 1 for a dense layer): energy's MACs.
    positions: int = 1

    def energy_pj(self, fmt="group_csr"):
        """Energy per inference in picojoules, float32, Horowitz's 45 nm table
        (:mod:`tfscalpel.energy`): ``fmt`` "dense" or "group_csr" (stored groups, index
        overhead included)."""
        if fmt == "dense":
            return energy.layer_energy(self.rows * self.cols * self.positions, self.rows,
                                       self.positions, self.bytes_dense, "float32").total
        if fmt != "group_csr":
            raise ValueError(f"energy_pj: fmt must be 'dense' or 'group_csr', got {fmt!r}")
        return energy.layer_energy(self.nonzero_groups * self.group_size * self.positions,
                                   self.rows, self.positions, self.bytes_group_csr, "float32",
                                   stored_groups=self.nonzero_groups).total

    @property
    def density(self):
        return self.nonzero / (self.rows * self.cols)

    @property
    def bytes_dense(self):
        return 4 * self.rows * self.cols

    @property
    def bytes_csr(self):
        return 4 * (2 * self.nonzero + self.rows + 1)

    @property
    def bytes_group_csr(self):
        index_bytes = 1 if -(-self.cols // self.group_size) <= 256 else 2
        return (4 * self.group_size * self.nonzero_groups + index_bytes * self.nonzero_groups
                + 4 * (self.rows + 1))


@dataclasses.dataclass(frozen=True)
class StripReport:
    """Per-layer report of :func:`strip`; ``print()`` it for a table."""

    layers: tuple

    def group_sizes(self):
        """``{layer name: g}``, the hint the TFLite exporter takes (weight-pruned layers only;
        layers that were only node-pruned are plain dense layers)."""
        return {r.name: r.group_size for r in self.layers if r.pattern != "dense"}

    def to_dicts(self):
        return [
            {**dataclasses.asdict(r), "density": r.density, "bytes_dense": r.bytes_dense,
             "bytes_csr": r.bytes_csr, "bytes_group_csr": r.bytes_group_csr,
             "energy_dense_pj": r.energy_pj("dense"), "energy_group_csr_pj": r.energy_pj()}
            for r in self.layers
        ]

    def __str__(self):
        nodes = any(r.nodes_total is not None for r in self.layers)
        # names like "mha/attention_output" are wider than the usual 14 columns
        w = max([14] + [len(r.name) + 1 for r in self.layers])
        head = (f"{'layer':<{w}}{'pattern':<14}" + (f"{'nodes kept':>12}" if nodes else "")
                + f"{'density':>8}{'groups kept':>18}{'dense B':>11}{'CSR B':>11}{'group-CSR B':>13}")
        lines = [head, "-" * len(head)]
        for r in self.layers:
            lines.append(
                f"{r.name:<{w}}{r.pattern:<14}"
                + (f"{f'{r.nodes_kept}/{r.nodes_total}':>12}" if nodes else "")
                + f"{r.density:>8.2%}{f'{r.nonzero_groups}/{r.total_groups}':>18}"
                f"{r.bytes_dense:>11,}{r.bytes_csr:>11,}{r.bytes_group_csr:>13,}"
            )
        if self.layers:
            dense = sum(r.energy_pj("dense") for r in self.layers) / 1e3
            sparse = sum(r.energy_pj() for r in self.layers) / 1e3
            lines.append(f"energy per inference (float32, 45 nm table, tfscalpel.energy): dense "
                         f"{dense:,.1f} nJ, group-CSR {sparse:,.1f} nJ ({sparse / dense:.3f}x)")
        return "\n".join(lines)


def layer_report(name, kernel, pattern_name, group_size, nodes_total=None, fan_in_ndim=None,
                 positions=1):
    """Measure a (masked) kernel whose first ``fan_in_ndim`` axes (default all but the last)
    are the fan-in. With ``nodes_total`` (units before node removal), the report also says how
    many nodes remain; ``positions``: output positions (for the energy)."""
    w = kernel_matrix(kernel, fan_in_ndim).T  # TFLite layout [rows, cols]
    rows, cols = w.shape
    n_groups = math.ceil(cols / group_size)
    padded = np.zeros((rows, n_groups * group_size), dtype=w.dtype)
    padded[:, :cols] = w
    groups_nonzero = np.any(padded.reshape(rows, n_groups, group_size) != 0, axis=2)
    return LayerReport(
        name=name, pattern=pattern_name, group_size=group_size, rows=rows, cols=cols,
        nonzero=int(np.count_nonzero(w)), nonzero_groups=int(groups_nonzero.sum()),
        total_groups=rows * n_groups,
        nodes_kept=None if nodes_total is None else rows, nodes_total=nodes_total,
        positions=positions,
    )


def _pruned_in(layer):
    """The pruned layers inside ``layer``: itself, or the sublayers of a twin that holds
    several (MultiHeadAttention's projections, a custom layer's weights)."""
    return [sub for sub in [layer, *layer._flatten_layers(include_self=False, recursive=True)]
            if isinstance(sub, PrunableMixin)]


def _plain_layer(layer):
    return get_handler(layer).plain_layer(layer)


def strip(model, return_report=False):
    """Return a plain Keras model (stock layers: Dense, Conv2D, ...) with the pruning masks
    multiplied into the kernels; outputs equal the pruned model's. With
    ``return_report=True``, return ``(model, StripReport)``.

    Works for Sequential and Functional models built by :func:`tfscalpel.prune` or by hand
    (a Sequential or Functional model used as a layer inside them is stripped too, and its
    pruned layers are reported), and for subclassed ones built from pruned layers
    (``GroupPrunedDense``, ...) or by ``prune``: a copy with stock layers in their place
    (:mod:`tfscalpel.subclassed`).
    A model with :class:`~tfscalpel.MaskLayer` gates also loses its dead nodes for real (the
    result is Functional): units, filters and the matching input rows of the next layers are
    removed as :func:`tfscalpel.dependency.channel_plan` decides, the MaskLayers disappear, and
    the report gives the kept / original nodes of every weighted (Dense, Conv2D, ...) and
    pruned layer. A :class:`~tfscalpel.GatedMultiHeadAttention` becomes a stock
    MultiHeadAttention with its live heads only (also in a subclassed model); the report lists
    its projections (``<layer>/query``, ...) with kept / original heads as their nodes.

    Raises:
        ValueError: for a subclassed model that cannot be copied from its config, or a gated
            channel reaching a layer node removal cannot follow (the message names it).
    """
    from tfscalpel.prune_model import _is_cloneable
    from tfscalpel.subclassed import is_subclassed

    if is_subclassed(model):
        return _strip_subclassed(model, return_report)
    if not _is_cloneable(model):
        raise ValueError(
            f"strip() needs a Keras model (Sequential, Functional or subclassed), got "
            f"{type(model).__name__}")

    from tfscalpel.gates import mask_layers

    names = _names_in_order(model)
    model, reports = _strip_nested(model)
    if mask_layers(model):
        stripped, outer = _strip_nodes(model)
    else:
        stripped, outer = _strip_weights(model)
    # Nested models' layers and the outer ones, in the order the original model lists them.
    order = {name: i for i, name in reversed(list(enumerate(names)))}
    report = StripReport(tuple(sorted(reports + outer,
                                      key=lambda r: order.get(r.name.split("/")[0], 0))))
    return (stripped, report) if return_report else stripped


def _names_in_order(model):
    """Names of the layers of ``model`` and of the models nested in it, depth first."""
    from tfscalpel.prune_model import _is_cloneable

    names = []
    for layer in model.layers:
        names.append(layer.name)
        if _is_cloneable(layer):
            names.extend(_names_in_order(layer))
    return names


def _strip_nested(model):
    """Strip every Sequential or Functional model used as a layer of ``model`` (each on its
    own, so its gates remove only the channels that stay inside it): ``(model with the
    stripped models in their place, their reports)``; ``model`` itself when it has none."""
    from tfscalpel.prune_model import _is_cloneable

    if not any(_is_cloneable(layer) for layer in model.layers):
        return model, []
    reports = []

    def clone(layer):
        if not _is_cloneable(layer):
            return layer  # shared with ``model``: the outer strip copies it
        inner, report = strip(layer, return_report=True)
        reports.extend(report.layers)
        return inner

    return keras.models.clone_model(model, clone_function=clone), reports


def _strip_weights(model):
    """strip() without gates: ``(plain copy, [LayerReport])``."""
    stripped = keras.models.clone_model(model, clone_function=_plain_layer)
    reports = []
    for source, target in zip(model.layers, stripped.layers):
        target.set_weights(get_handler(source).weights(source))
        for pruned in _pruned_in(source):
            name = pruned.name if pruned is source else f"{source.name}/{pruned.name}"
            reports.append(layer_report(name, pruned._numpy_masked_kernel(),
                                        pruned.pattern.describe(), pruned.pattern.group_size,
                                        fan_in_ndim=pruned.fan_in_ndim,
                                        positions=_positions(pruned)))
    return stripped, reports


def _positions(layer):
    """Output positions of a layer in a graph (product of its output's inner dimensions)."""
    try:
        shape = tuple(layer.output.shape[1:-1])
    except (AttributeError, ValueError):  # a layer used more than once has no single output
        return 1
    return int(math.prod(shape)) if shape and None not in shape else 1


def _strip_subclassed(model, return_report):
    """strip() for a subclassed model: a copy whose pruned layers are swapped for stock ones
    with the masks baked in (:mod:`tfscalpel.subclassed`). Without a graph, no node is
    removed (a MaskLayer inside stays as it is)."""
    from tfscalpel.subclassed import build_like, copy_model

    reports = []

    def replace(layer):
        pruned = _pruned_in(layer)
        gated = isinstance(layer, GatedMultiHeadAttention)
        if not pruned and not gated:
            return None
        handler = get_handler(layer)
        plain = build_like(handler.plain_layer(layer), layer, "strip()")
        plain.set_weights(handler.weights(layer))
        if gated:  # its heads are nodes: reported with the kept heads
            reports.extend(_attention_reports(layer, plain))
            return plain
        for p in pruned:
            name = p.name if p is layer else f"{layer.name}/{p.name}"
            reports.append(layer_report(name, p._numpy_masked_kernel(), p.pattern.describe(),
                                        p.pattern.group_size, fan_in_ndim=p.fan_in_ndim))
        return plain

    stripped = copy_model(model, "strip()", replace)
    report = StripReport(tuple(reports))
    return (stripped, report) if return_report else stripped


def _strip_nodes(model):
    """strip() for a gated model: bake the masks in and remove dead nodes; ``(copy,
    [LayerReport])``."""
    from tfscalpel.dependency import channel_plan
    from tfscalpel.removal import remove_channels

    plan = channel_plan(model)
    stripped, kernels = remove_channels(model, plan)
    reports = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.MultiHeadAttention):
            reports.extend(_attention_reports(layer, stripped.get_layer(layer.name)))
        if layer.name not in kernels:
            continue
        pattern = getattr(layer, "pattern", None)
        reports.append(layer_report(
            layer.name, kernels[layer.name], "dense" if pattern is None else pattern.describe(),
            1 if pattern is None else pattern.group_size, nodes_total=plan.units[layer.name],
            fan_in_ndim=getattr(layer, "fan_in_ndim", None), positions=_positions(layer)))
    return stripped, reports


def _attention_reports(layer, stripped):
    """Reports of a MultiHeadAttention's projections (``<layer>/query``, ...) after strip,
    from the ``stripped`` stock layer's kernels, with its heads as nodes: kept / original
    heads (every head kept for a layer without head gates)."""
    handler = get_handler(layer)
    kept, total = handler.heads(layer)
    pruned = {p.name: p for p in _pruned_in(layer)}
    reports = []
    for p in handler._projections(stripped):
        source = pruned.get(p.name)
        report = layer_report(
            f"{layer.name}/{p.name}", keras.ops.convert_to_numpy(p.kernel),
            "dense" if source is None else source.pattern.describe(),
            1 if source is None else source.pattern.group_size,
            fan_in_ndim=einsum_fan_in_ndim(p.equation, p.name), positions=_positions(p))
        reports.append(dataclasses.replace(report, nodes_kept=kept, nodes_total=total))
    return reports
