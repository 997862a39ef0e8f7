"""Physical node removal: rebuild a model without the channels a :class:`ChannelPlan` drops.

Each layer's handler (:mod:`tfscalpel.layer_handlers`) removes its own channels: weighted layers
(Dense, Conv2D) lose kernel columns and bias entries (their units) and kernel rows (their
inputs), per-channel layers (BatchNormalization, DepthwiseConv2D, ...) lose their per-channel
weights, and MaskLayers disappear (the nodes they kept are multiplied by 1) -- except where a
dead node had to stay. Then, when every consumer of the MaskLayer's output is a weighted layer,
the 0/1 mask is folded into their kernel rows (``(x * m) W = x (diag(m) W)``: exact, and the
zero rows are sparsity the exporter can use); otherwise the MaskLayer becomes a stock
``Rescaling`` by the 0/1 mask, so the node still outputs zero. Shapes of everything else
(pooling, Flatten, merges) follow from their inputs.
"""
import warnings

import keras
import numpy as np

from tfscalpel.dependency import is_weighted
from tfscalpel.gates import MaskLayer
from tfscalpel.graph import functional_graph, node_inputs, nodes_in_order, rebuild
from tfscalpel.layer_handlers import get_handler
from tfscalpel.layers import PrunableMixin


def remove_channels(model, plan):
    """Return a new model with the channels ``plan`` drops removed.

    Args:
        model: the gated Sequential or Functional model.
        plan: a :class:`~tfscalpel.dependency.ChannelPlan` for it.

    Returns ``(new model, {layer name: final kernel of each weighted or pruned layer})``; every
    layer is a stock one (pruning state dropped) with the masks multiplied into its kernel.
    Warns, naming the MaskLayer and the reason, when dead nodes of a MaskLayer right after the
    model input or a Flatten cannot be removed.
    """
    folds = _kept_dead_nodes(model, plan)  # gate name -> (0/1 mask, consumer names or None)
    fold_into = {c: mask for mask, consumers in folds.values() for c in consumers or ()}
    pending = []  # (new layer, weights) assigned once the new graph is built
    final_kernels = {}

    def replace(layer):
        handler = get_handler(layer)
        new, weights = handler.remove(layer, plan.keep_in.get(layer.name),
                                      plan.keep_out.get(layer.name))
        if layer.name in folds and folds[layer.name][1] is not None:
            return None  # folded into its consumers' kernels below
        if layer.name in fold_into:
            weights = [weights[0] * fold_into[layer.name].reshape(-1, 1)] + weights[1:]
        if new is None:
            return None
        if layer.name in plan.keep_in or isinstance(layer, PrunableMixin):
            final_kernels[layer.name] = weights[0]
        pending.append((new, weights))
        return new

    stripped = rebuild(model, replace)
    for new, weights in pending:
        new.set_weights(weights)
    return stripped, final_kernels


def _kept_dead_nodes(model, plan):
    """``{gate name: (0/1 mask over its kept channels, names of the weighted layers it is folded
    into, or None when it stays a Rescaling)}`` for every MaskLayer with dead nodes that
    ``plan`` keeps; warns for those right after the model input or a Flatten."""
    graph = functional_graph(model)
    outputs = {id(x) for x in graph.outputs}
    consumers, producer = {}, {}
    for node in nodes_in_order(model):
        for x in node_inputs(node):
            consumers.setdefault(id(x), []).append(node.operation)
        if isinstance(node.operation, MaskLayer):
            ins = node_inputs(node)
            producer[node.operation.name] = (ins[0]._keras_history.operation, node.outputs[0])
    folds = {}
    for name, (source, output) in producer.items():
        gate = model.get_layer(name)
        if name not in plan.keep_out:
            continue
        alive = gate.kept()[plan.keep_out[name]]
        if alive.all():
            continue
        users = consumers.get(id(output), [])
        foldable = (id(output) not in outputs and users
                    and all(is_weighted(u) and len(plan.keep_in.get(u.name, ())) == len(alive)
                            for u in users))
        into = sorted({u.name for u in users}) if foldable else None
        folds[name] = (alive.astype(np.float32), into)
        if isinstance(source, keras.layers.InputLayer):
            reason = "it gates the model input, whose features cannot be removed"
        elif isinstance(source, keras.layers.Flatten):
            reason = (f"it follows Flatten {source.name!r}, whose features are not units of a "
                      "layer (a channel before the Flatten is removed only when it is dead at "
                      "every position)")
        else:
            continue  # coupled with live nodes through a merge, or reaching an output
        done = (f"they are folded into the input rows of {into} as zero weights" if into else
                "they stay as zeros (a Rescaling layer)")
        dead = int(np.sum(~alive))
        warnings.warn(f"strip: MaskLayer {name!r} has {dead} dead node{'s' * (dead != 1)} that "
                      f"cannot be removed: {reason}; {done}. To remove nodes, gate the output "
                      "of a Dense or convolution layer instead.", stacklevel=5)
    return folds
