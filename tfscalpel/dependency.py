"""Channel dependency graph: which nodes (Dense units, conv channels) can be removed, and where.

Built from a Functional model's nodes, Torch-Pruning style. Every channel of the last axis of
every tensor carries an *id*; weighted layers (Dense, Conv2D) and model inputs create fresh
ids, and ids flow through the graph as each layer's handler (:mod:`tfscalpel.layer_handlers`)
says:

- channel-wise layers (MaskLayer, BatchNormalization and the like on the channel axis --
  ``axis=-1`` or its positive equivalent --, DepthwiseConv2D, activations, pooling, dropout,
  padding, a Reshape that keeps the last axis as squeeze-excite's, ...) pass ids through;
- Flatten tiles them in the flattened ``(H, W, C)`` order, so a Dense after it sees channel
  ``c`` at rows ``c, c + C, c + 2C, ...``;
- Concatenate (on the channel axis) concatenates them;
- Add, Subtract, Average, Maximum, Minimum and Multiply *couple* them: ids at the same position
  of their inputs are merged into one class, which is removed everywhere or nowhere;
- LayerNormalization over the last axis passes ids through (its gamma and beta are per
  channel), but its statistics run over every channel, so it *uses* its inputs as a weighted
  layer does (a class goes only where they are exactly zero; :func:`tfscalpel.strip` then makes
  it a :class:`~tfscalpel.layers.PrunedLayerNormalization` that still divides by the original
  width) and its outputs are never zero: its readers lose a channel only through a gate right
  after it, which carries the same ids and so is coupled with the gates of the layers feeding it.

Alongside the ids, the analysis tracks which positions are *exactly zero* (a dead MaskLayer
node, then through layers that map 0 to 0, which is checked numerically per channel; the sum of
zeros is zero, a product with a zero is zero). A class is removed when every layer that *uses*
it (the input rows of a Dense or Conv2D, a LayerNormalization) sees exactly zero there, and it
does not reach a model input or output. Removing it then changes no output: the producing units
and filters go, the channel-wise layers lose the channel, and the consumers lose the matching
input rows.

A layer the analysis cannot follow (a Reshape of the channel axis, GroupNormalization, a
LayerNormalization with ``rms_scaling`` or over another axis, Softmax, grouped convolutions,
nested models, unregistered layers, ...) is fine as long as no gated channel reaches it; if one
does, the error names the layer and the gates involved.
"""
import dataclasses
import inspect

import numpy as np
from keras import ops

from tfscalpel.graph import functional_graph, node_inputs, nodes_in_order
from tfscalpel.layer_handlers import get_handler

def is_weighted(layer):
    """Layers that create channels and consume input rows (Dense, ungrouped Conv2D, and what
    :func:`tfscalpel.register_layer` registers as weighted)."""
    handler = get_handler(layer)
    return handler.role == "weighted" and handler.creates_channels(layer)


@dataclasses.dataclass
class ChannelPlan:
    """What :func:`channel_plan` decided.

    Attributes:
        keep_out: ``{layer name: indices of output channels kept}`` for Dense, Conv2D and the
            per-channel layers (MaskLayer, BatchNormalization, DepthwiseConv2D).
        keep_in: ``{layer name: indices of input rows (Dense) or channels (Conv2D) kept}``.
        units: ``{layer name: original number of output channels}`` (same keys as keep_out).
        in_units: ``{layer name: original number of input rows}`` (same keys as keep_in).
    """

    keep_out: dict
    keep_in: dict
    units: dict
    in_units: dict


class _Classes:
    """Union-find over channel ids."""

    def __init__(self):
        self.parent = []

    def fresh(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self, ids):
        return np.array([self.find(int(i)) for i in ids], dtype=np.int64)


def _last_dim(tensor, layer):
    n = tensor.shape[-1]
    if n is None:
        raise ValueError(f"layer {layer.name!r}: the channel axis of its input must be known")
    return int(n)


def _zero_preserved(layer, input_shape):
    """Per output channel: does the layer map an all-zero input channel to all zeros?"""
    shape = [1] + [4 if d is None else int(d) for d in input_shape[1:]]
    kwargs = {"training": False} if "training" in inspect.signature(layer.call).parameters else {}
    out = ops.convert_to_numpy(layer(np.zeros(shape, dtype="float32"), **kwargs))
    return np.all(out.reshape(-1, out.shape[-1]) == 0, axis=0)


