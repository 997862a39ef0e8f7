"""Pruned twins of Embedding, EinsumDense and MultiHeadAttention.

- ``GroupPrunedEmbedding``: the table ``(vocabulary, dim)`` is pruned in groups of ``g``
  consecutive entries of one token's row (along the embedding dim). An embedding is a lookup,
  not a contraction; treating each token's row as a "unit" whose inputs are the ``dim``
  entries gives the layout a row-sparse table needs (one index per kept group of a row, the
  row found by the token id), and masks whole groups of a token's vector. ``fan_in_ndim = -1``
  (the last axis), so the block scores rank groups within each token's row.
- ``GroupPrunedEinsumDense``: the contraction axes are the kernel letters the equation sums
  over (in the input, absent from the output). They must be the leading or the trailing axes
  of the kernel (every EinsumDense that Keras builds, MultiHeadAttention's included); groups
  run along them flattened row-major.
- ``GroupPrunedMultiHeadAttention``: a MultiHeadAttention whose query, key, value (and gate)
  and output projections are ``GroupPrunedEinsumDense`` sublayers with one pattern and
  schedule. Query/key/value contract over the model width ``(d, heads, head_dim)`` kernel:
  groups along ``d``; the output projection ``(heads, head_dim, d)`` contracts over
  ``heads * head_dim``. This is weight pruning.
- ``GatedMultiHeadAttention``: attention heads as prunable nodes. A MultiHeadAttention with one
  :class:`~tfscalpel.MaskLayer` gate per head (``mask_<layer name>``, a sublayer), multiplying
  each head's attention output ``(..., heads, head_dim)`` before the output projection. The
  gate is MaskLayer itself, so its threshold, hysteresis, clamp, ``gate_scale``, L1 penalty and
  frozen flag mean what they mean for units and channels: :class:`~tfscalpel.GateTraining`
  drives it (as a "dense" mask) and :func:`tfscalpel.mask_layers` lists it. Node plans whose
  target node-prunes (``gpu-ampere``; ``per_layer={"mha": {"method": "node"}}`` elsewhere)
  swap it in, and :func:`tfscalpel.strip` turns it into a stock MultiHeadAttention with the
  live heads only (query/key/value kernels ``(d, heads, head_dim)`` and biases sliced along
  the heads axis, the output kernel ``(heads, head_dim, d)`` too). Heads are independent up
  to the output projection, so removing a dead head changes no output. The layer is still
  opaque in the channel graph (its width ``d`` is not a node set): heads are its own nodes.
"""
import keras
import numpy as np
from keras import ops

from tfscalpel.config_objects import serialize_pruning_args
from tfscalpel.gates import MaskLayer
from tfscalpel.layers import PrunableMixin


def einsum_fan_in_ndim(equation, name="EinsumDense"):
    """``fan_in_ndim`` for an EinsumDense equation: ``k`` if the kernel's first ``k`` letters
    are the contraction (summed: in the input, not in the output), ``-k`` if its last ``k``.

    Raises ValueError when the contraction is neither a prefix nor a suffix of the kernel's
    letters, or empty, or the equation uses an ellipsis."""
    inputs, output = equation.replace(" ", "").split("->")
    x, kernel = inputs.split(",")
    if "." in equation:
        raise ValueError(f"layer {name!r}: equation {equation!r} with an ellipsis is not "
                         "supported for pruning; write the axes out")
    summed = [c in x and c not in output for c in kernel]
    k = sum(summed)
    if k and all(summed[:k]):
        return k
    if k and all(summed[-k:]):
        return -k
    raise ValueError(
        f"layer {name!r}: equation {equation!r}: the summed kernel axes "
        f"{[c for c, s in zip(kernel, summed) if s]} must be the first or the last axes of the "
        f"kernel {kernel!r} for group pruning")


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedEmbedding(PrunableMixin, keras.layers.Embedding):
    """A ``keras.layers.Embedding`` whose table is pruned in groups along the embedding dim
    of each token's row (see the module docstring). Arguments as
    :class:`~tfscalpel.GroupPrunedDense` plus those of ``keras.layers.Embedding``."""

    fan_in_ndim = -1

    def __init__(self, input_dim, output_dim, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def build(self, input_shape=None):
        super().build(input_shape)

    @property
    def kernel(self):
        """The pruned weight: the embedding table."""
        return self.embeddings

    def call(self, inputs):
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        return ops.cast(ops.take(self.masked_kernel(), inputs, axis=0), self.compute_dtype)


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedEinsumDense(PrunableMixin, keras.layers.EinsumDense):
    """A ``keras.layers.EinsumDense`` whose kernel is pruned in groups along its contraction
    axes (see the module docstring). Arguments as :class:`~tfscalpel.GroupPrunedDense` plus
    those of ``keras.layers.EinsumDense``."""

    def __init__(self, equation, output_shape, pattern="group", importance=None,
                 schedule=None, global_group=None, **kwargs):
        super().__init__(equation, output_shape, **kwargs)
        self.fan_in_ndim = einsum_fan_in_ndim(equation, self.name)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs, training=None):
        x = ops.einsum(self.equation, inputs, self.masked_kernel())
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


