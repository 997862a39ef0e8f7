"""Advancing the pruning step and recomputing masks: the one place masks change.

``update_pruning(model)`` is what the ``UpdatePruningStep`` callback calls before every training
batch; a custom training loop calls it itself, once per step, before the step::

    for x, y in dataset:
        tfscalpel.update_pruning(model)
        train_step(x, y)

Layers with their own schedule are pruned one by one. Layers that share a ``global_group`` are
ranked together: their block scores are normalised (divided by the RMS of each layer's scores,
so layers of different scale compete fairly) and one sparsity is applied across all of them.
"""
from keras import ops

from tfscalpel.layers import pruned_layers, pruning_boundary


def normalise_scores(scores):
    """Scores divided by their root mean square; a layer of all-zero scores stays zero."""
    rms = ops.sqrt(ops.mean(ops.square(scores)))
    return ops.where(rms > 0, scores / ops.maximum(rms, 1e-30), scores)


def update_pruning(model, step=None):
    """Advance every pruned layer of ``model`` to ``step`` (default: its last step + 1) and
    recompute the masks whose schedule says so. Returns the step used.

    Raises ValueError if the model has no pruned layers.
    """
    layers = pruned_layers(model)
    if not layers:
        raise ValueError(
            "the model has no pruned layers: wrap it with tfscalpel.prune() or use "
            "GroupPrunedDense / GroupPrunedConv2D layers"
        )
    unbuilt = [layer.name for layer in layers if not layer.built]
    if unbuilt:
        raise ValueError(
            f"pruned layers {unbuilt} are not built yet: call the model on a batch (or "
            "model.build(input_shape)) before training a subclassed model"
        )
    if step is None:
        step = int(ops.convert_to_numpy(layers[0].pruning_step.value)) + 1
    step = int(step)
    groups = {}
    for layer in layers:
        layer.pruning_step.assign(step)
        update, amount = layer.schedule(step)
        if not update:
            continue
        if layer.global_group is not None:
            groups.setdefault(layer.global_group, []).append((layer, amount))
        elif layer.schedule.mode == "threshold":
            _prune_by_normalised_threshold(layer, amount)
        else:
            layer.prune_to(sparsity=amount)
    for members in groups.values():
        _prune_globally([layer for layer, _ in members], members[0][1])
    return step


def _prune_by_normalised_threshold(layer, threshold):
    scores = layer.block_scores()
    keep = ops.greater(normalise_scores(scores), threshold)
    rms = float(ops.sqrt(ops.mean(ops.square(scores))))
    layer.apply_block_mask(keep, threshold * rms)


def _prune_globally(layers, amount):
    """One ranking across ``layers`` on normalised scores."""
    mode = layers[0].schedule.mode
    scores = [layer.block_scores() for layer in layers]
    normalised = [normalise_scores(s) for s in scores]
    if mode == "threshold":
        keeps = [ops.greater(n, amount) for n in normalised]
    else:
        flat = ops.concatenate([ops.reshape(n, (-1, 1)) for n in normalised], axis=0)
        keep_flat = ops.reshape(layers[0].pattern.keep_blocks(flat, sparsity=amount), (-1,))
        keeps, start = [], 0
        for n in normalised:
            size = int(n.shape[0] * n.shape[1])
            keeps.append(ops.reshape(keep_flat[start:start + size], n.shape))
            start += size
    for layer, s, keep in zip(layers, scores, keeps):
        layer.apply_block_mask(keep, pruning_boundary(s, keep))
