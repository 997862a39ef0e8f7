"""Keras callbacks that drive pruning inside ``model.fit``."""
import keras
import numpy as np

from tfscalpel.layers import pruned_layers
from tfscalpel.mask_update import update_pruning


class UpdatePruningStep(keras.callbacks.Callback):
    """Advance the pruning step and update masks by each layer's schedule before every batch.

    Required whenever a pruned model trains with ``fit``. The step is stored in the layers
    (``pruning_step``), so a resumed run (``BackupAndRestore``, a reloaded ``.keras`` file)
    continues where it stopped and reaches the same masks.
    """

    def on_train_batch_begin(self, batch, logs=None):
        update_pruning(self.model)


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
        step = int(np.asarray(keras.ops.convert_to_numpy(layers[0].pruning_step.value)))
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
