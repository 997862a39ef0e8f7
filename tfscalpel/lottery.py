"""Lottery tickets (Frankle & Carbin 2019): prune after training, rewind the survivors, retrain.

The pieces are the existing ones: masks come from a pattern and an importance criterion (default
unstructured magnitude), the per-round sparsities are an :class:`~tfscalpel.IterativePruning`
schedule whose step is the *round* (step ``k`` prunes to round ``k``'s sparsity), and the masks
change only through :func:`~tfscalpel.update_pruning`. What this module adds:

- :class:`RecordWeights`, a callback that keeps a copy of the weights at initialisation
  (``at_step=0``) or after ``at_step`` training steps ("late rewinding", Frankle et al. 2020,
  which stabilises tickets of deeper networks);
- :func:`rewind` (survivors back to the recorded values, pruned weights stay zero) and
  :func:`reinitialize` (the random re-initialisation control: fresh draws, same masks);
- :func:`iterative_magnitude_pruning`, the loop: train -> prune ``rate`` of the survivors ->
  rewind -> retrain, for ``rounds`` rounds, evaluating after each.

The training itself is the caller's ``train(model, callbacks)`` (compile and fit as usual,
passing ``callbacks`` on). It must not add :class:`~tfscalpel.UpdatePruningStep`: in a lottery
run the masks stay fixed while a round trains.
"""
import dataclasses

import keras
import numpy as np

from tfscalpel.checks import is_integer, is_number
from tfscalpel.layers import pruned_layers
from tfscalpel.mask_update import update_pruning
from tfscalpel.prune_model import prune
from tfscalpel.schedules import IterativePruning


def _trainable_state(model):
    """``{variable path: value}`` of the trainable weights."""
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}


