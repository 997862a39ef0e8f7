"""Keras layers whose kernels carry a pruning mask.

``GroupPrunedDense`` and ``GroupPrunedConv2D`` are the stock Keras layers plus three
non-trainable weights: ``pruning_mask`` (same shape as the kernel), ``pruning_step`` (the last
step the schedule was consulted at, -1 before training) and ``pruning_threshold`` (the last
score threshold applied, in the units of the layer's block scores). Pruned weights contribute
exactly zero. All of it is saved with the model (``.keras``, checkpoints, ``BackupAndRestore``).

Where the mask is applied (the training overhead, ``benchmarks/bench_training_step.py``): on
the TensorFlow backend the kernel itself holds zeros at pruned positions, kept there by a kernel
constraint that multiplies it by the mask after every optimizer step (Keras applies variable
constraints in ``optimizer.apply``, in ``fit`` and in custom loops alike), by mask updates, by
``UpdatePruningStep`` when training begins and by loading. A training forward pass then uses the
kernel as it is, with no multiply forward or backward; this is tfmot's semantics too (it
assigns ``kernel * mask`` before each step). Inference passes (``training`` false) still use
``kernel * pruning_mask``, so a kernel written from outside (``set_weights``) never leaks
pruned values into predictions. Pruned weights do receive gradients then, so clipping by the
gradient *norm* (``clipnorm``/``global_clipnorm``) counts them. On other backends the optimizer
cannot read the mask inside a constraint (JAX's ``fit`` holds it in its own state), so every
forward pass uses ``kernel * pruning_mask`` there and pruned weights receive no gradient.

The layers work on their own inside any model (subclassed ones included); masks change only
through :func:`tfscalpel.update_pruning` (called by the ``UpdatePruningStep`` callback).
"""
import keras
import numpy as np
from keras import ops

from tfscalpel.backend_state import read_numpy, write
from tfscalpel.checks import is_integer
from tfscalpel.importance import default_importance, get_importance
from tfscalpel.patterns import get_pattern
from tfscalpel.schedules import get_schedule
from tfscalpel.targets import GROUP_SIZES


def pruning_boundary(scores, keep):
    """The highest score among pruned blocks (0 when nothing is pruned): the threshold that a
    sparsity target amounted to, reported to TensorBoard."""
    scores, keep = np.asarray(scores), np.asarray(keep, dtype=bool)
    pruned = scores[~keep]
    boundary = pruned.max() if pruned.size else 0.0
    # Kept blocks count as 0 (a threshold of 0 prunes nothing): the same as the maximum of the
    # scores with every kept one replaced by 0, without building that array.
    return float(max(boundary, 0.0) if pruned.size < keep.size else boundary)


def kernel_matrix(kernel, fan_in_ndim=None):
    """A kernel as the ``(fan_in, units)`` matrix that pruning patterns see: its first
    ``fan_in_ndim`` axes (default all but the last) flattened row-major into the fan-in (the
    im2col order for convolutions), the rest into the units. A negative ``fan_in_ndim`` takes
    the *last* ``-fan_in_ndim`` axes as the fan-in instead (Conv2DTranspose's ``(kh, kw, out,
    in)``, Embedding's ``(vocabulary, dim)``). TFLite's weight layout is the transpose."""
    kernel = np.asarray(kernel)
    k = kernel.ndim - 1 if fan_in_ndim is None else fan_in_ndim
    if k < 0:
        return kernel.reshape(-1, int(np.prod(kernel.shape[k:]))).T
    return kernel.reshape(int(np.prod(kernel.shape[:k])), -1)


def fan_in_of(kernel_shape, fan_in_ndim=None):
    """The fan-in of a kernel whose first ``fan_in_ndim`` axes (default all but the last;
    negative: the last ``-fan_in_ndim`` axes) are the contraction: the rows of
    :func:`kernel_matrix`."""
    shape = tuple(kernel_shape)
    k = len(shape) - 1 if fan_in_ndim is None else fan_in_ndim
    return int(np.prod(shape[k:] if k < 0 else shape[:k]))


