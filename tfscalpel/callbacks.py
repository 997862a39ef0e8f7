"""Keras callbacks that drive pruning inside ``model.fit``."""
import warnings

import keras
import numpy as np

from tfscalpel.backend_state import sync_model_state
from tfscalpel.gates import mask_layers
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


def _steps_per_execution(model):
    """How many optimizer steps one ``fit`` execution runs (``compile(steps_per_execution=)``)."""
    value = getattr(model, "steps_per_execution", 1) or 1
    return max(int(keras.ops.convert_to_numpy(value)), 1)


class UpdatePruningStep(keras.callbacks.Callback):
    """Advance the pruning step and update masks by each layer's schedule before every batch.

    Required whenever a pruned model trains with ``fit``. The step follows the optimizer's
    iteration count and is also written into the layers (``pruning_step``) whenever masks change
    and at the end of every epoch, so a resumed run (``BackupAndRestore``, a reloaded
    ``.keras`` file) continues where it stopped and reaches the same masks.

    With ``compile(steps_per_execution=k)`` Keras calls the callback once per k optimizer steps;
    masks can only change between executions, so every schedule update that falls inside the
    coming execution is applied at its start, and the step advances by the steps really run.
    At the end of training, a warning names the layers that are still dense although their
    schedule asks for sparsity (training ended before the schedule pruned anything).

    Steps are counted from the batch indices Keras passes to ``on_train_batch_begin`` (numbered
    from 0 in every epoch, the first batch of each execution), so the callback has no
    ``on_train_batch_end``: on backends whose ``fit`` dispatches batch ends to a thread (JAX,
    PyTorch; TensorFlow's are always synchronous), a callback defining one makes every batch
    end synchronous, so the step's logs are converted to Python numbers before the next step
    may start.
    """

    def on_train_begin(self, logs=None):
        self._layers = None
        self._first_batch = True
        self._epoch_start = None  # the step of batch 0 of the current epoch
        self._next_step = None  # the step after the last execution begun

    def on_epoch_begin(self, epoch, logs=None):
        # Keras numbers the batches of every epoch from 0: this epoch starts where the last
        # execution begun ended (None before the first batch of this fit).
        self._epoch_start = self._next_step

    def on_train_batch_begin(self, batch, logs=None):
        if self._layers is None:
            # Resolved at the first batch, after every on_train_begin (BackupAndRestore
            # restores the model there).
            if not pruned_layers(self.model) and mask_layers(self.model):
                # A node-pruning-only plan (e.g. gpu-ampere where no layer takes 2:4): the
                # recipe's callback has nothing to do; GateTraining drives the gates.
                warnings.warn("UpdatePruningStep: the model has no weight-pruned layers, only "
                              "MaskLayer gates (driven by GateTraining): nothing to update",
                              stacklevel=2)
                self._layers = []
                return
            self._layers = checked_pruned_layers(self.model)
            for layer in self._layers:
                layer.zero_pruned()  # a kernel written since (set_weights) may hold stale values
            self._epoch_start = _current_step(self.model, self._layers) - batch
            self._per_execution = _steps_per_execution(self.model)
        if not self._layers:
            return
        first = self._epoch_start + batch
        self._next_step = first + self._per_execution
        for step in range(first, self._next_step):
            apply_schedules(self._layers, step, lambda: sync_model_state(self.model))
        if self._first_batch:
            # The layers refuse to train at step -1 (no callback drives them); from here on the
            # step is written only when masks change and at the end of each epoch.
            self._first_batch = False
            sync_model_state(self.model)
            record_step(self._layers, self._next_step - 1)

    def _record(self):
        if self._layers:
            record_step(self._layers, self._next_step - 1)

    def on_epoch_end(self, epoch, logs=None):
        self._record()

    def on_train_end(self, logs=None):
        self._record()
        if self._layers:
            _warn_unfinished_schedules(self._layers, self._next_step - 1)


def _warn_unfinished_schedules(layers, last_step):
    """Say which layers training left with no weight pruned although their schedule asks for
    some (tfmot is silent: e.g. training ended before ``begin_step``, or before a
    ``PolynomialDecay``'s first update above 0). A schedule still ramping at the end of one
    ``fit`` call is normal when training continues in another, so that alone is not warned."""
    still_dense = {}
    for layer in layers:
        schedule = layer.schedule
        if not schedule.final_amount > 0 or layer.mask_sparsity() > 0:
            continue
        begin = getattr(schedule, "begin_step", 0)
        reason = f"their schedule ends at {schedule.mode} {schedule.final_amount:g}"
        if begin > last_step:
            reason += f" and begins at step {begin}"
        still_dense.setdefault(reason, []).append(layer.name)
    for reason, names in still_dense.items():
        warnings.warn(f"layers {names} are still dense after training stopped at pruning step "
                      f"{last_step}, but {reason}. Train for more steps, or make the schedule "
                      "begin earlier or update more often (frequency).", stacklevel=3)


class PruningSummaries(keras.callbacks.Callback):
    """Write per-layer sparsity and score threshold to TensorBoard at the end of each epoch
    (and every ``update_freq`` batches when it is an integer).

    Args:
        log_dir: directory for the event files.
        update_freq: ``"epoch"``, ``"batch"`` (every batch, tfmot's default) or a number of
            batches.
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (isinstance(update_freq, bool)
                                       or not isinstance(update_freq, int) or update_freq < 1):
            raise ValueError("PruningSummaries: update_freq must be 'epoch', 'batch' or an "
                             f"integer >= 1, got {update_freq!r}")
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writer = None

    @property
    def async_safe(self):
        """Whether Keras 3 may run ``on_train_batch_end`` on another thread (on the backends
        that dispatch batch ends asynchronously, which a synchronous batch-end hook turns off):
        yes when summaries are written per epoch only, the hook does nothing then."""
        return self.update_freq == "epoch"

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
            sync_model_state(self.model)
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