@dataclasses.dataclass
class _Walk:
    """The channel classes of a model's graph, as :func:`_walk` found them."""

    classes: _Classes
    pinned: list  # ids that must stay: model inputs and outputs, inputs of opaque layers
    opaque: list  # (layer, reason, ids it consumes)
    uses: list  # (ids, zero) seen by the input rows of weighted layers and by layer norms
    gated: set  # ids at MaskLayer positions (before unions)
    out_ids: dict  # layer name -> ids of its output channels (weighted, per-channel, gates)
    in_ids: dict  # weighted layer name -> ids of its input rows
    gates: list  # names of the MaskLayers, in graph order
    windows: list  # ids of the N:M windows along the inputs of N:M-pruned layers


def _walk(model, dead):
    """Follow channel ids (and exact zeros) through ``model``'s graph; see the module
    docstring. ``dead`` as :func:`channel_plan`."""
    classes = _Classes()
    ids, zero = {}, {}  # id(KerasTensor) -> channel ids / exact-zero flags of its last axis
    pinned = []  # ids that must stay: model inputs and outputs, inputs of opaque layers
    opaque = []  # (layer, reason, ids it consumes)
    uses = []  # (ids, zero) seen by the input rows of weighted layers and by layer norms
    gated = set()  # ids at MaskLayer positions (before unions)
    out_ids, in_ids, gates, seen = {}, {}, [], set()
    windows = []

    graph = functional_graph(model)
    for x in graph.inputs:
        n = _last_dim(x, x._keras_history.operation)
        ids[id(x)] = classes.fresh(n)
        zero[id(x)] = np.zeros(n, dtype=bool)
        pinned.extend(ids[id(x)])

    for node in nodes_in_order(model):
        layer = node.operation
        ins = node_inputs(node)
        outs = node.outputs
        handler = get_handler(layer)
        reason = handler.refusal(layer, [x.shape for x in ins], [y.shape for y in outs])
        if reason is None and layer.name in seen and handler.owns_channels:
            reason = "shared by several calls"
        seen.add(layer.name)
        if reason is not None:
            consumed = np.concatenate([ids[id(x)] for x in ins]) if ins else np.zeros(0, int)
            opaque.append((layer, reason, consumed))
            pinned.extend(consumed)
            for y in outs:
                n = y.shape[-1] if y.shape else 1
                ids[id(y)] = classes.fresh(int(n or 1))
                zero[id(y)] = np.zeros(len(ids[id(y)]), dtype=bool)
                pinned.extend(ids[id(y)])
            continue

        x, y = ins[0], outs[0]
        role = handler.role
        if role == "weighted":
            uses.append((ids[id(x)], zero[id(x)]))
            in_ids[layer.name] = ids[id(x)]
            m = getattr(getattr(layer, "pattern", None), "m", None)
            if m and len(ids[id(x)]) % m == 0:
                windows.extend(ids[id(x)].reshape(-1, m))
            new = classes.fresh(_last_dim(y, layer))
            ids[id(y)], zero[id(y)] = new, np.zeros(len(new), dtype=bool)
            out_ids[layer.name] = new
        elif role == "gate":
            units = len(ids[id(x)])
            d = dead.get(layer.name) if dead is not None else None
            if d is None:
                d = ~layer.kept() if layer.built else np.zeros(units, dtype=bool)
            d = np.asarray(d, dtype=bool)
            if d.shape != (units,):
                raise ValueError(f"dead[{layer.name!r}] must have shape ({units},), got {d.shape}")
            ids[id(y)], zero[id(y)] = ids[id(x)], zero[id(x)] | d
            out_ids[layer.name] = ids[id(x)]
            gated.update(int(i) for i in ids[id(x)])
            gates.append(layer.name)
        elif role == "channelwise":
            ids[id(y)] = ids[id(x)]
            if handler.normalises:  # statistics over every channel: a use, never a zero
                uses.append((ids[id(x)], zero[id(x)]))
                zero[id(y)] = np.zeros(len(ids[id(x)]), dtype=bool)
            else:
                zero[id(y)] = zero[id(x)] & _zero_preserved(layer, x.shape)
            if handler.owns_channels:
                out_ids[layer.name] = ids[id(x)]
        elif role == "flatten":
            spatial = x.shape[1:-1]
            if any(d is None for d in spatial):
                raise ValueError(f"layer {layer.name!r}: Flatten needs a fully known input shape")
            reps = int(np.prod(spatial)) if spatial else 1
            ids[id(y)], zero[id(y)] = np.tile(ids[id(x)], reps), np.tile(zero[id(x)], reps)
        elif role == "concat":
            ids[id(y)] = np.concatenate([ids[id(t)] for t in ins])
            zero[id(y)] = np.concatenate([zero[id(t)] for t in ins])
        else:  # element-wise merge: couple positions
            first = ids[id(ins[0])]
            for t in ins[1:]:
                if len(ids[id(t)]) != len(first):
                    raise ValueError(f"layer {layer.name!r}: broadcasting merges are not followed")
                for a, b in zip(first, ids[id(t)]):
                    classes.union(int(a), int(b))
            stack = np.stack([zero[id(t)] for t in ins])
            combine = np.all if handler.zero == "all" else np.any
            ids[id(y)], zero[id(y)] = first, combine(stack, axis=0)

    for x in graph.outputs:
        pinned.extend(ids[id(x)])

    return _Walk(classes, pinned, opaque, uses, gated, out_ids, in_ids, gates, windows)


