"""Scalpel's combined pruning: choose a pruning method per layer from the hardware target.

:func:`plan` decides, :class:`Plan` prints the decision as a table, and :func:`apply_plan` (what
``tfscalpel.prune(model, target=...)`` calls) builds the model: weight patterns on the layers
that take them (:func:`tfscalpel.prune`) and a :class:`~tfscalpel.MaskLayer` after every
node-pruned layer -- after its activation, pooling and batch norm, so a dead node is exactly
zero where the next layer reads it. A node-pruned MultiHeadAttention's nodes are its heads: it
becomes a :class:`~tfscalpel.GatedMultiHeadAttention` (one gate per head, inside the layer).
"""
import dataclasses

from tfscalpel.attention_layers import GatedMultiHeadAttention, copy_projections, gate_heads
from tfscalpel import layer_costs
from tfscalpel.budget import allocate
from tfscalpel.checks import is_integer
from tfscalpel.dependency import (channel_plan, is_weighted, straddling_windows,
                                  unremovable_gates)
from tfscalpel.gates import MaskLayer
from tfscalpel.nm_rule import nm_shape_reason
from tfscalpel.graph import (
    clone_with_weights, functional_graph, node_inputs, nodes_in_order, rebuild)
from tfscalpel.layer_handlers import get_handler
from tfscalpel.subclassed import is_subclassed, prunable_layers
from tfscalpel.targets import GROUP_SIZES, METHODS, get_target

