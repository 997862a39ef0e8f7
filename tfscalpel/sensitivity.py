"""How much each layer minds being pruned: a one-shot scan, or a magnitude proxy without data.

:func:`scan` prunes each layer *alone* to each candidate ``(sparsity, g)`` by group magnitude
(RMS of the group, Scalpel's criterion; :class:`tfscalpel.GroupPattern`), measures the loss on
held-out data, and restores the weights: the loss increase is the layer's sensitivity. Without
data, the proxy is the squared norm of the removed groups over the squared norm of every
scanned layer (one global magnitude scale, so layers compare). Both are deterministic, and made
non-decreasing in sparsity for each ``g`` (a noisy dip would tell the allocator that pruning
more is free).
"""
import numpy as np

import keras

from tfscalpel.importance import RMS
from tfscalpel.layers import kernel_matrix
from tfscalpel.patterns import GroupPattern


def group_mask(kernel, sparsity, g):
    """The 0/1 mask (kernel's shape) removing ``round(sparsity * groups)`` lowest-RMS groups."""
    kernel = np.asarray(kernel)
    k2 = kernel_matrix(kernel)
    pattern = GroupPattern(g)
    keep = pattern.keep_blocks(pattern.scores(k2, RMS()), sparsity)
    return pattern.expand(keep, k2.shape[0]).reshape(kernel.shape)


def _loss(model, loss_fn, x, y, batch_size):
    total, n = 0.0, len(x)
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        value = loss_fn(yb, model(xb, training=False))
        total += float(keras.ops.convert_to_numpy(keras.ops.mean(value))) * len(xb)
    return total / n


def _monotone(deltas, options):
    """Each g's deltas made non-decreasing in sparsity (options sorted by sparsity per g)."""
    out, running = list(deltas), {}
    for i in sorted(range(len(options)), key=lambda i: (options[i][1], options[i][0])):
        g = options[i][1]
        running[g] = max(running.get(g, 0.0), out[i])
        out[i] = running[g]
    return out


def scan(model, options, data=None, loss=None, batch_size=256):
    """Sensitivity of each layer to each option.

    Args:
        model: the (dense, trained) Keras model; its weights are restored afterwards.
        options: ``{layer name: [(sparsity, g), ...]}``.
        data: ``(x, y)`` held-out data for the loss scan, or None for the magnitude proxy.
        loss: a Keras loss (name or object) for the scan; default the model's compiled loss.

    Returns ``({layer name: [delta per option]}, description of the source)``.
    """
    layers = {name: model.get_layer(name) for name in options}
    if data is None:
        norm = sum(float(np.sum(np.square(layer.kernel.numpy()))) for layer in layers.values())
        out = {}
        for name, layer in layers.items():
            w = layer.kernel.numpy()
            deltas = [float(np.sum(np.square(w * (1 - group_mask(w, s, g))))) / max(norm, 1e-30)
                      for s, g in options[name]]
            out[name] = _monotone(deltas, options[name])
        return out, "magnitude proxy (removed squared weight norm / all layers' norm; no data)"
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError("sensitivity data must be a pair (x, y) of held-out inputs and "
                         f"labels, got {type(data).__name__}") from None
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"sensitivity data: x and y must be non-empty and equally long, got "
                         f"{len(x)} and {len(y)}")
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("the sensitivity scan needs a loss: pass loss= (e.g. "
                             "keras.losses.SparseCategoricalCrossentropy(from_logits=True)) or "
                             "compile the model")
    loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    base = _loss(model, loss_fn, x, y, batch_size)
    out = {}
    for name, layer in layers.items():
        original = layer.kernel.numpy()
        deltas = []
        try:
            for s, g in options[name]:
                layer.kernel.assign(original * group_mask(original, s, g))
                deltas.append(_loss(model, loss_fn, x, y, batch_size) - base)
        finally:
            layer.kernel.assign(original)
        out[name] = _monotone([max(d, 0.0) for d in deltas], options[name])
    return out, f"one-shot loss scan on {len(x)} held-out samples (base loss {base:.4f})"