def _value_now(variable):
    """A scalar variable's stored value as a Python int, also while a training step is being
    traced; None where it cannot be read then (a value traced by another backend)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the TF backend's own way out of a tf.function trace

        with tf.init_scope():
            return int(variable.numpy())
    try:
        return int(np.asarray(variable.value))
    except TypeError:  # e.g. a JAX tracer: the check is skipped in that trace
        return None


def matrix_to_kernel(matrix, shape, fan_in_ndim=None):
    """The inverse of :func:`kernel_matrix`: a ``(fan_in, units)`` matrix back in ``shape``."""
    matrix = np.asarray(matrix)
    if fan_in_ndim is not None and fan_in_ndim < 0:
        return matrix.T.reshape(shape)
    return matrix.reshape(shape)


class PrunableMixin:
    """The pruning state and mask logic shared by every pruned layer.

    A layer using it has a ``kernel`` whose first ``fan_in_ndim`` axes are the contraction
    (by default every axis but the last, the output units): they are flattened into the fan-in
    in row-major order (the im2col order for convolutions), along which groups run.

    A custom pruned layer is ``class MyPruned(PrunableMixin, MyLayer)`` whose ``__init__``
    calls ``self._init_pruning(pattern, importance, schedule, global_group)``, whose ``call``
    takes ``training=None`` and starts with ``self.check_pruning_started(training)``, and whose
    forward pass uses :meth:`forward_kernel` (or :meth:`masked_kernel`, correct in every pass but
    one multiply slower in training); register it as the twin of ``MyLayer`` with
    :func:`tfscalpel.register_layer`.
    """

    #: Leading kernel axes that form the fan-in; None: all but the last; negative: the last
    #: ``-fan_in_ndim`` axes (see :func:`kernel_matrix`).
    fan_in_ndim = None

    def _init_pruning(self, pattern, importance, schedule, global_group):
        if schedule is None:
            raise ValueError(f"layer {self.name!r}: schedule is required")
        self.pattern = get_pattern(pattern)
        self.importance = (
            default_importance(self.pattern) if importance is None else get_importance(importance)
        )
        if self.pattern.group_size > 1 and not self.importance.supports_groups:
            raise ValueError(
                f"layer {self.name!r}: importance {self.importance.importance_name!r} scores "
                f"single weights, but the pattern {self.pattern.describe()} has groups; use one "
                "of rms, mean_abs, max_abs, l1, l2"
            )
        self.schedule = get_schedule(schedule)
        if global_group is not None and self.pattern.fixed_sparsity is not None:
            raise ValueError(
                f"layer {self.name!r}: a global ranking needs a free sparsity, but the pattern "
                f"{self.pattern.describe()} fixes it"
            )
        self.global_group = global_group

    def build(self, input_shape):
        super().build(input_shape)
        self._check_group_size()
        self._build_pruning_weights()

    @property
    def fan_in(self):
        """The length of the contraction groups run along (``kernel_matrix`` rows)."""
        return fan_in_of(self.kernel.shape, self.fan_in_ndim)

    def _check_group_size(self):
        g = self.pattern.group_size
        if g > self.fan_in:
            widths = [w for w in GROUP_SIZES if w <= self.fan_in]
            raise ValueError(
                f"layer {self.name!r}: group_size {g} is larger than the layer's fan-in "
                f"{self.fan_in} (the inputs one output unit sums, along which groups run); "
                f"allowed: 1 to {self.fan_in} (the exporter's kernels take {widths}). Set a "
                "smaller group_size for this layer with per_layer={name: {'group_size': g}}, or "
                "leave it dense")

    def get_config(self):
        return {**super().get_config(), **self._pruning_config()}

    def _build_pruning_weights(self):
        self.pruning_mask = self.add_weight(
            name="pruning_mask", shape=self.kernel.shape, initializer="ones", trainable=False,
            dtype=self.kernel.dtype,
        )
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer=keras.initializers.Constant(-1),
            trainable=False, dtype="int64",
        )
        self.pruning_threshold = self.add_weight(
            name="pruning_threshold", shape=(), initializer="zeros", trainable=False,
            dtype="float32",
        )
        # See the module docstring: where the mask is applied, per backend.
        self._mask_after_step = keras.backend.backend() == "tensorflow"
        if self._mask_after_step:
            self.kernel.constraint = ZeroPruned(self.pruning_mask, self.kernel.constraint)

    # Dense serialises only kernel and bias (its quantization-aware path); pruned layers store
    # every variable, the pruning state included, in the generic Layer order.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)
        self.zero_pruned()  # files written before the kernel was kept zeroed hold stale values

    def zero_pruned(self):
        """Set the kernel's pruned entries to exactly zero (the training forward pass relies on
        it; see the module docstring)."""
        self.kernel.assign(ops.multiply(self.kernel, self.pruning_mask))

    def check_pruning_started(self, training):
        """Raise if the layer runs in training mode while its pruning step is still -1: nothing
        drives the schedule, so the mask would stay all ones for the whole training (tfmot
        raises in the same case). ``UpdatePruningStep`` and :func:`tfscalpel.update_pruning`
        write the step before the first training step.

        The step is read when Keras traces the training step (once per ``fit``), so a traced
        ``fit`` runs the same graph with or without the check; an eager step reads one scalar.
        """
        if not training:
            return
        step = _value_now(self.pruning_step)
        if step is not None and step < 0:
            raise RuntimeError(
                f"layer {self.name!r} is pruned but trains with its pruning step at -1: nothing "
                "updates its mask, so it would never prune. Add tfscalpel.UpdatePruningStep() to "
                "model.fit's callbacks (tfmot's UpdatePruningStep does not drive tfscalpel's "
                "layers), or call tfscalpel.update_pruning(model) before each step of a custom "
                "training loop")

    # -- mask computation -----------------------------------------------------------------------
    def masked_kernel(self):
        """The kernel with the mask applied: what the layer computes with."""
        return ops.multiply(self.kernel, self.pruning_mask)

    def forward_kernel(self, training=None):
        """The kernel for a forward pass: the kernel itself while training on a backend that
        keeps pruned entries zeroed, else :meth:`masked_kernel`."""
        return self.kernel if training and self._mask_after_step else self.masked_kernel()

    def _numpy_state(self):
        """The kernel and the mask as read-only NumPy snapshots (:func:`read_numpy`): what a
        mask update reads, once, and passes on as ``state`` rather than reading them again."""
        return read_numpy(self.kernel), read_numpy(self.pruning_mask)

    def _numpy_masked_kernel(self):
        kernel, mask = self._numpy_state()
        return kernel * mask

    def block_scores(self, state=None):
        """Importance of every block of the masked kernel, ``(n_blocks, units)`` (NumPy).

        Scoring the *masked* kernel means pruned blocks score zero, so a block that was pruned
        stays pruned even if the optimizer's momentum has moved its raw kernel values.
        ``state``: ``(kernel, mask)`` as NumPy when the caller has read them already.
        """
        kernel, mask = self._numpy_state() if state is None else state
        criterion = self.importance.for_layer(self)
        return self.pattern.scores(kernel_matrix(kernel * mask, self.fan_in_ndim), criterion)

    def apply_block_mask(self, keep, threshold=0.0, state=None):
        """Install a block decision ``(n_blocks, units)`` as the new mask and zero the pruned
        kernel entries (so a later unmasking cannot resurrect stale values). ``state``: the
        ``(kernel, mask)`` read for this update (:meth:`block_scores`).

        A variable is written only when its value changes (writes copy the whole tensor into
        the backend and are most of an update's cost): a schedule that re-applies the same
        sparsity leaves the mask alone, and a kernel already zero where pruned (training keeps
        it so on TensorFlow) is not rewritten."""
        kernel, old_mask = self._numpy_state() if state is None else state
        shape = tuple(self.kernel.shape)
        mask = matrix_to_kernel(self.pattern.expand(keep, self.fan_in), shape, self.fan_in_ndim)
        if not np.array_equal(mask, old_mask):
            write(self.pruning_mask, mask)
        zeroed = kernel * mask
        if not np.array_equal(zeroed, kernel):
            write(self.kernel, zeroed)
        write(self.pruning_threshold, float(threshold))

    def prune_to(self, sparsity=None, threshold=None):
        """Recompute the mask now for a target ``sparsity`` or a *raw* score ``threshold``."""
        state = self._numpy_state()
        scores = self.block_scores(state)
        keep = self.pattern.keep_blocks(scores, sparsity=sparsity, threshold=threshold)
        if threshold is None:
            threshold = pruning_boundary(scores, keep)
        self.apply_block_mask(keep, threshold, state)

    # -- reporting --------------------------------------------------------------------------
    def mask_sparsity(self):
        """Fraction of kernel weights currently masked out."""
        return 1.0 - float(np.mean(ops.convert_to_numpy(self.pruning_mask)))

    def _pruning_config(self):
        # Serialised as Keras config dicts, which the constructor accepts back as they are.
        return {
            "pattern": keras.saving.serialize_keras_object(self.pattern),
            "importance": keras.saving.serialize_keras_object(self.importance),
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "global_group": self.global_group,
        }


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedDense(PrunableMixin, keras.layers.Dense):
    """A ``keras.layers.Dense`` whose kernel is pruned in the blocks of ``pattern``.

    Args:
        units, activation, use_bias, ...: as ``keras.layers.Dense``.
        pattern: a :class:`~tfscalpel.SparsityPattern` or its name (default SIMD groups of 4).
        importance: block criterion or its name; default RMS for groups, magnitude otherwise.
        schedule: when and how far to prune (:mod:`tfscalpel.schedules`, or tfmot's).
        global_group: layers sharing this name are ranked together (one global sparsity).
    """

    def __init__(self, units, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(units, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs, training=None):
        self.check_pruning_started(training)
        x = ops.matmul(inputs, self.forward_kernel(training))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x



@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedConv2D(PrunableMixin, keras.layers.Conv2D):
    """A ``keras.layers.Conv2D`` whose filters are pruned in blocks along the flattened
    ``kh*kw*cin`` of each filter (the im2col order). Arguments as :class:`GroupPrunedDense`
    plus those of ``keras.layers.Conv2D``."""

    def __init__(self, filters, kernel_size, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs, training=None):
        self.check_pruning_started(training)
        outputs = self.convolution_op(inputs, self.forward_kernel(training))
        return _bias_and_activation(self, outputs)


class ZeroPruned(keras.constraints.Constraint):
    """A pruned layer's kernel constraint: the layer's own ``kernel_constraint`` (if any), then
    the pruning mask, so pruned weights are exactly zero after every optimizer step. Attached
    to the kernel variable at build, not to the layer's config (which keeps the user's)."""

    def __init__(self, mask, inner=None):
        self.mask, self.inner = mask, inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return ops.multiply(w, ops.cast(self.mask, w.dtype))


def pruned_layers(model):
    """Every pruned layer of ``model``, nested models included, in order."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PrunableMixin):
            found.append(layer)
    return found


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedConv1D(PrunableMixin, keras.layers.Conv1D):
    """A ``keras.layers.Conv1D`` whose filters are pruned in blocks along the flattened
    ``k*cin`` of each filter (the im2col order). Arguments as :class:`GroupPrunedDense` plus
    those of ``keras.layers.Conv1D``."""

    def __init__(self, filters, kernel_size, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs, training=None):
        self.check_pruning_started(training)
        # Conv1D.call with the masked kernel (it calls ops.conv, not convolution_op).
        padding = self.padding
        if padding == "causal":
            inputs = ops.pad(inputs, self._compute_causal_padding())
            padding = "valid"
        outputs = ops.conv(inputs, self.forward_kernel(training), strides=list(self.strides),
                           padding=padding, dilation_rate=self.dilation_rate,
                           data_format=self.data_format)
        return _bias_and_activation(self, outputs)


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedDepthwiseConv2D(PrunableMixin, keras.layers.DepthwiseConv2D):
    """A ``keras.layers.DepthwiseConv2D`` whose filters are pruned in blocks along the
    flattened ``kh*kw`` window of each output channel (a depthwise filter contracts over its
    window only). Arguments as :class:`GroupPrunedDense` plus those of
    ``keras.layers.DepthwiseConv2D``."""

    fan_in_ndim = 2  # kernel (kh, kw, channels, depth_multiplier)

    def __init__(self, kernel_size, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(kernel_size, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs, training=None):
        self.check_pruning_started(training)
        # DepthwiseConv2D.call with the masked kernel (it has no convolution_op to override).
        outputs = ops.depthwise_conv(
            inputs, self.forward_kernel(training), strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _bias_and_activation(self, outputs)


def _bias_and_activation(layer, outputs):
    """The end of a Keras convolution's ``call``: bias on the channel axis, then activation."""
    if layer.use_bias:
        channels = int(layer.bias.shape[0])
        shape = ((1,) * (layer.rank + 1) + (channels,) if layer.data_format == "channels_last"
                 else (1, channels) + (1,) * layer.rank)
        outputs = ops.add(outputs, ops.reshape(layer.bias, shape))
    if layer.activation is not None:
        return layer.activation(outputs)
    return outputs


@keras.saving.register_keras_serializable(package="tfscalpel")
class PrunedLayerNormalization(keras.layers.LayerNormalization):
    """A ``keras.layers.LayerNormalization`` over the last axis that lost channels to node
    removal and still normalises as if it had all ``n_full`` of them.

    :func:`tfscalpel.strip` removes a channel from a layer norm only where its input was exactly
    zero (a dead gate on every path into it), so the removed channels' contribution to the
    statistics is known: each adds 0 to the sum and ``mean**2`` to the squared deviations. With
    ``x`` the kept channels, ``n = n_full``::

        mean = sum(x) / n
        var  = (sum((x - mean)**2) + (n - len(x)) * mean**2) / n
        out  = (x - mean) / sqrt(var + epsilon) * gamma + beta

    which equals the original layer's output on the kept channels. Plain reductions and
    element-wise ops, so the TFLite converter takes it as it is.

    Args:
        n_full: the number of channels the original layer normalised over (>= the width of
            its input).
        axis, epsilon, center, scale, ...: as ``keras.layers.LayerNormalization``;
            ``rms_scaling`` and axes other than the last are not supported.
    """

    def __init__(self, n_full, **kwargs):
        super().__init__(**kwargs)
        if not is_integer(n_full) or n_full < 1:
            raise ValueError(f"PrunedLayerNormalization {self.name!r}: n_full must be an "
                             f"integer >= 1, got {n_full!r}")
        if self.rms_scaling:
            raise ValueError(f"PrunedLayerNormalization {self.name!r}: rms_scaling is not "
                             "supported")
        self.n_full = n_full

    def build(self, input_shape):
        axis = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        rank = len(input_shape)
        if len(axis) != 1 or int(axis[0]) % rank != rank - 1:
            raise ValueError(f"PrunedLayerNormalization {self.name!r}: axis must be the last "
                             f"axis, got {self.axis!r}")
        if input_shape[-1] is not None and int(input_shape[-1]) > self.n_full:
            raise ValueError(f"PrunedLayerNormalization {self.name!r}: input has "
                             f"{input_shape[-1]} channels, more than n_full={self.n_full}")
        super().build(input_shape)

    def call(self, inputs):
        # Statistics in float32 under mixed precision, as Keras's own layer norm computes them.
        half = keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16")
        x = ops.cast(inputs, "float32") if half else inputs
        n = float(self.n_full)
        missing = n - float(x.shape[-1])
        mean = ops.sum(x, axis=-1, keepdims=True) / n
        centred = x - mean
        var = (ops.sum(ops.square(centred), axis=-1, keepdims=True)
               + missing * ops.square(mean)) / n
        out = centred * ops.rsqrt(var + self.epsilon)
        if self.gamma is not None:
            out = out * ops.cast(self.gamma, out.dtype)
        if self.beta is not None:
            out = out + ops.cast(self.beta, out.dtype)
        return ops.cast(out, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "n_full": self.n_full}
