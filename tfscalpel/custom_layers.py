"""The custom-layer protocol: a user layer that says which weights to prune is pruned without
writing a twin (tfmot's ``PrunableLayer.get_prunable_weights``).

A Keras layer of a class with no registered handler that defines::

    def get_prunable_weights(self):
        return [self.w]                      # variables of this layer, after build

is wrapped by :func:`tfscalpel.prune` in :class:`PrunedWeights`. Groups run along the first
``ndim - 1`` axes of each weight (a ``(fan_in, units)`` matrix, as a Dense kernel); a layer
whose weight is laid out otherwise also defines ``prunable_fan_in_ndim`` (an int used for
every weight, with :class:`~tfscalpel.PrunableMixin`'s meaning: negative for the last axes).

How it masks: before each call, every prunable weight is multiplied by its mask in place (as
tfmot's wrapper does), so the layer's own ``call`` runs unchanged on masked weights. The
optimizer may move masked entries between calls; the next call zeroes them again, and
:func:`tfscalpel.strip` bakes the mask in. Layers whose math can take the mask directly are
better served by a twin (:class:`~tfscalpel.PrunableMixin`, :func:`tfscalpel.register_layer`).
"""
import keras

from tfscalpel.config_objects import serialize_pruning_args
from tfscalpel.layers import PrunableMixin


class WeightMask(PrunableMixin, keras.layers.Layer):
    """The pruning state (mask, step, threshold) of one weight of a wrapped custom layer. Its
    ``kernel`` is that weight, which it does not own (the wrapped layer does)."""

    def __init__(self, target=None, pattern="group", importance=None, schedule=None,
                 global_group=None, fan_in_ndim=None, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_target", target)  # untracked: the wrapped layer owns it
        self.fan_in_ndim = fan_in_ndim
        self._init_pruning(pattern, importance, schedule, global_group)

    @property
    def kernel(self):
        return self._target

    def build(self, input_shape=None):
        self._build_pruning_weights()
        self.built = True

    def call(self, inputs):
        return inputs


@keras.saving.register_keras_serializable(package="tfscalpel")
class PrunedWeights(keras.layers.Wrapper):
    """Wraps a layer that has ``get_prunable_weights()`` and masks those weights (see the
    module docstring). Arguments as :class:`~tfscalpel.GroupPrunedDense` plus ``layer``."""

    def __init__(self, layer, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        kwargs.setdefault("name", f"{layer.name}")
        super().__init__(layer, **kwargs)
        if not callable(getattr(layer, "get_prunable_weights", None)):
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no "
                             "get_prunable_weights() method")
        if schedule is None:
            raise ValueError(f"layer {self.name!r}: schedule is required")
        self._pruning_args = dict(pattern=pattern, importance=importance, schedule=schedule,
                                  global_group=global_group)
        self.masks = []

    @classmethod
    def wrap(cls, layer, **pruning):
        """A wrapper around a fresh, unbuilt copy of ``layer``."""
        copy = layer.__class__.from_config(layer.get_config())
        return cls(copy, name=layer.name, **pruning)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        weights = self.layer.get_prunable_weights()
        if not weights:
            raise ValueError(f"layer {self.layer.name!r}: get_prunable_weights() returned no "
                             "weights")
        owned = {id(v) for v in self.layer.weights}
        for w in weights:
            if id(w) not in owned:
                raise ValueError(f"layer {self.layer.name!r}: get_prunable_weights() returned "
                                 f"{getattr(w, 'path', w)!r}, which is not one of its weights")
        ndim = getattr(self.layer, "prunable_fan_in_ndim", None)
        self.masks = [WeightMask(w, fan_in_ndim=ndim, name=w.name,
                                 **self._pruning_args) for w in weights]
        for mask in self.masks:
            mask.build()
        self.built = True

    def call(self, inputs, *args, **kwargs):
        for mask in self.masks:
            mask.kernel.assign(mask.masked_kernel())
        return self.layer(inputs, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def plain_layer(self):
        """A new, unbuilt copy of the wrapped layer (what :func:`tfscalpel.strip` returns)."""
        return self.layer.__class__.from_config(self.layer.get_config())

    def get_config(self):
        return {**super().get_config(), **serialize_pruning_args(self._pruning_args)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                       custom_objects=custom_objects)
        return cls(layer, **config)

