"""Trainable node gates (Scalpel's mask layer): node pruning for Dense units and conv channels.

A :class:`MaskLayer` sits after a Dense or Conv2D layer (after its activation, pooling or batch
norm) and holds one trainable *gate* per node (the last axis). A node is alive while its gate is
above ``threshold``; with a hysteresis band ``h`` a live node dies only when its gate falls to
``threshold - h`` or below, and a dead node comes back only above ``threshold + h``, so gates
near the threshold do not flicker. The forward pass multiplies the input by the binary mask, so
a dead node outputs exactly zero and :func:`tfscalpel.strip` can remove it without changing the
model's outputs. The gradient reaches the gates straight through the binarisation (as if the
output were ``x * gate``), so a dead node still sees whether the loss wants it back.

An L1 penalty ``penalty * sum(|gate|)`` pushes the gates down; its strength lives in a
non-trainable variable that :class:`tfscalpel.GateTraining` raises stage by stage, and a
``frozen`` flag fixes the mask for the final fine-tuning. Everything (gates, mask, penalty,
frozen flag) is a layer weight, saved with ``.keras`` files and checkpoints.
"""
import keras
import numpy as np
from keras import ops


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
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

    The mask is recomputed from the gates on every training call (unless frozen); at inference
    the stored mask is used as it is.
    """

    def __init__(self, threshold=0.5, hysteresis=0.05, clamp=(0.0, 1.0), initial_gate=1.0,
                 **kwargs):
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
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError(f"MaskLayer {self.name!r}: the last axis of the input must be known")
        self.gate = self.add_weight(
            name="gate", shape=(units,), initializer=keras.initializers.Constant(self.initial_gate),
            constraint=Clamp(*self.clamp), trainable=True,
        )
        self.node_mask = self.add_weight(
            name="node_mask", shape=(units,), initializer="ones", trainable=False,
        )
        self.penalty = self.add_weight(
            name="penalty", shape=(), initializer="zeros", trainable=False,
        )
        self.frozen = self.add_weight(
            name="frozen", shape=(), initializer="zeros", trainable=False,
        )
        # Rank of the gated tensor: 4 for conv feature maps, 2 for Dense outputs. Used by
        # GateTraining to prune conv masks before dense masks.
        self.input_rank = len(input_shape)

    def call(self, inputs, training=None):
        if not training:
            return ops.multiply(inputs, ops.cast(self.node_mask, inputs.dtype))
        gate = ops.convert_to_tensor(self.gate)
        frozen = ops.convert_to_tensor(self.frozen)
        alive = ops.greater(self.node_mask, 0.5)
        new_mask = ops.where(
            alive,
            ops.greater(gate, self.threshold - self.hysteresis),
            ops.greater(gate, self.threshold + self.hysteresis),
        )
        new_mask = ops.where(ops.greater(frozen, 0.5), self.node_mask,
                             ops.cast(new_mask, self.node_mask.dtype))
        self.node_mask.assign(new_mask)
        # Straight-through estimator: the forward value is exactly the binary mask
        # (gate - stop_gradient(gate) is exactly 0), the backward pass sees d(x * gate)/d gate.
        # Frozen gates get no gradient.
        straight_through = ops.multiply(gate - ops.stop_gradient(gate), 1.0 - frozen)
        self.add_loss(ops.multiply(self.penalty, ops.sum(ops.abs(gate))))
        return ops.multiply(inputs, ops.cast(new_mask + straight_through, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    # -- inspection -----------------------------------------------------------------------------
    def kept(self):
        """Boolean NumPy array, True for live nodes."""
        return ops.convert_to_numpy(self.node_mask) > 0.5

    @property
    def units(self):
        """Number of gated nodes (the size of the last axis)."""
        return int(self.gate.shape[0])

    def num_kept(self):
        """Number of live nodes."""
        return int(np.sum(self.kept()))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "hysteresis": self.hysteresis, "clamp": list(self.clamp),
                "initial_gate": self.initial_gate}


def mask_layers(model):
    """Every :class:`MaskLayer` of ``model``, nested models included, in order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, MaskLayer)]
