"""tfmot's pruning entry points with tfmot's names and meanings, on top of :func:`tfscalpel.prune`.

A tfmot user's code keeps working after replacing the import::

    from tfscalpel import prune_low_magnitude, strip_pruning, prune_scope
    model = prune_low_magnitude(model, pruning_schedule=PolynomialDecay(0.5, 0.8, 0, 1000))

- ``pruning_schedule`` defaults to tfmot's ``ConstantSparsity(0.5, begin_step=0)``; tfmot's own
  schedule objects and users' subclasses of them are accepted (:func:`tfscalpel.get_schedule`).
- ``block_size=(g, 1)`` prunes blocks of ``g`` consecutive input weights of one output unit
  (tfscalpel's SIMD groups, :class:`~tfscalpel.GroupPattern`); ``(1, 1)`` is unstructured.
  tfmot's blocks span (rows of the kernel, columns of the kernel) = (inputs, outputs).
- ``block_pooling_type``: ``"AVG"`` scores a block by its mean absolute weight, ``"MAX"`` by its
  largest (tfmot's two pooling rules).
- ``sparsity_m_by_n=(m, n)``: tfmot's "m zeros in every n consecutive weights", i.e. tfscalpel's
  ``NMPattern(n - m, n)`` (n - m kept of n).
- ``to_prune`` may be a Sequential/Functional model or one Dense / Conv2D layer (for building a
  model layer by layer, as tfmot allows).
"""
import contextlib

import keras

from tfscalpel.patterns import get_pattern, tfmot_block_pattern
from tfscalpel.layer_handlers import get_handler, load_stock_weights
from tfscalpel.prune_model import prune
from tfscalpel.schedules import ConstantSparsity, get_schedule
from tfscalpel.strip import strip

def _prune_one_layer(layer, pattern, importance, schedule):
    """The pruned twin of one layer (its handler's), keeping the weights if it is built."""
    handler = get_handler(layer)
    if handler.pruned_twin(layer) is None:
        raise ValueError(
            f"prune_low_magnitude: layer {layer.name!r} is a {type(layer).__name__}, which has no "
            "pruned twin; one layer can be pruned when its type has one (Dense, Conv1D/2D/3D, "
            "Conv2DTranspose, SeparableConv2D, DepthwiseConv2D, Embedding, EinsumDense, "
            "MultiHeadAttention, a layer with get_prunable_weights(), or a type given one with "
            "tfscalpel.register_layer); pass a model to prune the layers it can and leave the "
            "rest dense")
    twin = handler.make_twin(layer, pattern=pattern, importance=importance, schedule=schedule)
    if layer.built:
        shapes = getattr(layer, "_build_shapes_dict", None)
        if shapes is not None:
            twin.build(**shapes)
        else:
            twin.build(_input_shape(layer))
        load_stock_weights(twin, layer)
    return twin


def _input_shape(layer):
    """An input shape that builds ``layer``'s twin when the layer did not record the one it
    was built with: only its input channels matter."""
    channels = int(layer.kernel.shape[-2])  # (..., in, out); depthwise: (kh, kw, in, mult)
    rank = len(layer.kernel.shape)  # Dense 2, Conv1D 3, Conv2D 4: the input has the same rank
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return (None, channels) + (None,) * (rank - 2)
    return (None,) * (rank - 1) + (channels,)


def prune_low_magnitude(to_prune, pruning_schedule=None, block_size=(1, 1),
                        block_pooling_type="AVG", sparsity_m_by_n=None, pruning_policy=None,
                        **kwargs):
    """Make a model or one layer prune during training, with tfmot's arguments and defaults.

    Args:
        to_prune: a Sequential or Functional model, or one Dense / Conv2D layer.
        pruning_schedule: a schedule (tfscalpel's or tfmot's); default
            ``ConstantSparsity(0.5, begin_step=0)``, as in tfmot.
        block_size: ``(1, 1)`` single weights, ``(g, 1)`` groups of ``g`` input weights.
        block_pooling_type: ``"AVG"`` or ``"MAX"``: how a block's weights are scored.
        sparsity_m_by_n: ``(m, n)``: ``m`` zeros in every ``n`` consecutive weights.
        pruning_policy: not supported: tfscalpel picks hardware-aware structure with
            ``tfscalpel.prune(model, target=...)`` instead.

    Returns:
        The pruned model (a copy; trained weights kept) or the pruned layer. Train it with
        :class:`~tfscalpel.UpdatePruningStep`, then :func:`strip_pruning` it.
    """
    if pruning_policy is not None:
        raise ValueError("prune_low_magnitude: pruning_policy is tfmot's; in tfscalpel a hardware "
                         "target chooses the structure: tfscalpel.prune(model, target='x86-avx2') "
                         "(see tfscalpel.known_targets())")
    if kwargs:
        raise TypeError(f"prune_low_magnitude: unknown arguments {sorted(kwargs)}")
    try:
        pattern, importance = tfmot_block_pattern(block_size, block_pooling_type, sparsity_m_by_n)
    except ValueError as e:
        raise ValueError(f"prune_low_magnitude: {e}") from None
    # tfmot's default schedule, at the sparsity an m:n pattern fixes (so no "ignored" warning)
    fixed = get_pattern(pattern).fixed_sparsity
    schedule = (ConstantSparsity(0.5 if fixed is None else fixed, begin_step=0)
                if pruning_schedule is None else get_schedule(pruning_schedule))
    if isinstance(to_prune, keras.Model):
        return prune(to_prune, schedule=schedule, pattern=pattern, importance=importance)
    if isinstance(to_prune, keras.layers.Layer):
        return _prune_one_layer(to_prune, pattern, importance, schedule)
    raise ValueError("prune_low_magnitude: to_prune must be a Keras model or layer, got "
                     f"{type(to_prune).__name__}")


@contextlib.contextmanager
def prune_scope():
    """tfmot's scope for loading pruned models. tfscalpel's layers and schedules are registered
    Keras serializables, so ``keras.models.load_model`` needs no scope; this one only keeps tfmot
    code (``with prune_scope(): load_model(...)``) running unchanged."""
    yield


def strip_pruning(model):
    """tfmot's name for :func:`tfscalpel.strip`: the plain Keras model, masks baked in."""
    return strip(model)
