"""Layer handlers: what each Keras layer type owns for pruning (Torch-Pruning's ``PrunerBox``).

One handler object per layer type answers every question the pruning code asks about a layer,
so supporting a new layer type is one :func:`register_layer` call, not an edit in several
modules:

- its *role* in the channel dependency graph (:mod:`tfscalpel.dependency`, which tracks the
  channels of the last axis of every tensor):

  ========== =================================================================================
  role       channels
  ========== =================================================================================
  weighted   creates fresh output channels and consumes its input channels (Dense, Conv2D)
  channelwise output channel ``c`` depends on input channel ``c`` only (activations, pooling,
             BatchNormalization, DepthwiseConv2D, a Reshape that keeps the last axis, ...);
             LayerNormalization's ids pass too, but its statistics read every channel
             (:class:`ChannelNorm`, ``normalises``)
  gate       a channel-wise :class:`~tfscalpel.MaskLayer` whose dead nodes output zero
  merge      element-wise merge: couples the channels at the same position of its inputs
  concat     concatenates its inputs' channels
  flatten    tiles the channels in the flattened ``(H, W, C)`` order
  opaque     cannot be followed: fine unless a gated channel reaches it
  ========== =================================================================================

- why one particular layer of a known type cannot be followed anyway (:meth:`refusal`: a
  grouped convolution, a batch norm over a non-channel axis, ...);
- its prunable weights and their group axes, the contraction along which groups run
  (:meth:`prunable_weights`, :meth:`group_axes`), and its pruned twin, which
  :func:`tfscalpel.prune` swaps in (a ``PrunableMixin`` layer);
- how it becomes a stock layer again and how its channels are removed (:meth:`plain_layer`,
  :meth:`weights`, :meth:`remove`, used by :func:`tfscalpel.strip`);
- its export form: the TFLite op it converts to (``Weighted.export_op``).

Lookup walks the class's MRO: a subclass uses the handler of its nearest registered base class
(``GroupPrunedDense`` is handled as a ``Dense``). Unregistered layers are opaque.
"""
import keras
import numpy as np

from tfscalpel.attention_layers import (
    _PROJECTIONS,
    GatedGroupPrunedMultiHeadAttention,
    GatedMultiHeadAttention,
    GroupPrunedEinsumDense,
    GroupPrunedEmbedding,
    GroupPrunedMultiHeadAttention,
)
from tfscalpel.conv_layers import (
    GroupPrunedConv2DTranspose,
    GroupPrunedConv3D,
    GroupPrunedSeparableConv2D,
)
from tfscalpel.gates import MaskLayer
from tfscalpel.layers import (
    GroupPrunedConv1D,
    GroupPrunedConv2D,
    GroupPrunedDense,
    GroupPrunedDepthwiseConv2D,
    PrunableMixin,
    PrunedLayerNormalization,
)

#: Config entries that only pruned twins have; dropped when a twin becomes a stock layer again.
_PRUNING_KEYS = ("pattern", "importance", "schedule", "global_group")


def _is_twin_container(layer_or_class):
    """True for a pruned twin that holds pruned sublayers instead of being one
    (MultiHeadAttention's twin): it marks itself with ``pruned_container = True``."""
    return bool(getattr(layer_or_class, "pruned_container", False))


def _pruning_state(layer):
    """``(ids of the pruning-state variables, {id(kernel): pruned layer})`` of every pruned
    layer inside ``layer`` (itself included)."""
    state, kernels = set(), {}
    for sub in [layer, *layer._flatten_layers(include_self=False, recursive=True)]:
        if isinstance(sub, PrunableMixin):
            state.update(id(v) for v in (sub.pruning_mask, sub.pruning_step,
                                           sub.pruning_threshold))
            kernels[id(sub.kernel)] = sub
    return state, kernels


def stock_weights(layer):
    """``layer.weights`` as NumPy without any pruning state, every pruned kernel masked: the
    weights of the stock layer it strips to."""
    state, kernels = _pruning_state(layer)
    return [kernels[id(v)]._numpy_masked_kernel() if id(v) in kernels
            else keras.ops.convert_to_numpy(v) for v in layer.weights if id(v) not in state]


def load_stock_weights(twin, source):
    """Give a built pruned ``twin`` the weights of the ``source`` layer it replaces (every
    variable but the pruning state, in order, as NumPy). A pruned ``source`` (re-pruning) gives
    its stock weights, masks multiplied in, so its pruned blocks score 0 in the new ranking."""
    state, _ = _pruning_state(twin)
    targets = [v for v in twin.weights if id(v) not in state]
    values = stock_weights(source)
    if len(targets) != len(values):
        raise ValueError(f"layer {source.name!r}: its pruned twin has {len(targets)} weights "
                         f"besides the pruning state, the layer {len(values)}")
    for v, value in zip(targets, values):
        v.assign(value)


