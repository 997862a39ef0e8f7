"""Pruning schedules: at which training step masks are recomputed, and how aggressively.

A schedule is called with the pruning step and returns ``(update, amount)``: whether masks are
recomputed at this step, and the target. ``mode`` says what the amount means: ``"sparsity"``
(fraction of blocks removed) or ``"threshold"`` (blocks whose *normalised* score — the score
divided by the root mean square of the layer's scores — is at or below it are removed).

``ConstantSparsity`` and ``PolynomialDecay`` follow tensorflow_model_optimization's semantics
exactly, and tfmot's own schedule objects are accepted wherever a schedule is (see
:func:`get_schedule`), so migrating needs no rewrite.
"""
import keras
import numpy as np

from tfscalpel.checks import is_integer, is_number
from tfscalpel.config_objects import ConfigObject


def _plain(*values):
    """NumPy scalars (``np.float32(0.5)``, ``np.int64(100)``) as Python numbers, so they pass the
    checks below and serialise to JSON; everything else unchanged."""
    plain = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
    return plain if len(plain) > 1 else plain[0]


def _check_sparsity(value, arg):
    if not is_number(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{arg} must be a number in [0, 1), got {value!r}")


def _check_int(value, arg, minimum):
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}")


def _check_steps(begin_step, end_step, frequency, allow_open_end):
    _check_int(begin_step, "begin_step", 0)
    _check_int(frequency, "frequency", 1)
    if allow_open_end and end_step == -1:
        return
    if not is_integer(end_step):
        raise ValueError(f"end_step must be an integer, got {end_step!r}")
    if end_step < begin_step:
        raise ValueError(
            f"the schedule ends before it begins: end_step={end_step} < begin_step={begin_step}"
            + (" (use end_step=-1 for no end)" if allow_open_end else "")
        )


def _in_pruning_step(step, begin_step, end_step, frequency):
    """tfmot's rule: inside [begin, end] (end -1 = open) and on a multiple of frequency."""
    in_range = step >= begin_step and (end_step == -1 or step <= end_step)
    return in_range and (step - begin_step) % frequency == 0