_NODE_METHODS = ("node", "node+2:4")


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """The decision for one Dense or Conv2D layer."""

    name: str
    layer_type: str  # "dense" or "conv" (the target's method), or the handler's plan_kind
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
    def heads_gated(self):
        """True for a MultiHeadAttention whose heads are node-pruned: its gate
        (``mask_<name>``, one per head) lives inside the layer, a
        :class:`~tfscalpel.GatedMultiHeadAttention`, and ``mask_after`` is the layer itself."""
        return self.node_pruned and self.layer_type == "attention"

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
    #: With ``plan(budget=...)``: the :class:`tfscalpel.budget.Allocation` (per-layer sparsity
    #: and predicted latency, flash, arena and energy), printed under the table.
    allocation: object = None

    def __getitem__(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __str__(self):
        # Columns as wide as their longest entry (keras.applications names run long).
        nw = max([12] + [len(p.name) + 1 for p in self.layers])
        tw = max([7] + [len(p.layer_type) + 1 for p in self.layers])
        mw = max([12] + [len(p.mask_after) + 1 for p in self.layers])
        head = (f"{'layer':<{nw}}{'type':<{tw}}{'shape':>12}  {'method':<10}{'g':>3}  "
                f"{'mask after':<{mw}}reason")
        lines = [f"plan for {self.target} ({self.dtype})"]
        if self.unsupported:
            lines.append(f"not exportable: {self.unsupported}")
        lines += [head, "-" * (len(head) + 30)]
        for p in self.layers:
            lines.append(f"{p.name:<{nw}}{p.layer_type:<{tw}}{f'{p.fan_in}x{p.units}':>12}  "
                         f"{p.method:<10}{p.group_size:>3}  {p.mask_after or '-':<{mw}}{p.reason}")
        if self.allocation is not None:
            lines += ["", str(self.allocation)]
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
    """The layer after which a gate goes: past single-consumer channel-wise layers that let it
    pass (activations, BN, pooling, padding, depthwise convolutions: ``gate_passes``)."""
    current = layer
    while True:
        if current.name in outputs:
            return current.name
        nxt = consumers.get(current.name, [])
        if len(nxt) != 1 or not get_handler(nxt[0]).gate_passes:
            return current.name
        current = nxt[0]


def _norms_reached(model, after):
    """Names of the normalising layers (LayerNormalization: ``LayerHandler.normalises``) that
    the channels gated after the layers named in ``after`` reach through channel-wise layers,
    gates and merges (a residual stream). Each needs a gate of its own right after it: its
    output is not zero where its input is, so without one nothing it reads could be removed;
    that gate carries the same channels, so it is coupled (tied) with the writers' gates."""
    consumers, _ = _consumers(model)
    passes = ("channelwise", "gate", "merge", "concat")
    found, todo, seen = set(), list(after), set()
    while todo:
        name = todo.pop()
        for c in consumers.get(name, []):
            handler = get_handler(c)
            if handler.normalises:
                found.add(c.name)
            elif handler.role in passes and c.name not in seen:
                seen.add(c.name)
                todo.append(c.name)
    return found - set(after)


def _reaches_output(layer, consumers, outputs):
    """True if the layer's channels reach a model output through channel-wise layers only."""
    todo, seen = [layer], set()
    while todo:
        current = todo.pop()
        if current.name in outputs:
            return True
        seen.add(current.name)
        todo.extend(c for c in consumers.get(current.name, [])
                    if c.name not in seen and get_handler(c).role == "channelwise")
    return False


def _nm_reason(layer):
    """Why ``layer`` (a weighted one) cannot hold 2:4 windows along its contraction, or None
    (:func:`tfscalpel.nm_rule.nm_shape_reason` on the handler's input channels and units)."""
    handler = get_handler(layer)
    # Windows run along the contraction: inside one kernel position when it spans several
    # (the "conv" rule), else along the plain inputs.
    kind = "conv" if len(handler.group_axes(layer)) > 1 else "dense"
    return nm_shape_reason(kind, handler.in_channels(layer), handler.units(layer),
                           int(getattr(layer, "groups", 1) or 1))


def _weights_only_plan(layer, target, g_default):
    """``(kind, fan_in, units, method, g, reason)`` for a layer that has a pruned twin but is
    not a weighted node of the channel graph (DepthwiseConv2D, Embedding, MultiHeadAttention,
    EinsumDense projections): its weights can take the target's group pattern; node pruning
    does not apply (its channels follow the layers before it, or it is opaque) -- except a
    MultiHeadAttention's heads: where the target node-prunes, they are its nodes (``node``)."""
    handler = get_handler(layer)
    kind = handler.plan_kind(layer)
    method = target.methods[handler.method_kind]
    fan_in, units = handler.plan_shape(layer)
    if method == "group":
        return kind, fan_in, units, "group", g_default, f"{target.kind}: group on {kind}"
    if method in _NODE_METHODS and _gates_heads(layer):
        return kind, fan_in, units, "node", 1, (f"{target.kind}: {method} on "
                                                f"{handler.method_kind}; {_heads_reason(layer)}")
    return kind, fan_in, units, "none", 1, (f"{target.kind}: {method} on {handler.method_kind}; "
                                             f"{handler.why_not_nodes(layer)}")


def _gates_heads(layer):
    """True if node pruning can gate ``layer``'s attention heads (a stock
    MultiHeadAttention, or one already gated)."""
    gated_twin = getattr(get_handler(layer), "gated_twin", None)
    return gated_twin is not None and gated_twin(layer) is not None


def _heads_reason(layer):
    return (f"node: a gate per attention head ({layer.num_heads} heads), dead heads removed "
            "by strip; no 2:4 on its projections")


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


def plan(model, target, dtype=None, per_layer=None, budget=None, *, profile=None,
         sensitivity_data=None, loss=None):
    """Decide how to prune each Dense / Conv2D layer of ``model`` for ``target``.

    Args:
        model: a Sequential, Functional or (built) subclassed model. A subclassed model has no
            layer graph, so its plan keeps only weight patterns: node methods become ``none``
            (``node+2:4`` becomes ``2:4`` where the shape allows), and the reason says so.
        target: a target name (see :func:`tfscalpel.targets.known_targets`) or HardwareTarget.
        dtype: deployment dtype for the group width (default: the target's).
        per_layer: ``{layer name: {"method": one of METHODS, "group_size": g}}`` overrides.
        budget: a :class:`tfscalpel.Budget`: each group-pruned layer then gets its own
            sparsity (and g where the budget offers several) so the predicted latency / flash /
            arena / energy fit (:func:`tfscalpel.budget.allocate`); a layer allocated 0 % is
            left dense (method ``"none"``). Where the profile prices the conv op (a
            ``custom_conv`` entry: Cortex-M, x86), a conv the target node-prunes is group-pruned
            instead, so the allocator can give it a sparsity. Raises
            :class:`tfscalpel.BudgetError` when the budget cannot be met, with the best
            reachable figure.
        profile: with ``budget``, a cost profile (dict or JSON path) to price with instead of
            the target's: for a host latency budget one measured here for this model's layers
            (``tflite_export.host_profile.measure``), or a profile fitted on the device with
            ``python -m tflite_export.calibrate``.
        sensitivity_data, loss: with ``budget``, held-out ``(x, y)`` and the loss for the
            one-shot sensitivity scan (default loss: the model's compiled one); without data a
            magnitude proxy ranks the layers.

    Returns a :class:`Plan`. The model's output layer is never node-pruned (its units are the
    model's outputs), and 2:4 applies only where the layer passes the N:M shape rule
    (:func:`tfscalpel.nm_rule.nm_shape_reason`, as in ``prune_2_4``); node removal upstream
    keeps whole 2:4 windows of its inputs. Besides Dense and convolutions, the plan lists the
    layers that take weight patterns (DepthwiseConv2D, Embedding, MultiHeadAttention,
    EinsumDense projections): ``group`` where the target group-prunes their kind, else
    ``none`` with the reason. A MultiHeadAttention's heads are nodes: where the target
    node-prunes (or ``per_layer`` says ``"node"``) its method is ``node`` (one gate per head,
    :class:`~tfscalpel.GatedMultiHeadAttention`; ``mask after`` names the layer itself).
    """
    target = get_target(target)
    dtype = target.default_dtype if dtype is None else dtype
    g_default = target.group_size(dtype)
    subclassed = is_subclassed(model)
    if subclassed:
        layers = prunable_layers(model)
        consumers, outputs = {}, set()
    else:
        layers = [node.operation for node in nodes_in_order(model)]
        consumers, _ = _consumers(model)
        outputs = {x._keras_history.operation.name for x in functional_graph(model).outputs}
    per_layer = check_per_layer(per_layer, ("method", "group_size"))
    names = [layer.name for layer in (layers if subclassed else model.layers)]
    unknown = sorted(set(per_layer) - set(names))
    if unknown:
        raise ValueError(f"per_layer names unknown layers {unknown}; the model has {names}")

    # A budget prices the conv op (TFS_GROUP_SPARSE_CONV2D) where its profile has a custom_conv
    # entry (x86 too since the op runs float32 there): a conv the target would node-prune is
    # then group-pruned, so the allocator can give it a sparsity the exporter turns into speed.
    conv_priced = budget is not None and bool(
        layer_costs.ProfileCosts(target, profile, dtype).conv)
    decisions = []
    for layer in layers:
        handler = get_handler(layer)
        if layer.name in {d.name for d in decisions}:
            continue
        if is_weighted(layer):
            kind, fan_in = handler.kind, handler.fan_in(layer)
            units = handler.units(layer)
            method, reason = target.methods[kind], f"{target.kind}: {target.methods[kind]} on {kind}"
            if kind == "conv" and method == "node" and conv_priced:
                method = "group"
                reason += ("; budget: group (the profile prices the conv op per group, "
                           "node pruning it cannot)")
        elif handler.pruned_twin(layer) is not None and handler.plan_kind(layer) is not None:
            kind, fan_in, units, method, g, reason = _weights_only_plan(layer, target, g_default)
        else:
            continue
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
        heads = method in _NODE_METHODS and not is_weighted(layer) and _gates_heads(layer)
        if method in _NODE_METHODS and not is_weighted(layer) and not heads:
            raise ValueError(f"layer {layer.name!r}: method {method!r} needs a weighted layer "
                             f"(Dense, Conv2D, ...) or a MultiHeadAttention (its heads); a "
                             f"{type(layer).__name__} takes 'group' or 'none'")
        if heads and _heads_reason(layer) not in reason:
            reason = f"{reason}; {_heads_reason(layer)}"
        if heads:
            method = "node"  # no 2:4 on the projections (EinsumDense kernels)
        if method in _NODE_METHODS and subclassed:
            method = "2:4" if method == "node+2:4" else "none"
            reason += ("; subclassed model: node pruning needs the layer graph (build it "
                       "Sequential or Functional)")
        # A head's output is mixed by the output projection: heads never reach an output.
        if method in _NODE_METHODS and not heads and _reaches_output(layer, consumers,
                                                                     outputs):
            method = "2:4" if method == "node+2:4" else "none"
            reason += "; units are model outputs: no node pruning"
        if method in ("2:4", "node+2:4"):
            # Node removal upstream keeps whole 2:4 windows of this layer's inputs
            # (dependency.channel_plan), so a shrinking input does not break them.
            why = _nm_reason(layer) if is_weighted(layer) else "not a weighted layer"
            if why:
                method = "node" if method == "node+2:4" else "none"
                reason += f"; {why}: no 2:4"
        g = 1
        if method == "group":
            g = override.get("group_size", g_default)
            if not is_integer(g) or g < 1:
                raise ValueError(f"layer {layer.name!r}: group_size must be an integer >= 1, "
                                 f"got {g!r}")
            if g > fan_in and "group_size" not in override:
                # The target's width is wider than the layer: the widest group that fits.
                g = max(w for w in GROUP_SIZES if w <= fan_in)
                reason += f"; fan-in {fan_in} < the target's g: g={g}"
        elif "group_size" in override:
            raise ValueError(f"layer {layer.name!r}: group_size applies to method 'group' only, "
                             f"not {method!r}")
        if method in _NODE_METHODS and heads:
            mask_after = layer.name  # the head gates live inside the layer
        elif method in _NODE_METHODS:
            mask_after = _mask_position(layer, consumers, outputs)
        else:
            mask_after = ""
        decisions.append(LayerPlan(layer.name, kind, fan_in, units, method, g, mask_after, reason))
    if per_layer:
        raise ValueError(f"per_layer configures layers that are not Dense or Conv2D: "
                         f"{sorted(per_layer)} (nor another prunable type)")
    if not subclassed:
        decisions = _without_unremovable_nodes(model, decisions)
        decisions = _without_straddling_windows(model, decisions)
    if budget is None:
        if profile is not None or sensitivity_data is not None or loss is not None:
            raise ValueError("profile=, sensitivity_data= and loss= apply only with budget=")
        return Plan(target.name, dtype, tuple(decisions), target.export_unsupported)
    allocation = allocate(model, decisions, target, budget, profile=profile, dtype=dtype,
                          sensitivity_data=sensitivity_data, loss=loss)
    budgeted = []
    for d in decisions:
        row = allocation[d.name]
        if d.method == "group" and row.sparsity == 0:
            d = dataclasses.replace(d, method="none", group_size=1,
                                    reason=d.reason + "; budget: left dense")
        elif d.method == "group":
            d = dataclasses.replace(d, group_size=row.g,
                                    reason=d.reason + f"; budget: {row.sparsity:.0%} ({row.format})")
        budgeted.append(d)
    return Plan(target.name, dtype, tuple(budgeted), target.export_unsupported, allocation)


def _without_straddling_windows(model, decisions):
    """``decisions`` with 2:4 taken off the layers whose input windows would pin the channels of
    a node-pruned layer (:func:`tfscalpel.dependency.straddling_windows`: LeNet-5's fc1 reads a
    flattened 4x4x50 map, and its windows would keep every conv2 channel): ``node+2:4`` becomes
    ``node``, ``2:4`` becomes ``none`` -- node removal is the GPU plan's main saving. An explicit
    ``per_layer`` method is left as asked."""
    nm = [d.name for d in decisions if d.method in ("2:4", "node+2:4")
          and not d.reason.startswith("per_layer override")]
    producers = {d.name for d in decisions if d.node_pruned and not d.heads_gated}
    why = straddling_windows(model, nm, producers) if nm and producers else {}
    return [d if d.name not in why else dataclasses.replace(
        d, method="node" if d.method == "node+2:4" else "none",
        mask_after=d.mask_after if d.method == "node+2:4" else "",
        reason=f"{d.reason}; {why[d.name]}: no 2:4") for d in decisions]


def _without_unremovable_nodes(model, decisions):
    """``decisions`` with node pruning taken off the layers whose gates could never remove a
    channel (:func:`tfscalpel.dependency.unremovable_gates`: their channels reach a layer the
    channel analysis cannot follow, or are read ungated, as a Transformer's residual stream is):
    ``node+2:4`` becomes ``2:4``, ``node`` becomes ``none``, and the reason says why. An explicit
    ``per_layer`` method is left as asked (``prune`` then names the blocking layer). Gates are
    tried on a copy of the model: the caller's layers are never called again."""
    decisions = list(decisions)
    trial = None
    while True:
        after = {d.mask_after for d in decisions if d.node_pruned and not d.heads_gated}
        if not after:
            return decisions
        trial = trial or clone_with_weights(model)
        after |= _norms_reached(trial, after)
        gated = rebuild(trial, lambda layer: layer, insert_after=lambda layer: (
            [MaskLayer(name=f"mask_{layer.name}")] if layer.name in after else []))
        why = unremovable_gates(gated)
        hits = [i for i, d in enumerate(decisions)
                if d.node_pruned and not d.heads_gated and f"mask_{d.mask_after}" in why
                and not d.reason.startswith("per_layer override")]
        if not hits:
            return decisions
        for i in hits:  # coupled gates may depend on each other: check again without these
            d = decisions[i]
            decisions[i] = dataclasses.replace(
                d, method="2:4" if d.method == "node+2:4" else "none", mask_after="",
                reason=f"{d.reason}; no node pruning: {why[f'mask_{d.mask_after}']}")


def insert_masks(model, after, mask_options=None, heads=()):
    """A new model with a :class:`MaskLayer` (named ``mask_<layer>``) after each layer named in
    ``after``, and each MultiHeadAttention named in ``heads`` swapped for a
    :class:`~tfscalpel.GatedMultiHeadAttention` (its gate, one per head, also named
    ``mask_<layer>``) with the same weights. The other layers are reused, weights and all.
    A LayerNormalization that the gated channels reach (a residual stream) gets a gate right
    after it too (see :func:`_norms_reached`)."""
    after, heads = set(after), set(heads)
    after |= _norms_reached(model, after)
    options = dict(mask_options or {})
    swapped = []

    def replace(layer):
        if layer.name not in heads or isinstance(layer, GatedMultiHeadAttention):
            return layer
        new = gate_heads(layer, options)
        swapped.append((new, layer))
        return new

    def extra(layer):
        return [MaskLayer(name=f"mask_{layer.name}", **options)] if layer.name in after else []

    gated = rebuild(model, replace, insert_after=extra)
    for new, old in swapped:  # built by the rebuild's calls
        copy_projections(new, old)
    # Fail now, not at strip time, if removal could not follow these gates.
    channel_plan(gated, dead={f"mask_{n}": _all_dead(gated, f"mask_{n}") for n in after})
    return gated


def _all_dead(model, name):
    import numpy as np

    return np.ones(model.get_layer(name).units, dtype=bool)