def channel_plan(model, dead=None):
    """Decide which channels of ``model`` can be removed exactly.

    Args:
        model: a Sequential or Functional model.
        dead: ``{MaskLayer name: boolean array, True = dead}``; default each MaskLayer's
            current mask. ``{name: all True}`` asks "could these gates be followed at all?".

    Returns a :class:`ChannelPlan`.

    Raises:
        ValueError: if a gated channel reaches a layer the analysis cannot follow (naming it),
            or a gated layer is shared by several calls.
    """
    walk = _walk(model, dead)
    classes, out_ids, in_ids = walk.classes, walk.out_ids, walk.in_ids
    for layer, reason, gates in _opaque_hits(walk):
        raise ValueError(
            f"layer {layer.name!r} is {reason}: node removal cannot follow channels through "
            f"it, but channels gated by MaskLayer(s) {gates} reach it. Exclude the layers "
            f"feeding it from node pruning (prune(..., per_layer={{name: {{'method': "
            f"'none'}}}}) or layers=...), or remove those MaskLayers"
        )

    removable = _removable(walk)

    def kept(channel_ids):
        roots = classes.roots(channel_ids)
        return np.array([k for k, r in enumerate(roots) if not removable.get(r, False)],
                        dtype=np.int64)

    plan = ChannelPlan(
        keep_out={name: kept(v) for name, v in out_ids.items()},
        keep_in={name: kept(v) for name, v in in_ids.items()},
        units={name: len(v) for name, v in out_ids.items()},
        in_units={name: len(v) for name, v in in_ids.items()},
    )
    return plan


def _opaque_hits(walk):
    """``(layer, reason, [gate names])`` for each layer the analysis cannot follow that gated
    channels reach."""
    classes = walk.classes
    gated_roots = {classes.find(i) for i in walk.gated}
    for layer, reason, consumed in walk.opaque:
        hit = {classes.find(int(i)) for i in consumed} & gated_roots
        if hit:
            yield layer, reason, sorted(name for name in walk.gates
                                        if set(classes.roots(walk.out_ids[name])) & hit)


def unremovable_gates(model):
    """``{MaskLayer name: why}`` for the gates of ``model`` whose channels could not be removed
    even with every gate dead: they reach a layer the analysis cannot follow, or every channel
    they gate is also read where no gate zeroes it (a model input or output, a residual stream
    that other layers feed). The planner leaves such layers out of node pruning, so a plan never
    trains gates that ``prune`` refuses or ``strip`` cannot use."""
    dead = {layer.name: np.ones(int(layer.units), dtype=bool)
            for layer in model.layers if get_handler(layer).role == "gate"}
    walk = _walk(model, dead)
    why = {}
    for layer, reason, gates in _opaque_hits(walk):
        for name in gates:
            why.setdefault(name, f"its channels reach {layer.name!r} ({reason})")
    removable = _removable(walk)
    for name in walk.gates:
        if name not in why and not any(removable.get(r, False)
                                       for r in walk.classes.roots(walk.out_ids[name])):
            why[name] = ("none of its channels can be removed: each is also read where no gate "
                         "zeroes it (a model input or output, or a path such as a residual "
                         "stream that other layers feed)")
    return why