#: MultiHeadAttention's projection sublayers, in the order it builds them.
_PROJECTIONS = ("_query_dense", "_key_dense", "_gate_dense", "_value_dense", "_output_dense")


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """A ``keras.layers.MultiHeadAttention`` whose projections are
    :class:`GroupPrunedEinsumDense` layers sharing ``pattern``, ``importance``, ``schedule``
    and ``global_group`` (see the module docstring). Arguments as
    :class:`~tfscalpel.GroupPrunedDense` plus those of ``keras.layers.MultiHeadAttention``.

    It is not a pruned layer itself but holds four (five with ``use_gate``): the callbacks,
    ``update_pruning`` and :func:`tfscalpel.strip` find them as sublayers."""

    #: Marks a twin that holds pruned sublayers (see ``layer_handlers.plain_layer``).
    pruned_container = True

    def __init__(self, num_heads, key_dim, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        if schedule is None:
            raise ValueError(f"layer {self.name!r}: schedule is required")
        self._pruning_args = dict(pattern=pattern, importance=importance, schedule=schedule,
                                  global_group=global_group)

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        # Swap each stock projection for its pruned twin, built the same way, in the same
        # order (so the weights keep MultiHeadAttention's order).
        olds = [(attr, getattr(self, attr)) for attr in _PROJECTIONS
                if getattr(self, attr, None) is not None]
        for _, old in olds:
            self._layers.remove(old)
        for attr, old in olds:
            config = old.get_config()
            config.pop("name")
            new = GroupPrunedEinsumDense(name=old.name, **config, **self._pruning_args)
            new.build(old._build_shapes_dict["input_shape"])
            for target, value in zip((new._kernel, new.bias), (old._kernel, old.bias)):
                if value is not None:
                    target.assign(value)
            setattr(self, attr, new)

    def projections(self):
        """The pruned projection sublayers (built layers only)."""
        return [getattr(self, a) for a in _PROJECTIONS if getattr(self, a, None) is not None]

    def get_config(self):
        return {**super().get_config(), **serialize_pruning_args(self._pruning_args)}


@keras.saving.register_keras_serializable(package="tfscalpel")
class GatedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """A ``keras.layers.MultiHeadAttention`` whose heads are prunable nodes: one
    :class:`~tfscalpel.MaskLayer` gate per head, ``head_gate`` (named ``mask_<layer name>``),
    multiplies each head's attention output before the output projection (see the module
    docstring). A dead head outputs exactly zero, so :func:`tfscalpel.strip` removes it.

    Args:
        num_heads, key_dim, **kwargs: as ``keras.layers.MultiHeadAttention``.
        mask_options: keyword arguments of the :class:`~tfscalpel.MaskLayer` (threshold,
            hysteresis, clamp, initial_gate, gate_scale).

    ``tfscalpel.prune(model, target=...)`` builds it from a stock MultiHeadAttention (weights
    kept, see :func:`gate_heads`); built by hand it trains from its own initial weights.
    """

    def __init__(self, num_heads, key_dim, mask_options=None, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.mask_options = dict(mask_options or {})
        self.head_gate = MaskLayer(name=f"mask_{self.name}", **self.mask_options)

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        # Gates over a vector of heads: the MaskLayer's own rank-1 input (GateTraining counts
        # it as a "dense" mask).
        self.head_gate.build((self._num_heads,))

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        output, scores = super()._compute_attention(
            query, key, value, attention_mask, training, return_attention_scores, **kwargs)
        # The MaskLayer applied to ones is the per-head multiplier: the 0/1 mask forward, the
        # straight-through gradient and the L1 penalty in training, the stored mask otherwise.
        gate = self.head_gate(ops.ones((self._num_heads,), dtype="float32"), training=training)
        # (..., heads, head_dim): heads are the second-to-last axis whatever attention_axes is.
        gate = ops.reshape(ops.cast(gate, output.dtype), (self._num_heads, 1))
        return ops.multiply(output, gate), scores

    def kept_heads(self):
        """Indices of the live heads (NumPy int array)."""
        return np.flatnonzero(self.head_gate.kept())

    def get_config(self):
        return {**super().get_config(), "mask_options": dict(self.mask_options)}


@keras.saving.register_keras_serializable(package="tfscalpel")
class GatedGroupPrunedMultiHeadAttention(GroupPrunedMultiHeadAttention, GatedMultiHeadAttention):
    """Both at once: head gates (:class:`GatedMultiHeadAttention`) and group-pruned
    projections (:class:`GroupPrunedMultiHeadAttention`); what :func:`tfscalpel.prune` makes of
    a GatedMultiHeadAttention (its gates and masks kept). :func:`tfscalpel.strip` removes the
    dead heads and bakes the masks in."""


def gate_heads(layer, mask_options=None):
    """A new, unbuilt :class:`GatedMultiHeadAttention` with ``layer``'s config (a stock
    ``keras.layers.MultiHeadAttention``); give it the weights with :func:`copy_projections`
    once built."""
    if type(layer) is not keras.layers.MultiHeadAttention:
        raise ValueError(f"layer {layer.name!r}: only a keras.layers.MultiHeadAttention gets "
                         f"head gates, not a {type(layer).__name__} (its call may differ)")
    return GatedMultiHeadAttention(**layer.get_config(), mask_options=mask_options)


def copy_projections(target, source):
    """Copy ``source``'s query/key/(gate)/value/output projection weights into the built
    multi-head attention ``target`` (same heads and widths)."""
    for attr in _PROJECTIONS:
        old, new = getattr(source, attr, None), getattr(target, attr, None)
        if (old is None) != (new is None):
            raise ValueError(f"layer {source.name!r}: projection {attr} on one side only")
        if old is not None:
            new.set_weights(old.get_weights())
