"""Keras callbacks that drive pruning inside ``model.fit``."""
import keras
import numpy as np

from tfscalpel.layers import pruned_layers
from tfscalpel.mask_update import apply_schedules, checked_pruned_layers, record_step, recorded_step


def _current_step(model, layers):
    """The step training is at: the optimizer's iteration count (restored by BackupAndRestore
    and .keras loading), or the step recorded in the layers when that is later (a new
    optimizer after recompiling starts its count at 0, but pruning must not start over)."""
    iterations = -1
    if getattr(model, "optimizer", None) is not None:
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return max(iterations, recorded_step(layers) + 1)


class UpdatePruningStep(keras.callbacks.Callback):
    """Advance the pruning step and update masks by each layer's schedule before every batch.

    Required whenever a pruned model trains with ``fit``. The step follows the optimizer's
    iteration count and is also written into the layers (``pruning_step``) whenever masks change
    and at the end of every epoch, so a resumed run (``BackupAndRestore``, a reloaded
    ``.keras`` file) continues where it stopped and reaches the same masks.
    """

    def on_train_begin(self, logs=None):
        self._layers = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._layers is None:
            # Resolved at the first batch, after every on_train_begin (BackupAndRestore
            # restores the model there).
            self._layers = checked_pruned_layers(self.model)
            self._step = _current_step(self.model, self._layers)
        apply_schedules(self._layers, self._step)
        self._step += 1

    def _record(self):
        if self._layers is not None:
            record_step(self._layers, self._step - 1)

    def on_epoch_end(self, epoch, logs=None):
        self._record()

    def on_train_end(self, logs=None):
        self._record()


class PruningSummaries(keras.callbacks.Callback):
    """Write per-layer sparsity and score threshold to TensorBoard at the end of each epoch
    (and every ``update_freq`` batches when it is an integer).

    Args:
        log_dir: directory for the event files.
        update_freq: ``"epoch"`` or a number of batches.
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if update_freq != "epoch" and (not isinstance(update_freq, int) or update_freq < 1):
            raise ValueError(f"update_freq must be 'epoch' or an integer >= 1, got {update_freq!r}")
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf  # summaries are TensorBoard's, i.e. TF's

        self._writer = tf.summary.create_file_writer(self.log_dir)

    def _write(self):
        import tensorflow as tf

        layers = pruned_layers(self.model)
        if not layers:
            return
        step = _current_step(self.model, layers) - 1
        with self._writer.as_default():
            for layer in layers:
                tf.summary.scalar(f"{layer.name}/sparsity", layer.mask_sparsity(), step=step)
                threshold = float(keras.ops.convert_to_numpy(layer.pruning_threshold.value))
                tf.summary.scalar(f"{layer.name}/threshold", threshold, step=step)
        self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(self.update_freq, int) and (batch + 1) % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class SparsityHistory(keras.callbacks.Callback):
    """Add the model's pruning state to the epoch logs, so ``model.fit``'s ``History`` keeps it
    beside loss and accuracy (and :func:`tfscalpel.report.plot_training` can draw it):

    - ``sparsity/<layer>``: mask sparsity of each pruned layer (fraction of weights masked out),
    - ``sparsity``: the same over all pruned layers, weighted by their weight counts,
    - ``kept/<mask layer>``: fraction of live nodes of each :class:`~tfscalpel.MaskLayer`.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from tfscalpel.gates import mask_layers

        masked = total = 0.0
        for layer in pruned_layers(self.model):
            sparsity = layer.mask_sparsity()
            logs[f"sparsity/{layer.name}"] = sparsity
            size = float(np.prod(layer.kernel.shape))
            masked, total = masked + sparsity * size, total + size
        if total:
            logs["sparsity"] = masked / total
        for layer in mask_layers(self.model):
            logs[f"kept/{layer.name}"] = float(np.mean(layer.kept()))