def _removable(walk):
    """``{channel class root: removable}`` (see the module docstring)."""
    classes, out_ids = walk.classes, walk.out_ids
    removable = {}
    for x_ids, x_zero in walk.uses:
        for i, z in zip(classes.roots(x_ids), x_zero):
            removable[i] = removable.get(i, True) and bool(z)
    for i in classes.roots(walk.pinned) if walk.pinned else []:
        removable[i] = False

    # A layer whose every node is dead keeps one (a zero-width layer cannot be built); the
    # mask that killed it stays as a Rescaling by 0, so the outputs do not change.
    for name, v in out_ids.items():
        roots = classes.roots(v)
        if len(roots) and all(removable.get(r, False) for r in roots):
            removable[roots[0]] = False

    # An N:M layer's windows run along its inputs: removing part of a window would shift the
    # rest out of alignment with the trained N:M mask. So input channels go in whole windows;
    # the dead ones of a partly live window stay (as zeros, through a Rescaling gate). This
    # comes last: it only ever keeps channels, so the rule above still holds.
    changed = True
    while changed:
        changed = False
        for window in walk.windows:
            roots = classes.roots(window)
            flags = [removable.get(r, False) for r in roots]
            if any(flags) and not all(flags):
                for r in roots:
                    removable[r] = False
                changed = True
    return removable


def straddling_windows(model, names, producers, m=4):
    """Layers in ``names`` whose N:M windows would pin the channels of a node-pruned layer.

    A window of ``m`` inputs of an N:M layer goes only as a whole (:func:`channel_plan`). When
    the inputs are a Flatten of a feature map whose channel count is not a multiple of ``m``,
    the windows run across positions with shifting channel offsets (50 channels: ``[0..3]``,
    ..., ``[48, 49 | 0, 1]``, ``[2..5]``, ...) and chain every channel to its neighbours, so no
    channel could be removed short of all of them. Reported only for channels produced by a
    layer in ``producers`` (the node-pruned ones; others lose nothing).

    Returns ``{name: reason}``; ``names`` the layers of ``model`` (unpruned: the windows are
    read from the input layout) to take as N:M, layers without a traced input row skipped.
    """
    walk = _walk(model, None)
    owner = {}  # channel class root -> the weighted layer that produces it
    for name, ids in walk.out_ids.items():
        if name in walk.in_ids:  # a weighted layer: it creates its channels
            for r in walk.classes.roots(ids):
                owner.setdefault(int(r), name)
    out = {}
    for name in names:
        ids = walk.in_ids.get(name)
        if ids is None or len(ids) % m:
            continue
        roots = walk.classes.roots(ids)
        parent = {int(r): int(r) for r in roots}

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for window in np.asarray(roots).reshape(-1, m):
            for b in window[1:]:
                parent[find(int(b))] = find(int(window[0]))
        groups = {}
        for r in parent:
            groups.setdefault(find(r), set()).add(r)
        for group in groups.values():
            hit = sorted({owner.get(r) for r in group} & set(producers))
            if len(group) > m and hit:
                out[name] = (f"its 2:4 input windows straddle the channels of {', '.join(hit)} "
                             f"(flattened; channels not a multiple of {m}): they would tie "
                             f"{len(group)} channels together, none removable alone")
                break
    return out


def coupled_gates(model, windows=True):
    """MaskLayer nodes that gate one coupled channel class (tied by Add, Multiply, ...), or one
    N:M window of an N:M-pruned layer's inputs.

    Such a channel is removed only when every gate of its group is dead (a window only as a
    whole: see :func:`channel_plan`), so gates trained independently rarely remove it:
    :class:`~tfscalpel.GateTraining` ties each group to one value (Torch-Pruning's group
    importance).

    Returns a list of groups with more than one node, each a list of ``(MaskLayer name, node
    index)`` pairs. ``windows=False`` leaves the N:M windows out (merges only).
    """
    walk = _walk(model, None)
    for window in (walk.windows if windows else ()):  # a window's channels go together
        for a in window[1:]:
            walk.classes.union(int(window[0]), int(a))
    groups = {}
    for name in walk.gates:
        for k, root in enumerate(walk.classes.roots(walk.out_ids[name])):
            groups.setdefault(int(root), []).append((name, k))
    return [g for g in groups.values() if len(g) > 1]
