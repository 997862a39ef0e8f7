"""A custom training loop for ``tf.distribute`` strategies where Keras 3's ``fit`` fails.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` even for an unpruned model
(``Attempt to convert a value (PerReplica ...)``, keras-team/keras#20585). A custom loop works:
:func:`distributed_fit` advances the pruning step eagerly before every step, as
``UpdatePruningStep`` does in ``fit``, so every worker computes the same masks from the same
synchronised kernels, then runs the step on every replica. TensorFlow backend only.
"""
import keras

from tfscalpel.layers import pruned_layers
from tfscalpel.mask_update import update_pruning


def distributed_fit(model, dataset, loss, optimizer, epochs=1, strategy=None):
    """Train a pruned ``model`` on ``dataset`` under ``strategy`` with a custom loop.

    Args:
        model: a pruned model built (and ``prune()``-d) inside ``strategy.scope()``.
        dataset: a ``tf.data.Dataset`` of ``(x, y)`` global batches; it is distributed with
            ``strategy.experimental_distribute_dataset`` (each worker passes its own shard, or
            the same data with auto-sharding).
        loss: a Keras loss name, function or ``keras.losses.Loss`` (per example; averaged over
            the global batch, plus the model's own losses such as MaskLayer penalties).
        optimizer: a Keras optimizer created inside ``strategy.scope()``.
        epochs: passes over ``dataset``.
        strategy: default the current ``tf.distribute`` strategy.

    Returns ``{"loss": [mean loss of each epoch]}``. Masks change exactly as with ``fit`` and
    ``UpdatePruningStep``: :func:`tfscalpel.update_pruning` before every step.
    """
    import tensorflow as tf  # tf.distribute is TensorFlow's

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("distributed_fit runs tf.distribute strategies: it needs "
                           f"KERAS_BACKEND=tensorflow, not {keras.backend.backend()!r}")
    strategy = strategy or tf.distribute.get_strategy()
    per_example = loss.call if isinstance(loss, keras.losses.Loss) else keras.losses.get(loss)
    if per_example is None:
        raise ValueError(f"distributed_fit: unknown loss {loss!r}")
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)
            # Global-batch average: the per-replica sums add up to the mean over all replicas.
            losses = tf.reshape(per_example(y, predictions), [tf.shape(x)[0], -1])
            value = tf.nn.compute_average_loss(
                tf.reduce_mean(losses, axis=1),
                global_batch_size=tf.shape(x)[0] * strategy.num_replicas_in_sync)
            if model.losses:
                value += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    @tf.function
    def train_step(x, y):
        return strategy.reduce("SUM", strategy.run(replica_step, args=(x, y)), axis=None)

    prunes = bool(pruned_layers(model))  # a gates-only model has no step to advance
    history = {"loss": []}
    distributed = strategy.experimental_distribute_dataset(dataset)
    for _ in range(epochs):
        total, steps = 0.0, 0
        for x, y in distributed:
            if prunes:
                update_pruning(model)  # eager, identical on every worker
            total += float(train_step(x, y))
            steps += 1
        history["loss"].append(total / max(steps, 1))
    return history