def is_last_axis(axis, rank):
    """True if ``axis`` (negative or positive, or a one-element list) is the last of ``rank``
    axes: ``axis=3`` on a rank-4 NHWC tensor is the channel axis, as ``axis=-1`` is."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return rank is not None and rank > 0 and int(axis) % rank == rank - 1


def _rank(shape):
    return None if shape is None else len(shape)


class LayerHandler:
    """Base handler; on its own it describes an *opaque* layer.

    Args:
        check: optional ``(layer, input_shapes, output_shapes) -> None | reason``: a reason
            (completing "layer 'x' is ...") why this layer cannot be followed after all.
        quiet: the layer has weights that are not pruned on purpose (normalisation layers):
            :func:`tfscalpel.prune` does not list it among the layers that stay dense.
        twin: the pruned class (``class Twin(PrunableMixin, LayerClass)``) that
            :func:`tfscalpel.prune` swaps in for a layer of exactly the registered class.
    """

    role = "opaque"
    #: The attribute holding the weight that pruning masks.
    kernel_attr = "kernel"

    def __init__(self, check=None, quiet=False, twin=None):
        if twin is not None and not (isinstance(twin, type) and (
                issubclass(twin, PrunableMixin) or _is_twin_container(twin))):
            raise TypeError(f"twin must be a class derived from tfscalpel.PrunableMixin, got "
                            f"{twin!r}")
        self.check = check
        self.quiet = bool(quiet)
        self.twin = twin

    # -- the dependency graph -------------------------------------------------------------------
    @property
    def owns_channels(self):
        """True when the layer has per-channel state (weights sliced when channels go), so one
        layer called at several places cannot lose different channels at each."""
        return False

    def refusal(self, layer, input_shapes, output_shapes):
        """None if the channel analysis can follow this layer, else the reason why not."""
        if self.role == "opaque":
            return f"a {type(layer).__name__} layer, which the channel analysis does not know"
        reason = self._refusal(layer, input_shapes, output_shapes)
        if reason is None and self.check is not None:
            reason = self.check(layer, input_shapes, output_shapes)
        return reason

    def _refusal(self, layer, input_shapes, output_shapes):
        return None

    #: True for a channel-wise layer whose statistics run over all its input channels
    #: (LayerNormalization): its inputs are *used* like a weighted layer's input rows (a class
    #: goes only where they are exactly zero) and its outputs are never zero.
    normalises = False

    @property
    def gate_passes(self):
        """True when a MaskLayer may be moved past this layer (an element-wise activation,
        batch norm, pooling, zero padding, a depthwise convolution): it is channel-wise, so the
        gate after it still gates the same channels, and then sits where the next weighted
        layer reads (a zero before a batch norm is no zero after it)."""
        return False

    # -- planning (tfscalpel.plan) --------------------------------------------------------------
    #: The target method entry (``"dense"`` or ``"conv"``) that a weights-only layer follows.
    method_kind = "dense"

    def plan_kind(self, layer):
        """The planner's name for a layer that is weight-pruned only (not a weighted node of
        the channel graph), or None if the planner leaves it out."""
        return None

    def plan_shape(self, layer):
        """``(fan_in, units)`` of the pruned kernel as the planner shows it."""
        from tfscalpel.layers import kernel_matrix

        twin = self.pruned_twin(layer) or type(layer)
        ndim = getattr(layer, "fan_in_ndim", getattr(twin, "fan_in_ndim", None))
        kernel = self.kernel(layer)
        return kernel_matrix(np.empty(tuple(kernel.shape), np.int8), ndim).shape

    def why_not_nodes(self, layer):
        """Why node pruning does not apply to a weights-only layer."""
        return "opaque to node removal: weights only"

    # -- pruning --------------------------------------------------------------------------------
    def pruned_twin(self, layer):
        """The class :func:`tfscalpel.prune` replaces ``layer`` with, or None (stays dense).
        Only a layer of exactly the class this handler is registered for gets the twin: a
        subclass may carry state or a ``call`` the twin does not know. A layer of any other
        class that has ``get_prunable_weights()`` (the custom-layer protocol) gets the generic
        :class:`~tfscalpel.custom_layers.PrunedWeights` wrapper."""
        if self.twin is not None and _REGISTRY.get(type(layer)) is self:
            return self.twin
        if _REGISTRY.get(type(layer)) is None and callable(
                getattr(layer, "get_prunable_weights", None)):
            from tfscalpel.custom_layers import PrunedWeights

            return PrunedWeights
        return None

    def make_twin(self, layer, **pruning):
        """A new, unbuilt pruned twin of ``layer`` (``pruning``: pattern, importance, schedule,
        global_group as :class:`~tfscalpel.PrunableMixin` takes them). An already pruned layer
        (re-pruning) becomes a new layer of its own class with the new settings."""
        if isinstance(layer, PrunableMixin):
            config = {k: v for k, v in layer.get_config().items() if k not in _PRUNING_KEYS}
            return type(layer)(**config, **pruning)
        twin = self.pruned_twin(layer)
        if twin is None:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no pruned twin")
        if hasattr(twin, "wrap"):
            return twin.wrap(layer, **pruning)
        return twin(**layer.get_config(), **pruning)

    def kernel(self, layer):
        """The weight that pruning masks (Dense's ``kernel``, SeparableConv2D's
        ``pointwise_kernel``, Embedding's ``embeddings``, ...)."""
        return getattr(layer, self.kernel_attr)

    def prunable_weights(self, layer):
        """The weights pruning masks (tfmot's ``get_prunable_weights``): the kernel of a layer
        that has (or is) a pruned twin, what a custom layer's ``get_prunable_weights()`` names
        (the wrapper's masked weights once wrapped), else none."""
        masks = getattr(layer, "masks", None)
        if masks is not None and hasattr(layer, "plain_layer"):  # a PrunedWeights wrapper
            return [m.kernel for m in masks]
        if self.pruned_twin(layer) is not None and self.twin is None:  # custom protocol
            return list(layer.get_prunable_weights())
        if self.twin is None and not isinstance(layer, PrunableMixin):
            return []
        return [self.kernel(layer)]

    def group_axes(self, layer):
        """The kernel axes that form the contraction, flattened row-major into the fan-in along
        which groups run (the twin's ``fan_in_ndim``; default every axis but the last;
        negative: the last axes)."""
        twin = type(layer) if isinstance(layer, PrunableMixin) else self.twin
        ndim = getattr(layer if isinstance(layer, PrunableMixin) else twin, "fan_in_ndim", None)
        rank = len(self.kernel(layer).shape)
        if ndim is None:
            return tuple(range(rank - 1))
        return tuple(range(rank + ndim, rank)) if ndim < 0 else tuple(range(ndim))

    # -- stripping and removal ------------------------------------------------------------------
    def plain_layer(self, layer):
        """A new, unbuilt copy of ``layer``; a pruned twin becomes its stock class again."""
        if hasattr(layer, "plain_layer"):  # a wrapper (custom-layer protocol) knows its own
            return layer.plain_layer()
        config = layer.get_config()
        if not isinstance(layer, PrunableMixin) and not _is_twin_container(layer):
            return layer.__class__.from_config(config)
        for key in _PRUNING_KEYS:
            config.pop(key)
        stock = next(c for c in type(layer).__mro__
                     if not issubclass(c, PrunableMixin) and not _is_twin_container(c))
        return stock.from_config(config)

    def weights(self, layer):
        """``layer``'s weights as :meth:`plain_layer` takes them: the masks of every pruned
        layer in it (itself or its sublayers) multiplied into their kernels and their pruning
        state dropped."""
        return stock_weights(layer)

    def remove(self, layer, keep_in, keep_out):
        """``(new unbuilt layer or None to drop it, its weights)`` without the removed
        channels. ``keep_in`` / ``keep_out``: indices of the input / output channels kept, or
        None where the plan does not track them for this layer."""
        return self.plain_layer(layer), self.weights(layer)


class Weighted(LayerHandler):
    """A layer that creates output channels from all of its input channels, with a kernel of
    shape ``(..., in, out)`` (Dense ``(in, out)``, Conv2D ``(kh, kw, cin, cout)``) followed by
    weights with one entry per output channel (the bias).

    Args:
        width_key: the config entry holding the number of output channels.
        kind: the planner's layer type (``"dense"`` or ``"conv"``; a target's method for it).
        export_op: the TFLite builtin op the layer converts to.
        in_axis, out_axis: the kernel axes of the input and output channels (Conv2DTranspose's
            kernel is ``(kh, kw, out, in)``: ``in_axis=-1, out_axis=-2``).
        kernel_attr: the attribute holding the kernel.
        twin, check, quiet: as :class:`LayerHandler`.
    """

    role = "weighted"

    def __init__(self, width_key, kind, export_op, twin=None, check=None, quiet=False,
                 in_axis=-2, out_axis=-1, kernel_attr="kernel"):
        super().__init__(check, quiet, twin)
        self.width_key, self.kind, self.export_op = width_key, kind, export_op
        self.in_axis, self.out_axis, self.kernel_attr = in_axis, out_axis, kernel_attr

    @property
    def owns_channels(self):
        return True

    def _refusal(self, layer, input_shapes, output_shapes):
        return None if self.creates_channels(layer) else "a grouped convolution"

    @staticmethod
    def creates_channels(layer):
        """True unless a grouped convolution (each output channel reads only its group)."""
        return getattr(layer, "groups", 1) == 1

    def fan_in(self, layer):
        """Length of the contraction: the product of the kernel's group axes."""
        kernel = self.kernel(layer)
        return int(np.prod([kernel.shape[a] for a in self.group_axes(layer)]))

    def units(self, layer):
        """Number of output channels (the kernel's output axis)."""
        return int(self.kernel(layer).shape[self.out_axis])

    def in_channels(self, layer):
        """Number of input channels (the kernel's input axis): the axis 2:4 windows run
        along."""
        return int(self.kernel(layer).shape[self.in_axis])

    def remove(self, layer, keep_in, keep_out):
        plain = self.plain_layer(layer)
        kernel, *per_unit = self.weights(layer)
        if keep_in is None:
            keep_in = np.arange(kernel.shape[self.in_axis])
        if keep_out is None:
            keep_out = np.arange(kernel.shape[self.out_axis])
        config = plain.get_config()
        config[self.width_key] = int(len(keep_out))
        new = type(plain).from_config(config)
        kernel = np.take(np.take(kernel, keep_in, axis=self.in_axis), keep_out,
                         axis=self.out_axis)
        return new, [kernel] + [np.take(w, keep_out, axis=-1) for w in per_unit]


class SeparableWeighted(Weighted):
    """SeparableConv2D: a depthwise kernel ``(kh, kw, cin, multiplier)``, a pointwise kernel
    ``(1, 1, cin * multiplier, cout)`` and a bias. The pointwise kernel is the pruned one (it
    holds ``cin * multiplier / (kh * kw)`` times more weights than the depthwise one, and is
    the GEMM): groups run along its ``cin * multiplier`` inputs. Channel removal slices the
    depthwise kernel's input channels as a DepthwiseConv2D's (multiplier 1 only)."""

    def __init__(self, twin=None):
        super().__init__("filters", "conv", "CONV_2D", twin=twin, check=_depth_multiplier,
                         kernel_attr="pointwise_kernel")

    def remove(self, layer, keep_in, keep_out):
        plain = self.plain_layer(layer)
        depthwise, pointwise, *bias = self.weights(layer)
        keep_in = np.arange(depthwise.shape[-2]) if keep_in is None else keep_in
        keep_out = np.arange(pointwise.shape[-1]) if keep_out is None else keep_out
        config = plain.get_config()
        config["filters"] = int(len(keep_out))
        pointwise = np.take(np.take(pointwise, keep_in, axis=-2), keep_out, axis=-1)
        return (type(plain).from_config(config),
                [np.take(depthwise, keep_in, axis=-2), pointwise]
                + [np.take(b, keep_out, axis=-1) for b in bias])


class EinsumWeighted(Weighted):
    """EinsumDense. Its contraction axes are the kernel's letters that the equation sums over
    (in the input, not in the output); its twin groups along them. In the channel graph it is
    followed only when it is a Dense in disguise (``...c,cd->...d``: a 2-D kernel whose last
    axis is the output's last); any other equation (MultiHeadAttention's projections) is
    opaque there, but still weight-pruned."""

    def __init__(self, twin=None):
        super().__init__(None, "dense", "FULLY_CONNECTED", twin=twin)

    @staticmethod
    def creates_channels(layer):
        return einsum_dense_like(layer.equation)

    def _refusal(self, layer, input_shapes, output_shapes):
        if not self.creates_channels(layer):
            return (f"an EinsumDense with equation {layer.equation!r}, which is not a Dense "
                    "over the last axis")
        return None

    def plan_kind(self, layer):
        return None if self.creates_channels(layer) else "einsum"

    def plan_shape(self, layer):
        from tfscalpel.attention_layers import einsum_fan_in_ndim
        from tfscalpel.layers import kernel_matrix

        ndim = einsum_fan_in_ndim(layer.equation, layer.name)
        return kernel_matrix(np.empty(tuple(layer.kernel.shape), np.int8), ndim).shape

    def group_axes(self, layer):
        from tfscalpel.attention_layers import einsum_fan_in_ndim

        ndim = einsum_fan_in_ndim(layer.equation, layer.name)
        rank = len(layer.kernel.shape)
        return tuple(range(rank + ndim, rank)) if ndim < 0 else tuple(range(ndim))

    def remove(self, layer, keep_in, keep_out):
        plain = self.plain_layer(layer)
        kernel, *bias = self.weights(layer)
        keep_in = np.arange(kernel.shape[0]) if keep_in is None else keep_in
        keep_out = np.arange(kernel.shape[1]) if keep_out is None else keep_out
        config = plain.get_config()
        shape = list(config["output_shape"]) if isinstance(config["output_shape"], (list, tuple)) \
            else [config["output_shape"]]
        shape[-1] = int(len(keep_out))
        config["output_shape"] = shape
        kernel = np.take(np.take(kernel, keep_in, axis=0), keep_out, axis=1)
        return (type(plain).from_config(config),
                [kernel] + [np.take(b, keep_out, axis=-1) for b in bias])


def einsum_dense_like(equation):
    """True for an EinsumDense equation that is a Dense over the last axis
    (``"abc,cd->abd"``): a 2-D kernel ``cd``, ``c`` the input's last letter and ``d`` the
    output's last."""
    inputs, output = equation.replace(" ", "").split("->")
    x, kernel = inputs.split(",")
    return (len(kernel) == 2 and x[-1:] == kernel[0] and output[-1:] == kernel[1]
            and x[:-1] == output[:-1] and "." not in equation)


class Channelwise(LayerHandler):
    """Output channel ``c`` depends on input channel ``c`` only. Whether the layer maps an
    all-zero channel to zero is measured per channel, never assumed.

    Args:
        weight_axes: None if the layer has no per-channel weights; else the channel axis of
            its weights when channels are removed: one int for every weight (``-1`` for
            BatchNormalization's four vectors) or a tuple with one per weight
            (DepthwiseConv2D: ``(-2, -1)`` for kernel and bias).
        axis_attr: the name of the layer attribute holding the axis it works on
            (BatchNormalization's ``axis``); it must be the last (channel) axis.
        twin, check, quiet: as :class:`LayerHandler`.
    """

    role = "channelwise"

    method_kind = "conv"

    def __init__(self, weight_axes=None, axis_attr=None, check=None, quiet=False, twin=None,
                 gate_passes=False):
        super().__init__(check, quiet, twin)
        self.weight_axes = weight_axes
        self.axis_attr = axis_attr
        self._gate_passes = bool(gate_passes)

    @property
    def gate_passes(self):
        return self._gate_passes

    def plan_kind(self, layer):
        return None if self.twin is None else type(layer).__name__.lower().replace("conv2d", "")

    def why_not_nodes(self, layer):
        return "channel-wise: its channels go with the gates of the layer before it"

    @property
    def owns_channels(self):
        return self.weight_axes is not None

    def _refusal(self, layer, input_shapes, output_shapes):
        if self.axis_attr is not None:
            axis = getattr(layer, self.axis_attr)
            if not is_last_axis(axis, _rank(input_shapes[0])):
                return (f"a {type(layer).__name__} over axis {axis}, not the channel axis "
                        f"(the last of {_rank(input_shapes[0])})")
        return None

    def remove(self, layer, keep_in, keep_out):
        weights = self.weights(layer)
        if self.weight_axes is not None and keep_out is not None:
            axes = self.weight_axes
            if isinstance(axes, int):
                axes = (axes,) * len(weights)
            weights = [np.take(w, keep_out, axis=a) for w, a in zip(weights, axes)]
        return self.plain_layer(layer), weights


class ChannelwiseReshape(Channelwise):
    """A Reshape that keeps the size of the last axis keeps every element's channel (row-major
    order), as squeeze-excite's ``(N, C) -> (N, 1, 1, C)``; its ``target_shape`` names the
    width, so it is rewritten when channels go. Any other Reshape is refused."""

    @property
    def owns_channels(self):
        return True

    def _refusal(self, layer, input_shapes, output_shapes):
        before, after = input_shapes[0][-1], output_shapes[0][-1]
        if before is None or before != after:
            return f"a Reshape layer that changes the channel axis ({before} -> {after})"
        return None

    def remove(self, layer, keep_in, keep_out):
        config = layer.get_config()
        if keep_out is not None:
            config["target_shape"] = (*tuple(config["target_shape"])[:-1], int(len(keep_out)))
        return type(layer).from_config(config), []


class ChannelNorm(Channelwise):
    """LayerNormalization over the last axis: per-channel ``gamma`` / ``beta``, statistics over
    every channel. A channel is removed only where the layer's input is exactly zero (so it is a
    *use*, see :attr:`LayerHandler.normalises`); its output there is ``beta - gamma * mean /
    std``, not zero, so the readers after it lose the channel only through a gate right after
    the layer norm. On removal it becomes a
    :class:`~tfscalpel.layers.PrunedLayerNormalization` that still divides by the original
    channel count, which makes the kept channels' outputs exact."""

    normalises = True

    def __init__(self):
        super().__init__(weight_axes=-1, axis_attr="axis", quiet=True,
                         check=_rms_scaling)

    def remove(self, layer, keep_in, keep_out):
        new, weights = super().remove(layer, keep_in, keep_out)
        n_full = getattr(layer, "n_full", None)
        if n_full is None:
            n_full = int(layer.input.shape[-1])
        if keep_out is None or (len(keep_out) == n_full and
                                not isinstance(layer, PrunedLayerNormalization)):
            return new, weights
        config = {k: v for k, v in layer.get_config().items() if k != "n_full"}
        return PrunedLayerNormalization(n_full=n_full, **config), weights


class Gate(Channelwise):
    """A :class:`~tfscalpel.MaskLayer`: its dead nodes output exact zeros. On removal it goes
    away, unless dead nodes had to stay (coupled with live ones through a merge): then it
    becomes a stock ``Rescaling`` by the 0/1 mask, so those nodes still output zero."""

    role = "gate"

    def __init__(self):
        super().__init__(weight_axes=-1, quiet=True)  # gates are trained, not weight-pruned

    def remove(self, layer, keep_in, keep_out):
        alive = layer.kept()[keep_out]
        if alive.all():
            return None, []
        return keras.layers.Rescaling(scale=alive.astype(float).tolist(), name=layer.name), []


class Merge(LayerHandler):
    """Element-wise merge of same-width inputs: couples their channels position by position.

    Args:
        zero: ``"all"`` if the output is exactly zero where every input is (Add, Maximum, ...),
            ``"any"`` if where any input is (Multiply).
    """

    role = "merge"

    def __init__(self, zero, check=None):
        super().__init__(check)
        if zero not in ("all", "any"):
            raise ValueError(f"Merge: zero must be 'all' or 'any', got {zero!r}")
        self.zero = zero


class Concat(LayerHandler):
    """Concatenation along the channel axis (``axis=-1``, or its positive equivalent)."""

    role = "concat"

    def _refusal(self, layer, input_shapes, output_shapes):
        if not is_last_axis(layer.axis, _rank(output_shapes[0])):
            return f"a concatenation along axis {layer.axis}, not the channel axis"
        return None


class Flatten(LayerHandler):
    """Flatten: channel ``c`` of an ``(H, W, C)`` input lands at rows ``c, c + C, ...``."""

    role = "flatten"


class Lookup(LayerHandler):
    """Embedding: opaque in the channel graph (its input is token ids, not channels), its table
    ``embeddings`` weight-pruned by its twin along each token's row."""

    kernel_attr = "embeddings"

    def plan_kind(self, layer):
        return "embedding"

    def why_not_nodes(self, layer):
        return "a lookup: weights only"


class Attention(LayerHandler):
    """MultiHeadAttention: opaque in the channel graph (its width is not a node set); its
    pruned twin prunes the weights of its EinsumDense projections, and its *heads* are its own
    nodes: :class:`~tfscalpel.attention_layers.GatedMultiHeadAttention` gates them, and
    :meth:`plain_layer` / :meth:`weights` strip it to a stock MultiHeadAttention with the live
    heads only (:mod:`tfscalpel.attention_layers`)."""

    #: Projections whose kernel ``(d, heads, head_dim)`` and bias ``(heads, head_dim)`` lose
    #: dead heads along axis -2; the output projection ``(heads, head_dim, d)`` along axis 0.
    _INPUT_PROJECTIONS = ("_query_dense", "_key_dense", "_gate_dense", "_value_dense")

    def prunable_weights(self, layer):
        return [p.kernel for p in self._projections(layer)]

    @staticmethod
    def _projections(layer):
        return [p for p in (getattr(layer, a, None) for a in (
            "_query_dense", "_key_dense", "_gate_dense", "_value_dense", "_output_dense"))
            if p is not None]

    def plan_kind(self, layer):
        return "attention"

    def plan_shape(self, layer):
        """The query projection's ``(model width, heads * key_dim)``."""
        shape = tuple(self._projections(layer)[0].kernel.shape)
        return shape[0], int(np.prod(shape[1:]))

    def why_not_nodes(self, layer):
        return "heads are nodes only where the target node-prunes: weights only"

    # -- heads as nodes -------------------------------------------------------------------------
    @staticmethod
    def head_gate(layer):
        """The layer's per-head :class:`~tfscalpel.MaskLayer`, or None if it has none."""
        return getattr(layer, "head_gate", None) if isinstance(layer, GatedMultiHeadAttention) \
            else None

    @staticmethod
    def gated_twin(layer):
        """The head-gated class for ``layer`` (exactly ``keras.layers.MultiHeadAttention``,
        whose ``call`` the gated class knows, or an already gated layer), or None."""
        if type(layer) in (keras.layers.MultiHeadAttention, GatedMultiHeadAttention):
            return GatedMultiHeadAttention
        return None

    def _kept_heads(self, layer):
        """``(indices of the heads kept, 0/1 scale of each)``: the live heads, or head 0 scaled
        by 0 when every head is dead (a layer needs one head; its output is then the output
        projection's bias, as the gated layer's)."""
        gate = self.head_gate(layer)
        if gate is None:
            heads = layer.num_heads
            return np.arange(heads), np.ones(heads, np.float32)
        kept = layer.kept_heads()
        if len(kept):
            return kept, np.ones(len(kept), np.float32)
        return np.array([0]), np.zeros(1, np.float32)

    def plain_layer(self, layer):
        """A stock MultiHeadAttention (unbuilt) with the kept heads only."""
        if self.head_gate(layer) is None:
            return super().plain_layer(layer)
        config = layer.get_config()
        for key in ("mask_options", *_PRUNING_KEYS):
            config.pop(key, None)
        config["num_heads"] = int(len(self._kept_heads(layer)[0]))
        return keras.layers.MultiHeadAttention.from_config(config)

    def weights(self, layer):
        """The stock layer's weights (projections in MultiHeadAttention's order, masks
        multiplied in), sliced to the kept heads, the 0/1 head mask folded into the output
        kernel."""
        if self.head_gate(layer) is None:
            return super().weights(layer)
        keep, scale = self._kept_heads(layer)
        out = []
        for attr in _PROJECTIONS:
            sub = getattr(layer, attr, None)
            if sub is None:
                continue
            kernel, *bias = stock_weights(sub)
            if attr in self._INPUT_PROJECTIONS:
                out += [np.take(kernel, keep, axis=-2)] + [np.take(b, keep, axis=-2)
                                                           for b in bias]
            else:
                kernel = np.take(kernel, keep, axis=0) * scale.reshape(-1, 1, 1)
                out += [kernel.astype(np.float32, copy=False)] + bias
        return out

    def heads(self, layer):
        """``(heads kept, heads)``: what strip leaves of the layer's heads."""
        return int(len(self._kept_heads(layer)[0])), int(layer.num_heads)


# -- the registry ---------------------------------------------------------------------------------
_REGISTRY = {}


def register_layer(layer_class, handler):
    """Tell tfscalpel how a Keras layer type takes part in pruning.

    ``handler`` is a :class:`LayerHandler` describing the type's role (see
    :mod:`tfscalpel.layer_handlers`): for example a custom per-channel scale layer whose one
    weight has shape ``(channels,)``::

        tfscalpel.register_layer(MyScale, tfscalpel.layer_handlers.Channelwise(weight_axes=-1))

    makes node pruning follow channels through it and slice its weight when channels go. The
    handler also applies to subclasses of ``layer_class`` that have no handler of their own
    (the nearest registered class in the MRO wins). Registering a class again replaces its
    handler.

    Returns the handler that ``layer_class`` itself had before (None if it had none).

    Raises:
        TypeError: if ``layer_class`` is not a subclass of ``keras.layers.Layer`` or
            ``handler`` is not a :class:`LayerHandler`.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"register_layer: layer_class must be a keras.layers.Layer subclass, "
                        f"got {layer_class!r}")
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"register_layer: handler must be a tfscalpel.layer_handlers."
                        f"LayerHandler, got {type(handler).__name__}")
    previous = _REGISTRY.get(layer_class)
    _REGISTRY[layer_class] = handler
    return previous


def unregister_layer(layer_class):
    """Remove ``layer_class``'s own handler (its subclasses fall back to a base class's);
    returns it, or None if it had none."""
    return _REGISTRY.pop(layer_class, None)


def registered():
    """``{layer class: handler}`` for every class registered so far (a copy)."""
    return dict(_REGISTRY)


_OPAQUE = LayerHandler()


def get_handler(layer):
    """The handler of a layer or layer class: that of the nearest registered class in its MRO,
    or an opaque handler."""
    cls = layer if isinstance(layer, type) else type(layer)
    for base in cls.__mro__:
        handler = _REGISTRY.get(base)
        if handler is not None:
            return handler
    return _OPAQUE


def _mixing_activation(layer, input_shapes, output_shapes):
    if getattr(layer.activation, "__name__", "") in ("softmax", "log_softmax"):
        return "an activation that mixes channels"
    return None


def _rms_scaling(layer, input_shapes, output_shapes):
    if getattr(layer, "rms_scaling", False):
        return ("a LayerNormalization with rms_scaling=True, which node removal does not "
                "support")
    return None


def _depth_multiplier(layer, input_shapes, output_shapes):
    if layer.depth_multiplier != 1:
        return "a depthwise convolution with depth_multiplier != 1"
    return None


def _register_builtins():
    L = keras.layers
    register_layer(L.Dense, Weighted("units", "dense", "FULLY_CONNECTED", twin=GroupPrunedDense))
    register_layer(L.Conv2D, Weighted("filters", "conv", "CONV_2D", twin=GroupPrunedConv2D))
    # TFLite converts a 1-D convolution to CONV_2D over a height-1 image.
    register_layer(L.Conv1D, Weighted("filters", "conv", "CONV_2D", twin=GroupPrunedConv1D))
    register_layer(L.Conv3D, Weighted("filters", "conv", "CONV_3D", twin=GroupPrunedConv3D))
    register_layer(L.Conv2DTranspose, Weighted(
        "filters", "conv", "TRANSPOSE_CONV", twin=GroupPrunedConv2DTranspose, in_axis=-1,
        out_axis=-2))
    register_layer(L.SeparableConv2D, SeparableWeighted(twin=GroupPrunedSeparableConv2D))
    register_layer(L.EinsumDense, EinsumWeighted(twin=GroupPrunedEinsumDense))
    register_layer(L.Embedding, Lookup(twin=GroupPrunedEmbedding))
    register_layer(L.MultiHeadAttention, Attention(twin=GroupPrunedMultiHeadAttention))
    # A head-gated attention weight-pruned keeps its gates (re-pruning a node-pruned model).
    register_layer(GatedMultiHeadAttention,
                   Attention(twin=GatedGroupPrunedMultiHeadAttention))
    register_layer(MaskLayer, Gate())
    register_layer(L.BatchNormalization, Channelwise(weight_axes=-1, axis_attr="axis",
                                                     quiet=True, gate_passes=True))
    # A gate moves past a depthwise convolution too (MobileNetV2's expand -> depthwise ->
    # project): placed before it, a dead channel leaves the depthwise as zero, but the batch
    # norm after it turns that zero into a constant, the projection still reads the channel
    # and strip can remove nothing; after it, the projection reads an exact zero and the
    # channel goes from the expansion, both batch norms and the depthwise filter.
    register_layer(L.DepthwiseConv2D, Channelwise(weight_axes=(-2, -1), check=_depth_multiplier,
                                                  twin=GroupPrunedDepthwiseConv2D,
                                                  gate_passes=True))
    register_layer(L.Activation, Channelwise(check=_mixing_activation, gate_passes=True))
    # Element-wise activations and pooling: a gate moves past them (see gate_passes).
    for cls in (L.ReLU, L.LeakyReLU, L.ELU, L.MaxPooling1D, L.MaxPooling2D,
                L.AveragePooling1D, L.AveragePooling2D, L.ZeroPadding1D, L.ZeroPadding2D):
        register_layer(cls, Channelwise(gate_passes=True))
    register_layer(L.Reshape, ChannelwiseReshape())
    for cls in (
        L.MaxPooling3D, L.AveragePooling3D,
        L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
        L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
        L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout,
        L.Cropping1D, L.Cropping2D, L.UpSampling1D,
        L.UpSampling2D, L.Identity,
    ):
        register_layer(cls, Channelwise())
    for cls in (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum):
        register_layer(cls, Merge("all"))
    register_layer(L.Multiply, Merge("any"))
    register_layer(L.Concatenate, Concat())
    register_layer(L.Flatten, Flatten())
    # LayerNormalization's statistics run over all channels: a channel goes only where its
    # input is exactly zero (ChannelNorm). GroupNormalization mixes channels within groups:
    # opaque, but not pruned on purpose, so prune() does not warn about it.
    register_layer(L.LayerNormalization, ChannelNorm())
    register_layer(L.GroupNormalization, LayerHandler(quiet=True))


_register_builtins()