class PruningSchedule(ConfigObject):
    """Base class: ``schedule(step) -> (update: bool, amount: float)``."""

    mode = "sparsity"

    def __call__(self, step):
        raise NotImplementedError

    @property
    def final_amount(self):
        """The sparsity or threshold the schedule ends at."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="tfscalpel")
class ConstantSparsity(PruningSchedule):
    """Hold ``target_sparsity`` from ``begin_step``, recomputing masks every ``frequency``
    steps until ``end_step`` (-1: no end). Same semantics as tfmot's ``ConstantSparsity``."""

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        target_sparsity, begin_step, end_step, frequency = _plain(
            target_sparsity, begin_step, end_step, frequency)
        _check_sparsity(target_sparsity, "target_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_open_end=True)
        self.target_sparsity = float(target_sparsity)
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency

    def __call__(self, step):
        update = _in_pruning_step(step, self.begin_step, self.end_step, self.frequency)
        return update, self.target_sparsity

    @property
    def final_amount(self):
        return self.target_sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfscalpel")
class PolynomialDecay(PruningSchedule):
    """Raise sparsity from ``initial_sparsity`` to ``final_sparsity`` between ``begin_step``
    and ``end_step`` along ``final + (initial - final) * (1 - p)**power``; fast early, gentle
    late. Same semantics as tfmot's ``PolynomialDecay``."""

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        initial_sparsity, final_sparsity, begin_step, end_step, power, frequency = _plain(
            initial_sparsity, final_sparsity, begin_step, end_step, power, frequency)
        _check_sparsity(initial_sparsity, "initial_sparsity")
        _check_sparsity(final_sparsity, "final_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_open_end=False)
        if end_step == begin_step:
            raise ValueError(f"end_step must be > begin_step, both are {begin_step}")
        if not is_number(power) or not power > 0:
            raise ValueError(f"power must be a positive number, got {power!r}")
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.begin_step, self.end_step = begin_step, end_step
        self.power, self.frequency = power, frequency

    def sparsity_at(self, step):
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - p) ** self.power

    def __call__(self, step):
        update = _in_pruning_step(step, self.begin_step, self.end_step, self.frequency)
        return update, self.sparsity_at(step)

    @property
    def final_amount(self):
        return self.final_sparsity

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfscalpel")
class StagedThreshold(PruningSchedule):
    """Scalpel's schedule: a score threshold that rises stage by stage.

    Stage ``i`` lasts ``stage_steps`` steps from ``begin_step + i * stage_steps`` and removes
    every block whose normalised score (score / RMS of the layer's scores) is at or below
    ``thresholds[i]``; training in between lets the network recover. Masks are recomputed every
    ``frequency`` steps inside a stage; after the last stage the last threshold holds.
    """

    mode = "threshold"

    def __init__(self, thresholds, stage_steps, begin_step=0, frequency=100):
        thresholds = [_plain(t) for t in thresholds]
        stage_steps, begin_step, frequency = _plain(stage_steps, begin_step, frequency)
        if not thresholds:
            raise ValueError("thresholds must name at least one stage")
        for i, t in enumerate(thresholds):
            if not is_number(t) or not t >= 0:
                raise ValueError(f"thresholds[{i}] must be a number >= 0, got {t!r}")
        if any(b < a for a, b in zip(thresholds, thresholds[1:])):
            raise ValueError(f"thresholds must not decrease from stage to stage, got {thresholds}")
        _check_int(stage_steps, "stage_steps", 1)
        _check_steps(begin_step, -1, frequency, allow_open_end=True)
        self.thresholds = [float(t) for t in thresholds]
        self.stage_steps, self.begin_step, self.frequency = stage_steps, begin_step, frequency

    def __call__(self, step):
        if step < self.begin_step:
            return False, 0.0
        stage = min((step - self.begin_step) // self.stage_steps, len(self.thresholds) - 1)
        end_of_stages = self.begin_step + len(self.thresholds) * self.stage_steps
        update = _in_pruning_step(step, self.begin_step, end_of_stages, self.frequency)
        # Each stage's first step always applies its new threshold.
        update = update or (step - self.begin_step) % self.stage_steps == 0 and step < end_of_stages
        return update, self.thresholds[stage]

    @property
    def final_amount(self):
        return self.thresholds[-1]

    def get_config(self):
        return {
            "thresholds": self.thresholds,
            "stage_steps": self.stage_steps,
            "begin_step": self.begin_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfscalpel")
class IterativePruning(PruningSchedule):
    """Han et al.'s iterative prune-retrain: round ``i`` starts at
    ``begin_step + i * round_steps`` by pruning to ``sparsities[i]``; the mask then stays fixed
    while the network retrains for the rest of the round."""

    def __init__(self, sparsities, round_steps, begin_step=0):
        sparsities = [_plain(s) for s in sparsities]
        round_steps, begin_step = _plain(round_steps, begin_step)
        if not sparsities:
            raise ValueError("sparsities must name at least one round")
        for i, s in enumerate(sparsities):
            _check_sparsity(s, f"sparsities[{i}]")
        if any(b < a for a, b in zip(sparsities, sparsities[1:])):
            raise ValueError(f"sparsities must not decrease from round to round, got {sparsities}")
        _check_int(round_steps, "round_steps", 1)
        _check_int(begin_step, "begin_step", 0)
        self.sparsities = [float(s) for s in sparsities]
        self.round_steps, self.begin_step = round_steps, begin_step

    def __call__(self, step):
        offset = step - self.begin_step
        if offset < 0:
            return False, 0.0
        rnd = min(offset // self.round_steps, len(self.sparsities) - 1)
        update = offset % self.round_steps == 0 and offset // self.round_steps < len(self.sparsities)
        return update, self.sparsities[rnd]

    @property
    def final_amount(self):
        return self.sparsities[-1]

    def get_config(self):
        return {
            "sparsities": self.sparsities,
            "round_steps": self.round_steps,
            "begin_step": self.begin_step,
        }


class _TfmotSchedule(PruningSchedule):
    """Adapter for a tfmot schedule with no tfscalpel equivalent (not serializable)."""

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, step):
        import tensorflow as tf  # tfmot schedules are TF graph code

        update, sparsity = self.schedule(tf.constant(step, dtype=tf.int64))
        return bool(update), float(sparsity)

    @property
    def final_amount(self):
        """tfmot schedules name it ``final_sparsity`` or ``target_sparsity`` in their config; a
        user's subclass may have neither (then the amount at a far step is the best guess)."""
        try:
            config = self.schedule.get_config()["config"]
        except (AttributeError, KeyError, NotImplementedError, TypeError):
            config = {}
        for key in ("final_sparsity", "target_sparsity"):
            if key in config:
                return float(config[key])
        return self(2**62)[1]

    def get_config(self):
        raise TypeError(
            f"tfmot schedule {type(self.schedule).__name__} has no tfscalpel equivalent and "
            "cannot be saved; use a tfscalpel schedule to save the model"
        )


_TFMOT_EQUIVALENTS = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


def _is_tfmot_schedule(spec):
    """tfmot's schedules and users' subclasses of them, recognised by module name (importing tfmot
    would switch tf.keras to Keras 2 for the whole process)."""
    return any((klass.__module__ or "").startswith("tensorflow_model_optimization")
               for klass in type(spec).__mro__)


def get_schedule(spec):
    """Resolve a schedule from a tfscalpel schedule, a Keras config dict, or a tfmot schedule
    object (``ConstantSparsity``/``PolynomialDecay`` become their tfscalpel twins; other tfmot
    schedules, users' subclasses of tfmot's ``PruningSchedule`` included, are called through
    tfmot's contract ``schedule(step) -> (should_prune, sparsity)``)."""
    if isinstance(spec, PruningSchedule):
        return spec
    if isinstance(spec, dict):
        return keras.saving.deserialize_keras_object(spec)
    if _is_tfmot_schedule(spec):
        twin = _TFMOT_EQUIVALENTS.get(type(spec).__name__)
        if twin is not None and type(spec).__module__.startswith("tensorflow_model_optimization"):
            return twin(**spec.get_config()["config"])
        return _TfmotSchedule(spec)
    raise ValueError(
        f"unknown schedule {spec!r}; allowed: ConstantSparsity, PolynomialDecay, "
        "StagedThreshold, IterativePruning, or a tfmot PruningSchedule (its own or a subclass)"
    )
