"""``strip(model)``: a plain Keras model with the masks baked in, dead nodes removed, and a
per-layer report."""
import dataclasses
import math

import keras
import numpy as np

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
             "bytes_csr": r.bytes_csr, "bytes_group_csr": r.bytes_group_csr}
            for r in self.layers
        ]

    def __str__(self):
        nodes = any(r.nodes_total is not None for r in self.layers)
        head = (f"{'layer':<14}{'pattern':<14}" + (f"{'nodes kept':>12}" if nodes else "")
                + f"{'density':>8}{'groups kept':>18}{'dense B':>11}{'CSR B':>11}{'group-CSR B':>13}")
        lines = [head, "-" * len(head)]
        for r in self.layers:
            lines.append(
                f"{r.name:<14}{r.pattern:<14}"
                + (f"{f'{r.nodes_kept}/{r.nodes_total}':>12}" if nodes else "")
                + f"{r.density:>8.2%}{f'{r.nonzero_groups}/{r.total_groups}':>18}"
                f"{r.bytes_dense:>11,}{r.bytes_csr:>11,}{r.bytes_group_csr:>13,}"
            )
        return "\n".join(lines)


def layer_report(name, kernel, pattern_name, group_size, nodes_total=None, fan_in_ndim=None):
    """Measure a (masked) kernel whose first ``fan_in_ndim`` axes (default all but the last)
    are the fan-in. With ``nodes_total`` (units before node removal), the report also says how
    many nodes remain."""
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
    )


def _plain_layer(layer):
    return get_handler(layer).plain_layer(layer)


def strip(model, return_report=False):
    """Return a plain Keras model (stock layers: Dense, Conv2D, ...) with the pruning masks
    multiplied into the kernels; outputs equal the pruned model's. With
    ``return_report=True``, return ``(model, StripReport)``.

    Works for Sequential and Functional models built by :func:`tfscalpel.prune` or by hand;
    a Sequential or Functional model used as a layer inside them is stripped too, and its
    pruned layers are reported.
    A model with :class:`~tfscalpel.MaskLayer` gates also loses its dead nodes for real (the
    result is Functional): units, filters and the matching input rows of the next layers are
    removed as :func:`tfscalpel.dependency.channel_plan` decides, the MaskLayers disappear, and
    the report gives the kept / original nodes of every weighted (Dense, Conv2D, ...) and
    pruned layer.

    Raises:
        ValueError: for a subclassed model, or a gated channel reaching a layer node removal
            cannot follow (the message names it).
    """
    from tfscalpel.prune_model import _is_cloneable

    if not _is_cloneable(model):
        raise ValueError(
            f"strip() needs a Sequential or Functional model, got {type(model).__name__}"
        )

    from tfscalpel.gates import mask_layers

    names = _names_in_order(model)
    model, reports = _strip_nested(model)
    if mask_layers(model):
        stripped, outer = _strip_nodes(model)
    else:
        stripped, outer = _strip_weights(model)
    # Nested models' layers and the outer ones, in the order the original model lists them.
    order = {name: i for i, name in reversed(list(enumerate(names)))}
    report = StripReport(tuple(sorted(reports + outer, key=lambda r: order.get(r.name, 0))))
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
        weights = get_handler(source).weights(source)
        target.set_weights(weights)
        if isinstance(source, PrunableMixin):
            reports.append(layer_report(source.name, weights[0], source.pattern.describe(),
                                        source.pattern.group_size,
                                        fan_in_ndim=source.fan_in_ndim))
    return stripped, reports


def _strip_nodes(model):
    """strip() for a gated model: bake the masks in and remove dead nodes; ``(copy,
    [LayerReport])``."""
    from tfscalpel.dependency import channel_plan
    from tfscalpel.removal import remove_channels

    plan = channel_plan(model)
    stripped, kernels = remove_channels(model, plan)
    reports = []
    for layer in model.layers:
        if layer.name not in kernels:
            continue
        pattern = getattr(layer, "pattern", None)
        reports.append(layer_report(
            layer.name, kernels[layer.name], "dense" if pattern is None else pattern.describe(),
            1 if pattern is None else pattern.group_size, nodes_total=plan.units[layer.name],
            fan_in_ndim=getattr(layer, "fan_in_ndim", None)))
    return stripped, reports
