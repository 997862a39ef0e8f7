"""Advancing the pruning step and recomputing masks: the one place masks change.

``update_pruning(model)`` advances the step by one and applies the schedules; a custom training
loop calls it once per step, before the step::

    for x, y in dataset:
        tfscalpel.update_pruning(model)
        train_step(x, y)

Inside ``fit``, the ``UpdatePruningStep`` callback does the same with less overhead: it counts
steps in Python and writes the step into the layers only when masks change and at the end of
each epoch.

Layers with their own schedule are pruned one by one. Layers that share a ``global_group`` are
ranked together: their block scores are normalised (divided by the RMS of each layer's scores,
so layers of different scale compete fairly) and one sparsity is applied across all of them.
Each layer of a global ranking keeps at least its best-scoring block in every output unit
(column of the ``(n_blocks, units)`` scores), whatever the ranking says: a ranking that empties a
column of the logits layer deletes a class (its logit becomes the constant bias: LeNet-300-100's
92 % ranking once kept no fc3 weight for classes 1 and 7, and class 7 was never predicted), and
an emptied hidden unit is no removed node either (its bias still feeds the next layer, whose
weights reading it still take the budget; node removal is the gates' job). The floor is at most
one block per unit, and it counts: the kept blocks, floor included, are the target's
``1 - sparsity`` share of all blocks, so the achieved sparsity is the target unless the floor
alone exceeds the budget (then it is ``1 - units / blocks``, which the masks report).
"""

import numpy as np

from tfscalpel.backend_state import read_numpy, write
from tfscalpel.checks import is_integer
from tfscalpel.layers import pruned_layers, pruning_boundary


def checked_pruned_layers(model):
    """The model's pruned layers; raises ValueError if there are none or some are unbuilt."""
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
    return layers


def recorded_step(layers):
    """The last step written into the layers (-1 before any pruning)."""
    return int(read_numpy(layers[0].pruning_step))


def record_step(layers, step):
    """Write ``step`` into every layer's ``pruning_step`` (saved with the model)."""
    for layer in layers:
        write(layer.pruning_step, step)


def apply_schedules(layers, step, before_change=None):
    """Recompute the masks whose schedule asks for it at ``step``; returns True if any did.
    ``before_change()``, if given, runs once before the first mask is read (a callback syncs
    the backend's training state there, :mod:`tfscalpel.backend_state`)."""
    groups = {}
    changed = []
    decisions = [(layer, *layer.schedule(step)) for layer in layers]
    if before_change is not None and any(update for _, update, _ in decisions):
        before_change()
    for layer, update, amount in decisions:
        if not update:
            continue
        changed.append(layer)
        if layer.global_group is not None:
            groups.setdefault(layer.global_group, []).append((layer, amount))
        elif layer.schedule.mode == "threshold":
            _prune_by_normalised_threshold(layer, amount)
        else:
            layer.prune_to(sparsity=amount)
    for members in groups.values():
        _prune_globally([layer for layer, _ in members], members[0][1])
    if changed:
        record_step(changed, step)
    return bool(changed)


def update_pruning(model, step=None):
    """Advance every pruned layer of ``model`` to ``step`` (default: its last step + 1) and
    recompute the masks whose schedule says so. Returns the step used.

    Raises ValueError if the model has no pruned layers or they are not built, or for a step
    that is not an integer >= 0. Call it eagerly, between steps (it runs the schedules in
    Python and NumPy): inside a ``tf.function`` it raises RuntimeError saying so.
    """
    _refuse_tracing()
    if step is not None and (not is_integer(step) or step < 0):
        raise ValueError(f"update_pruning: step must be an integer >= 0 (or None: the last "
                         f"step + 1), got {step!r}")
    layers = checked_pruned_layers(model)
    step = recorded_step(layers) + 1 if step is None else int(step)
    apply_schedules(layers, step)
    record_step(layers, step)
    return step


def _refuse_tracing():
    """update_pruning reads variables as NumPy, which a traced function cannot do; say so
    instead of autograph's traceback."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if not tf.executing_eagerly():
        raise RuntimeError(
            "update_pruning() was called inside a tf.function: it runs the schedules and "
            "recomputes the masks in Python and NumPy, so it must run eagerly, between training "
            "steps. Call it before your @tf.function train step, not inside it:\n"
            "    for x, y in dataset:\n"
            "        tfscalpel.update_pruning(model)\n"
            "        train_step(x, y)  # the tf.function")


def normalise_scores(scores):
    """Scores divided by their root mean square; a layer of all-zero scores stays zero."""
    rms = float(np.sqrt(np.mean(np.square(scores))))
    return scores / rms if rms > 0 else scores


def _prune_by_normalised_threshold(layer, threshold):
    state = layer._numpy_state()
    scores = layer.block_scores(state)
    keep = normalise_scores(scores) > threshold
    layer.apply_block_mask(keep, pruning_boundary(scores, keep), state)


def unit_floor(scores):
    """The blocks a global ranking keeps whatever their rank: the best-scoring block of each
    output unit, as a boolean array shaped like ``scores`` ``(n_blocks, units)`` (ties: the
    first block)."""
    scores = np.asarray(scores)
    floor = np.zeros(scores.shape, dtype=bool)
    if scores.size:
        floor[np.argmax(scores, axis=0), np.arange(scores.shape[1])] = True
    return floor


def _prune_globally(layers, amount):
    """One ranking across ``layers`` on normalised scores; every layer keeps its
    :func:`unit_floor` (the module docstring says why), which counts towards the kept share."""
    states = [layer._numpy_state() for layer in layers]
    scores = [layer.block_scores(state) for layer, state in zip(layers, states)]
    normalised = [normalise_scores(s) for s in scores]
    floors = [unit_floor(n) for n in normalised]
    if layers[0].schedule.mode == "threshold":
        keeps = [(n > amount) | f for n, f in zip(normalised, floors)]
    else:
        # The floor ranks above everything (+inf), so the sparsity target prunes among the rest;
        # capped so that it never reaches into the floor.
        flat = np.concatenate([np.where(f, np.inf, n).reshape(-1, 1)
                               for n, f in zip(normalised, floors)])
        n_floor = sum(int(f.sum()) for f in floors)
        amount = min(float(amount), (flat.size - n_floor) / flat.size)
        keep_flat = layers[0].pattern.keep_blocks(flat, sparsity=amount).ravel()
        bounds = np.cumsum([n.size for n in normalised])[:-1]
        keeps = [k.reshape(n.shape) for k, n in zip(np.split(keep_flat, bounds), normalised)]
    for layer, s, keep, state in zip(layers, scores, keeps, states):
        layer.apply_block_mask(keep, pruning_boundary(s, keep), state)
