"""Physical node removal: rebuild a model without the channels a :class:`ChannelPlan` drops.

Each layer's handler (:mod:`tfscalpel.layer_handlers`) removes its own channels: weighted layers
(Dense, Conv2D) lose kernel columns and bias entries (their units) and kernel rows (their
inputs), per-channel layers (BatchNormalization, DepthwiseConv2D, ...) lose their per-channel
weights, and MaskLayers disappear (the nodes they kept are multiplied by 1) -- except where a
dead node had to stay because it is coupled with live ones: that mask becomes a stock
``Rescaling`` by the 0/1 mask, so the node still outputs zero. Shapes of everything else
(pooling, Flatten, merges) follow from their inputs.
"""
from tfscalpel.graph import rebuild
from tfscalpel.layer_handlers import get_handler
from tfscalpel.layers import PrunableMixin


def remove_channels(model, plan):
    """Return a new model with the channels ``plan`` drops removed.

    Args:
        model: the gated Sequential or Functional model.
        plan: a :class:`~tfscalpel.dependency.ChannelPlan` for it.

    Returns ``(new model, {layer name: final kernel of each weighted or pruned layer})``; every
    layer is a stock one (pruning state dropped) with the masks multiplied into its kernel.
    """
    pending = []  # (new layer, weights) assigned once the new graph is built
    final_kernels = {}

    def replace(layer):
        handler = get_handler(layer)
        new, weights = handler.remove(layer, plan.keep_in.get(layer.name),
                                      plan.keep_out.get(layer.name))
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
