"""Pruned twins of the other Keras convolutions: SeparableConv2D, Conv3D, Conv2DTranspose.

Each is the stock layer plus :class:`~tfscalpel.PrunableMixin`'s mask, with the groups along the
layer's contraction (the GEMM's reduction axis):

- ``GroupPrunedSeparableConv2D``: the *pointwise* kernel ``(1, 1, cin * multiplier, cout)`` is
  pruned, groups along its ``cin * multiplier`` inputs. The depthwise kernel stays dense: it is
  ``kh * kw / cout`` the size of the pointwise one (9/64 for a 3x3 into 64 filters), and its
  own contraction is a window of ``kh * kw`` values (prune it on its own with a
  DepthwiseConv2D if it matters).
- ``GroupPrunedConv3D``: groups along the flattened ``kd * kh * kw * cin`` of each filter.
- ``GroupPrunedConv2DTranspose``: the kernel is ``(kh, kw, out, in)``. A transposed convolution
  is a GEMM ``(kh * kw * out, in) x (in, pixels)`` followed by col2im, so its contraction is the
  *input channels* only, the last axis: groups of ``g`` input channels at one ``(kh, kw, out)``
  position (TFLite's TRANSPOSE_CONV weight ``[out, kh, kw, in]`` has the same rows of ``in``).
  ``fan_in_ndim = -1``.

Their handlers (channel roles, removal) are registered in :mod:`tfscalpel.layer_handlers`.
"""
import keras
from keras import ops

from tfscalpel.layers import PrunableMixin, _bias_and_activation


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedSeparableConv2D(PrunableMixin, keras.layers.SeparableConv2D):
    """A ``keras.layers.SeparableConv2D`` whose pointwise kernel is pruned in blocks along its
    ``cin * depth_multiplier`` inputs (see the module docstring). Arguments as
    :class:`~tfscalpel.GroupPrunedDense` plus those of ``keras.layers.SeparableConv2D``."""

    def __init__(self, filters, kernel_size, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    @property
    def kernel(self):
        """The pruned weight: the pointwise kernel."""
        return self.pointwise_kernel

    def call(self, inputs):
        outputs = ops.separable_conv(
            inputs, self.depthwise_kernel, self.masked_kernel(), strides=self.strides,
            padding=self.padding, dilation_rate=self.dilation_rate,
            data_format=self.data_format)
        return _bias_and_activation(self, outputs)


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedConv3D(PrunableMixin, keras.layers.Conv3D):
    """A ``keras.layers.Conv3D`` whose filters are pruned in blocks along the flattened
    ``kd*kh*kw*cin`` of each filter. Arguments as :class:`~tfscalpel.GroupPrunedDense` plus
    those of ``keras.layers.Conv3D``."""

    def __init__(self, filters, kernel_size, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, ops.multiply(kernel, self.pruning_mask))


@keras.saving.register_keras_serializable(package="tfscalpel")
class GroupPrunedConv2DTranspose(PrunableMixin, keras.layers.Conv2DTranspose):
    """A ``keras.layers.Conv2DTranspose`` whose kernel ``(kh, kw, out, in)`` is pruned in
    blocks of input channels (its contraction; see the module docstring). Arguments as
    :class:`~tfscalpel.GroupPrunedDense` plus those of ``keras.layers.Conv2DTranspose``."""

    fan_in_ndim = -1

    def __init__(self, filters, kernel_size, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs):
        outputs = ops.conv_transpose(
            inputs, self.masked_kernel(), strides=list(self.strides), padding=self.padding,
            output_padding=self.output_padding, dilation_rate=self.dilation_rate,
            data_format=self.data_format)
        return _bias_and_activation(self, outputs)
