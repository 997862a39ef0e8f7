"""Scalpel's combined pruning: choose a pruning method per layer from the hardware target.

:func:`plan` decides, :class:`Plan` prints the decision as a table, and :func:`apply_plan` (what
``tfscalpel.prune(model, target=...)`` calls) builds the model: weight patterns on the layers
that take them (:func:`tfscalpel.prune`) and a :class:`~tfscalpel.MaskLayer` after every
node-pruned layer -- after its activation, pooling and batch norm, so a dead node is exactly
zero where the next layer reads it.
"""
import dataclasses

import keras

from tfscalpel.dependency import CHANNELWISE, channel_plan, is_weighted
from tfscalpel.gates import MaskLayer
from tfscalpel.nm_rule import keras_nm_reason
from tfscalpel.graph import functional_graph, node_inputs, nodes_in_order, rebuild
from tfscalpel.layer_handlers import get_handler
from tfscalpel.targets import GROUP_SIZES, METHODS, get_target

_L = keras.layers
#: Layers a MaskLayer is moved past, so it gates what the next weighted layer reads.
_MASK_AFTER = (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU, _L.BatchNormalization,
               _L.MaxPooling2D, _L.AveragePooling2D, _L.MaxPooling1D, _L.AveragePooling1D)
_NODE_METHODS = ("node", "node+2:4")


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """The decision for one Dense or Conv2D layer."""

    name: str
    layer_type: str  # "dense" or "conv"
    fan_in: int
    units: int
    method: str  # one of targets.METHODS
    group_size: int  # for "group"; 1 otherwise
    mask_after: str  # layer the MaskLayer follows ("" when not node-pruned)
    reason: str

    @property
    def node_pruned(self):
        return self.method in _NODE_METHODS

    @property
    def weight_pattern(self):
        """The weight pattern for :func:`tfscalpel.prune`, or None."""
        if self.method == "group":
            return f"group:{self.group_size}"
        return "2:4" if self.method in ("2:4", "node+2:4") else None


