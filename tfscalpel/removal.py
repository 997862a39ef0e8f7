"""Physical node removal: rebuild a model without the channels a :class:`ChannelPlan` drops.

Dense layers lose kernel columns and bias entries (their units) and kernel rows (their inputs),
Conv2D layers lose filters and input channels, BatchNormalization and DepthwiseConv2D lose
their per-channel weights, and MaskLayers disappear (the nodes they kept are multiplied by 1) -- except where a dead node
had to stay because it is coupled with live ones: that mask becomes a stock ``Rescaling`` by the
0/1 mask, so the node still outputs zero.
Shapes of everything else (pooling, Flatten, merges) follow from their inputs.
"""
import keras
import numpy as np

from tfscalpel.gates import MaskLayer
from tfscalpel.graph import rebuild


def _slice_weighted(layer, kernel, bias, keep_in, keep_out):
    """Kernel ``(..., in, out)`` and bias sliced to the kept rows and columns."""
    kernel = np.take(np.take(kernel, keep_in, axis=-2), keep_out, axis=-1)
    weights = [kernel]
    if bias is not None:
        weights.append(np.asarray(bias)[keep_out])
    return weights


def remove_channels(model, plan, plain_layer, masked_kernel):
    """Return a new model with the channels ``plan`` drops removed.

    Args:
        model: the gated Sequential or Functional model.
        plan: a :class:`~tfscalpel.dependency.ChannelPlan` for it.
        plain_layer: ``layer -> new unbuilt layer`` of the stock type (pruning state dropped).
        masked_kernel: ``layer -> NumPy kernel`` as the forward pass sees it.

    Returns ``(new model, {layer name: final weights of weighted layers})``.
    """
    pending = []  # (new layer, weights) assigned once the new graph is built
    final_kernels = {}

    def replace(layer):
        if isinstance(layer, MaskLayer):
            alive = layer.kept()[plan.keep_out[layer.name]]
            if alive.all():
                return None
            # Some dead nodes are coupled (Add, ...) with live ones and must stay; they must
            # still output zero, so the mask stays as a stock constant multiplication.
            return keras.layers.Rescaling(scale=alive.astype(float).tolist(), name=layer.name)
        config_layer = plain_layer(layer)
        name = layer.name
        if name in plan.keep_in:  # Dense / Conv2D
            keep_in, keep_out = plan.keep_in[name], plan.keep_out[name]
            config = config_layer.get_config()
            config["units" if "units" in config else "filters"] = int(len(keep_out))
            new = type(config_layer).from_config(config)
            bias = keras.ops.convert_to_numpy(layer.bias) if layer.bias is not None else None
            weights = _slice_weighted(layer, masked_kernel(layer), bias, keep_in, keep_out)
            final_kernels[name] = weights[0]
        elif name in plan.keep_out:  # BatchNormalization / DepthwiseConv2D
            keep = plan.keep_out[name]
            new = config_layer
            weights = layer.get_weights()
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                weights = [np.take(weights[0], keep, axis=2)] + [b[keep] for b in weights[1:]]
            else:
                weights = [w[keep] for w in weights]
        else:
            new, weights = config_layer, layer.get_weights()
        pending.append((new, weights))
        return new

    stripped = rebuild(model, replace)
    for new, weights in pending:
        new.set_weights(weights)
    return stripped, final_kernels