class RecordWeights(keras.callbacks.Callback):
    """Keep a copy of the model's trainable weights at one training step.

    Args:
        at_step: 0 records the initial weights (before the first update); ``k > 0`` the
            weights after ``k`` optimizer steps of the first ``fit`` it is passed to.

    After training, ``weights`` is ``{variable path: array}`` (None if training stopped
    before ``at_step``).
    """

    def __init__(self, at_step=0):
        super().__init__()
        if not is_integer(at_step) or at_step < 0:
            raise ValueError(f"at_step must be an integer >= 0, got {at_step!r}")
        self.at_step = int(at_step)
        self.weights = None
        self._steps = 0

    def on_train_begin(self, logs=None):
        if self.weights is None and self.at_step == 0:
            self.weights = _trainable_state(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.weights is None and self._steps == self.at_step:
            self.weights = _trainable_state(self.model)


def rewind(model, weights):
    """Set every trainable weight of ``model`` to its recorded value; a pruned layer's kernel
    is multiplied by its mask, so pruned weights stay exactly zero. In place.

    Raises:
        ValueError: if ``weights`` is None or lacks a trainable weight of the model, or a shape
            differs (the record is from another model).
    """
    if weights is None:
        raise ValueError("nothing to rewind to: the RecordWeights callback recorded no weights "
                         "(was training shorter than its at_step?)")
    masks = {layer.kernel.path: keras.ops.convert_to_numpy(layer.pruning_mask)
             for layer in pruned_layers(model)}
    for v in model.trainable_weights:
        if v.path not in weights:
            raise ValueError(f"the recorded weights have no value for {v.path!r}: they were "
                             "recorded on a different model")
        value = np.asarray(weights[v.path])
        if value.shape != tuple(v.shape):
            raise ValueError(f"recorded {v.path!r} has shape {value.shape}, the model "
                             f"{tuple(v.shape)}")
        v.assign(value * masks[v.path] if v.path in masks else value)


def reinitialize(model, seed):
    """The lottery ticket's control: draw every kernel and bias afresh from its layer's own
    initializer (seeded), keeping the masks (pruned weights stay zero). In place."""
    masks = {id(layer): keras.ops.convert_to_numpy(layer.pruning_mask)
             for layer in pruned_layers(model)}
    for i, layer in enumerate(model._flatten_layers(include_self=False, recursive=True)):
        for attr in ("kernel", "bias"):
            var = getattr(layer, attr, None)
            init = getattr(layer, f"{attr}_initializer", None)
            if var is None or init is None or not var.trainable:
                continue
            # Keras initializers take their seed in the constructor: rebuild from the config.
            config = init.get_config()
            if "seed" in config:
                config["seed"] = seed * 1000 + 2 * i + (attr == "bias")
            value = keras.ops.convert_to_numpy(
                type(init).from_config(config)(tuple(var.shape), dtype=var.dtype))
            if attr == "kernel" and id(layer) in masks:
                value = value * masks[id(layer)]
            var.assign(value)


def lottery_sparsities(rate, rounds):
    """Cumulative sparsity after each round when every round removes ``rate`` of the weights
    still alive: ``1 - (1 - rate)**k`` for ``k = 1..rounds``."""
    if not is_number(rate) or not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be a number in (0, 1), got {rate!r}")
    if not is_integer(rounds) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    return [1.0 - (1.0 - rate) ** k for k in range(1, rounds + 1)]


@dataclasses.dataclass
class LotteryRound:
    """One round: its cumulative weight sparsity (over the pruned layers) and the metric."""

    round: int
    sparsity: float
    metric: float = None


@dataclasses.dataclass
class LotteryResult:
    """What :func:`iterative_magnitude_pruning` returns.

    Attributes:
        model: the pruned model after the last round (the trained winning ticket).
        rounds: one :class:`LotteryRound` per round, round 0 being the dense network.
        rewind_weights: the recorded weights the survivors were rewound to.
    """

    model: object
    rounds: list
    rewind_weights: dict


def weight_sparsity(model):
    """Fraction of the pruned layers' kernel weights that are masked out."""
    layers = pruned_layers(model)
    total = sum(int(np.prod(layer.kernel.shape)) for layer in layers)
    alive = sum(float(np.sum(keras.ops.convert_to_numpy(layer.pruning_mask))) for layer in layers)
    return 1.0 - alive / total


def iterative_magnitude_pruning(model, train, rounds, rate, *, rewind_step=0,
                                pattern="unstructured", importance=None, per_layer_rate=None,
                                global_sparsity=False, evaluate=None):
    """Find a lottery ticket by iterative magnitude pruning with rewinding.

    Round 0 trains the (freshly initialised) network while recording its weights at
    ``rewind_step``. Each round ``k = 1..rounds`` then prunes ``rate`` of the surviving weights
    by the layers' criterion, rewinds the survivors to the recorded weights and retrains.

    Args:
        model: an *untrained* Sequential/Functional model (its initial weights are the ones
            rewound to when ``rewind_step=0``); it is copied, not changed.
        train: ``train(model, callbacks)``: compile ``model`` (a fresh optimizer each round)
            and fit it, passing ``callbacks`` on. Seed it for reproducible runs.
        rounds: number of prune-rewind-retrain rounds.
        rate: fraction of the surviving weights removed per round.
        rewind_step: 0 rewinds to initialisation; ``k`` to the weights after ``k`` steps.
        pattern, importance, global_sparsity: as :func:`tfscalpel.prune`.
        per_layer_rate: ``{layer name: rate}`` overriding ``rate`` (Frankle & Carbin prune
            the output layer at half the rate of the others).
        evaluate: optional ``evaluate(model) -> float`` run after every round.

    Returns:
        A :class:`LotteryResult`.
    """
    lottery_sparsities(rate, rounds)  # validates both

    def schedule(r):
        # The schedule's step is the round: step k prunes to round k's sparsity.
        return IterativePruning(lottery_sparsities(r, rounds), round_steps=1, begin_step=1)

    per_layer = {name: {"schedule": schedule(r)} for name, r in (per_layer_rate or {}).items()}
    pruned = prune(model, schedule=schedule(rate), pattern=pattern, importance=importance,
                   per_layer=per_layer, global_sparsity=global_sparsity)
    # Round 0 trains dense at pruning step 0 (the schedule begins at round 1); the step must be
    # set, pruned layers refuse to train at -1.
    update_pruning(pruned, step=0)
    recorder = RecordWeights(rewind_step)
    train(pruned, [recorder])
    if recorder.weights is None:
        raise ValueError(f"rewind_step={rewind_step} is beyond the first round's training steps")
    history = [LotteryRound(0, 0.0, evaluate(pruned) if evaluate else None)]
    for k in range(1, rounds + 1):
        update_pruning(pruned, step=k)
        rewind(pruned, recorder.weights)
        train(pruned, [])
        history.append(LotteryRound(k, weight_sparsity(pruned),
                                    evaluate(pruned) if evaluate else None))
    return LotteryResult(pruned, history, recorder.weights)


def copy_pruned(model):
    """An independent copy of a pruned model (architecture, weights and masks)."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin
