"""Trainable node gates (Scalpel's mask layer): node pruning for Dense units and conv channels
(and attention heads: :class:`~tfscalpel.GatedMultiHeadAttention` holds one MaskLayer over its
heads).

A :class:`MaskLayer` sits after a Dense or Conv2D layer (after its activation, pooling or batch
norm) and holds one trainable *gate* per node (the last axis). A node is alive while its gate is
above ``threshold``; with a hysteresis band ``h`` a live node dies only when its gate falls to
``threshold - h`` or below, and a dead node comes back only above ``threshold + h``, so gates
near the threshold do not flicker. The forward pass multiplies the input by the binary mask, so
a dead node outputs exactly zero and :func:`tfscalpel.strip` can remove it without changing the
model's outputs. The gradient reaches the gates straight through the binarisation (as if the
output were ``x * gate``), so a dead node still sees whether the loss wants it back.

*Gate speed.* The optimizer does not train the gate itself but ``gate_param = gate /
gate_scale``. Adam-like optimizers take steps of about their learning rate whatever the size of
the gradient, so a gate stored this way moves ``gate_scale`` times faster than the weights
(Adam 1e-3 and the default ``gate_scale=16``: up to 0.016 per step, 35 steps from 1.0 to the
bottom of the default band, instead of 550). Without it a gate cannot reach the threshold in a
few hundred steps of a penalty stage, and no node is ever removed. The penalty and the
threshold stay in gate units (``gate_scale`` changes the speed, not what a penalty means); with
plain SGD the speed-up is ``gate_scale ** 2``.

An L1 penalty ``penalty * sum(|gate|)`` pushes the gates down; its strength lives in a
non-trainable variable that :class:`tfscalpel.GateTraining` raises stage by stage, and a
``frozen`` flag fixes the mask for the final fine-tuning. Everything (gates, mask, penalty,
frozen flag) is a layer weight or config entry, saved with ``.keras`` files and checkpoints.
"""
import keras
import numpy as np
from keras import ops

from tfscalpel.checks import is_number


#: Default ``gate_scale`` of :class:`MaskLayer` (a power of two, so gate values round-trip exactly).
GATE_SCALE = 16.0


@keras.saving.register_keras_serializable(package="tfscalpel")
class Clamp(keras.constraints.Constraint):
    """Clip every value into ``[min_value, max_value]`` after each optimizer step."""

    def __init__(self, min_value, max_value):
        self.min_value, self.max_value = float(min_value), float(max_value)

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


def _check_number(value, arg):
    if not is_number(value) or not np.isfinite(value):
        raise ValueError(f"MaskLayer: {arg} must be a finite number, got {value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="tfscalpel")
class MaskLayer(keras.layers.Layer):
    """One trainable gate per node of the last axis; ``output = inputs * mask``.

    Args:
        threshold: a node is kept while its gate is above this value.
        hysteresis: half-width ``h`` of the band around ``threshold``: a live node dies at
            ``gate <= threshold - h``, a dead one revives at ``gate > threshold + h``.
        clamp: ``(min, max)`` range the gates are clipped to after every optimizer step; it
            must contain the band, so every node can still die and revive.
        initial_gate: starting value of every gate (inside ``clamp``, above the band).
        gate_scale: the optimizer trains ``gate / gate_scale``, so one optimizer step moves a
            gate ``gate_scale`` times as far as it moves a weight (see the module docstring).
            Read the gates with :meth:`gates`, set them with :meth:`set_gates`.

    The mask is recomputed from the gates on every training call (unless frozen); at inference
    the stored mask is used as it is.
    """

    def __init__(self, threshold=0.5, hysteresis=0.05, clamp=(0.0, 1.0), initial_gate=1.0,
                 gate_scale=GATE_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.threshold = _check_number(threshold, "threshold")
        self.hysteresis = _check_number(hysteresis, "hysteresis")
        if self.hysteresis < 0:
            raise ValueError(f"MaskLayer: hysteresis must be >= 0, got {hysteresis!r}")
        if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
            raise ValueError(f"MaskLayer: clamp must be a (min, max) pair, got {clamp!r}")
        lo, hi = (_check_number(v, "clamp") for v in clamp)
        if not lo <= self.threshold - self.hysteresis < self.threshold + self.hysteresis <= hi:
            raise ValueError(
                f"MaskLayer: clamp {tuple(clamp)} must contain the band [threshold - hysteresis, "
                f"threshold + hysteresis] = [{self.threshold - self.hysteresis}, "
                f"{self.threshold + self.hysteresis}] with the band non-empty, or nodes could "
                "never die or revive"
            )
        self.clamp = (lo, hi)
        self.initial_gate = _check_number(initial_gate, "initial_gate")
        if not self.threshold + self.hysteresis < self.initial_gate <= hi:
            raise ValueError(
                f"MaskLayer: initial_gate must be in (threshold + hysteresis, clamp max] = "
                f"({self.threshold + self.hysteresis}, {hi}], got {initial_gate!r}"
            )
        self.gate_scale = _check_number(gate_scale, "gate_scale")
        if self.gate_scale <= 0:
            raise ValueError(f"MaskLayer: gate_scale must be > 0, got {gate_scale!r}")
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError(f"MaskLayer {self.name!r}: the last axis of the input must be known")
        # The optimizer trains gate / gate_scale; the clamp applies in those units. Under a
        # mixed precision policy every gate variable stays float32 inside call (autocast=False):
        # the band comparisons and the penalty need float32, only the final multiplier is cast
        # to the input's dtype.
        self.gate_param = self.add_weight(
            name="gate_param", shape=(units,),
            initializer=keras.initializers.Constant(self.initial_gate / self.gate_scale),
            constraint=Clamp(self.clamp[0] / self.gate_scale, self.clamp[1] / self.gate_scale),
            trainable=True, autocast=False,
        )
        self.node_mask = self.add_weight(
            name="node_mask", shape=(units,), initializer="ones", trainable=False,
            autocast=False,
        )
        self.penalty = self.add_weight(
            name="penalty", shape=(), initializer="zeros", trainable=False, autocast=False,
        )
        self.frozen = self.add_weight(
            name="frozen", shape=(), initializer="zeros", trainable=False, autocast=False,
        )
        # Rank of the gated tensor: 4 for conv feature maps, 2 for Dense outputs. Used by
        # GateTraining to prune conv masks before dense masks.
        self.input_rank = len(input_shape)

    def call(self, inputs, training=None):
        if not training:
            return ops.multiply(inputs, ops.cast(self.node_mask, inputs.dtype))
        gate = self.gate
        # Tensors, not the variables: JAX's tracing refuses a variable as an operand of where.
        frozen = ops.convert_to_tensor(self.frozen)
        old_mask = ops.convert_to_tensor(self.node_mask)
        alive = ops.greater(old_mask, 0.5)
        new_mask = ops.where(
            alive,
            ops.greater(gate, self.threshold - self.hysteresis),
            ops.greater(gate, self.threshold + self.hysteresis),
        )
        new_mask = ops.where(ops.greater(frozen, 0.5), old_mask,
                             ops.cast(new_mask, old_mask.dtype))
        self.node_mask.assign(new_mask)
        # Straight-through estimator: the forward value is exactly the binary mask
        # (gate - stop_gradient(gate) is exactly 0), the backward pass sees d(x * gate)/d gate.
        # Frozen gates get no gradient.
        straight_through = ops.multiply(gate - ops.stop_gradient(gate), 1.0 - frozen)
        self.add_loss(ops.multiply(self.penalty, ops.sum(ops.abs(gate))))
        return ops.multiply(inputs, ops.cast(new_mask + straight_through, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    # -- gates --------------------------------------------------------------------------------
    @property
    def gate(self):
        """The gates as a tensor: ``gate_scale * gate_param``."""
        return ops.multiply(ops.convert_to_tensor(self.gate_param), self.gate_scale)

    def gates(self):
        """The gates as a NumPy array."""
        return ops.convert_to_numpy(self.gate)

    def set_gates(self, values):
        """Set the gates (in gate units; the mask follows at the next training call)."""
        values = np.broadcast_to(np.asarray(values, "float32"), self.gate_param.shape)
        self.gate_param.assign(values / np.float32(self.gate_scale))

    # -- inspection -----------------------------------------------------------------------------
    def kept(self):
        """Boolean NumPy array, True for live nodes."""
        return ops.convert_to_numpy(self.node_mask) > 0.5

    @property
    def units(self):
        """Number of gated nodes (the size of the last axis)."""
        return int(self.gate_param.shape[0])

    def num_kept(self):
        """Number of live nodes."""
        return int(np.sum(self.kept()))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "hysteresis": self.hysteresis, "clamp": list(self.clamp),
                "initial_gate": self.initial_gate, "gate_scale": self.gate_scale}


def mask_layers(model):
    """Every :class:`MaskLayer` of ``model``, nested models included, in order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, MaskLayer)]