@dataclasses.dataclass(frozen=True)
class Plan:
    """A per-layer pruning plan for one target; ``print()`` it for a table."""

    target: str
    dtype: str
    layers: tuple
    #: Why the exporter cannot serve the target (its ``export_unsupported``): ``apply_plan``, and
    #: so ``prune(target=...)``, refuses such a plan; the table still shows what it would do.
    unsupported: str | None = None

    def __getitem__(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __str__(self):
        head = (f"{'layer':<12}{'type':<7}{'shape':>12}  {'method':<10}{'g':>3}  "
                f"{'mask after':<12}reason")
        lines = [f"plan for {self.target} ({self.dtype})"]
        if self.unsupported:
            lines.append(f"not exportable: {self.unsupported}")
        lines += [head, "-" * (len(head) + 30)]
        for p in self.layers:
            lines.append(f"{p.name:<12}{p.layer_type:<7}{f'{p.fan_in}x{p.units}':>12}  "
                         f"{p.method:<10}{p.group_size:>3}  {p.mask_after or '-':<12}{p.reason}")
        return "\n".join(lines)


def _consumers(model):
    """``{layer name: [(consumer layer, node)]}`` within the model's graph."""
    out = {}
    producer = {}
    for node in nodes_in_order(model):
        for y in node.outputs:
            producer[id(y)] = node.operation
        for x in node_inputs(node):
            src = producer.get(id(x))
            if src is not None:
                out.setdefault(src.name, []).append(node.operation)
    return out, producer


def _mask_position(layer, consumers, outputs):
    """The layer after which a gate goes: past single-consumer activations, BN and pooling."""
    current = layer
    while True:
        if current.name in outputs:
            return current.name
        nxt = consumers.get(current.name, [])
        if len(nxt) != 1 or not isinstance(nxt[0], _MASK_AFTER):
            return current.name
        current = nxt[0]


def _reaches_output(layer, consumers, outputs):
    """True if the layer's channels reach a model output through channel-wise layers only."""
    todo, seen = [layer], set()
    while todo:
        current = todo.pop()
        if current.name in outputs:
            return True
        seen.add(current.name)
        todo.extend(c for c in consumers.get(current.name, [])
                    if c.name not in seen and isinstance(c, CHANNELWISE + (_L.BatchNormalization,)))
    return False


def _input_is_fixed(node, producer):
    """True if the layer reads a model input through channel-wise layers / Flatten only, so
    node pruning elsewhere never shrinks its input (2:4 windows stay aligned)."""
    x = node_inputs(node)[0]
    while True:
        src = producer.get(id(x))
        if src is None:
            return True  # a model input
        if not isinstance(src, CHANNELWISE + (_L.Flatten, _L.BatchNormalization)):
            return False
        x = node_inputs(src._inbound_nodes[0])[0]


def check_per_layer(per_layer, allowed):
    """``per_layer`` as a fresh ``{layer name: dict}``; raises ValueError naming the entry that
    is not a dict of per-layer settings (keys from ``allowed``)."""
    if per_layer is None:
        return {}
    if not isinstance(per_layer, dict):
        raise ValueError(f"per_layer must be a dict {{layer name: {{setting: value}}}} with "
                         f"settings from {list(allowed)}, got a {type(per_layer).__name__}")
    for name, value in per_layer.items():
        if not isinstance(value, dict):
            raise ValueError(f"layer {name!r}: per_layer values are dicts with settings from "
                             f"{list(allowed)}, e.g. per_layer={{{name!r}: {{{allowed[0]!r}: "
                             f"...}}}}, got {value!r}")
    return {name: dict(value) for name, value in per_layer.items()}


def plan(model, target, dtype=None, per_layer=None):
    """Decide how to prune each Dense / Conv2D layer of ``model`` for ``target``.

    Args:
        model: a Sequential or Functional model.
        target: a target name (see :func:`tfscalpel.targets.known_targets`) or HardwareTarget.
        dtype: deployment dtype for the group width (default: the target's).
        per_layer: ``{layer name: {"method": one of METHODS, "group_size": g}}`` overrides.

    Returns a :class:`Plan`. The model's output layer is never node-pruned (its units are the
    model's outputs), and 2:4 applies only where the layer passes the N:M shape rule
    (:func:`tfscalpel.nm_rule.nm_shape_reason`, as in ``prune_2_4``) and its input is fixed.
    """
    target = get_target(target)
    dtype = target.default_dtype if dtype is None else dtype
    g_default = target.group_size(dtype)
    functional_graph(model)  # clear error for subclassed models
    consumers, producer = _consumers(model)
    graph = functional_graph(model)
    outputs = {x._keras_history.operation.name for x in graph.outputs}
    per_layer = check_per_layer(per_layer, ("method", "group_size"))
    names = [layer.name for layer in model.layers]
    unknown = sorted(set(per_layer) - set(names))
    if unknown:
        raise ValueError(f"per_layer names unknown layers {unknown}; the model has {names}")

    decisions = []
    for node in nodes_in_order(model):
        layer = node.operation
        if not is_weighted(layer) or layer.name in {d.name for d in decisions}:
            continue
        kind, fan_in = get_handler(layer).kind, get_handler(layer).fan_in(layer)
        units = int(layer.kernel.shape[-1])
        method, reason = target.methods[kind], f"{target.kind}: {target.methods[kind]} on {kind}"
        override = dict(per_layer.pop(layer.name, {}))
        bad = sorted(set(override) - {"method", "group_size"})
        if bad:
            raise ValueError(f"layer {layer.name!r}: unknown per_layer keys {bad}; allowed: "
                             "['method', 'group_size']")
        if "method" in override:
            method, reason = override["method"], "per_layer override"
            if method not in METHODS:
                raise ValueError(f"layer {layer.name!r}: method must be one of {METHODS}, "
                                 f"got {method!r}")
        if method in _NODE_METHODS and _reaches_output(layer, consumers, outputs):
            method = "2:4" if method == "node+2:4" else "none"
            reason += "; units are model outputs: no node pruning"
        if method in ("2:4", "node+2:4"):
            why = keras_nm_reason(layer) or (
                None if _input_is_fixed(node, producer) else "input shrinks upstream")
            if why:
                method = "node" if method == "node+2:4" else "none"
                reason += f"; {why}: no 2:4"
        g = 1
        if method == "group":
            g = override.get("group_size", g_default)
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise ValueError(f"layer {layer.name!r}: group_size must be an integer >= 1, "
                                 f"got {g!r}")
            if g > fan_in and "group_size" not in override:
                # The target's width is wider than the layer: the widest group that fits.
                g = max(w for w in GROUP_SIZES if w <= fan_in)
                reason += f"; fan-in {fan_in} < the target's g: g={g}"
        elif "group_size" in override:
            raise ValueError(f"layer {layer.name!r}: group_size applies to method 'group' only, "
                             f"not {method!r}")
        mask_after = (_mask_position(layer, consumers, outputs)
                      if method in _NODE_METHODS else "")
        decisions.append(LayerPlan(layer.name, kind, fan_in, units, method, g, mask_after, reason))
    if per_layer:
        raise ValueError(f"per_layer configures layers that are not Dense or Conv2D: "
                         f"{sorted(per_layer)}")
    return Plan(target.name, dtype, tuple(decisions), target.export_unsupported)


def insert_masks(model, after, mask_options=None):
    """A new model with a :class:`MaskLayer` (named ``mask_<layer>``) after each layer named in
    ``after``. The layers themselves are reused, weights and all."""
    after = set(after)
    options = dict(mask_options or {})

    def extra(layer):
        return [MaskLayer(name=f"mask_{layer.name}", **options)] if layer.name in after else []

    gated = rebuild(model, lambda layer: layer, insert_after=extra)
    # Fail now, not at strip time, if removal could not follow these gates.
    channel_plan(gated, dead={f"mask_{n}": _all_dead(gated, f"mask_{n}") for n in after})
    return gated


def _all_dead(model, name):
    import numpy as np

    return np.ones(model.get_layer(name).units, dtype=bool)
