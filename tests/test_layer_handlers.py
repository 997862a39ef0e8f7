"""Layer handlers: lookup by MRO, register_layer for custom layers, what each handler says."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill as _kill
from tfscalpel import MaskLayer, layer_handlers
from tfscalpel.dependency import channel_plan, is_weighted
from tfscalpel.layers import kernel_matrix

L = keras.layers


class Scale(L.Layer):
    """A user layer with one weight per channel: ``y = x * scale``."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer="random_normal")

    def call(self, x):
        return x * self.scale


class WideDense(L.Dense):
    """A user subclass of Dense (its own config entry)."""

    def __init__(self, units, note="", **kwargs):
        super().__init__(units, **kwargs)
        self.note = note

    def get_config(self):
        return {**super().get_config(), "note": self.note}


@pytest.fixture
def registered_scale():
    assert tfscalpel.register_layer(Scale, layer_handlers.Channelwise(weight_axes=-1)) is None
    yield
    layer_handlers.unregister_layer(Scale)


def _scale_model():
    inputs = keras.Input((5, 5, 2))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = MaskLayer(name="m1")(x)
    x = Scale(name="scale")(x)
    x = L.Conv2D(3, 1, name="c2")(x)
    return keras.Model(inputs, L.GlobalAveragePooling2D()(x))


def test_lookup_follows_the_mro():
    dense = layer_handlers.get_handler(L.Dense)
    assert layer_handlers.get_handler(tfscalpel.GroupPrunedDense) is dense
    assert layer_handlers.get_handler(WideDense(3)) is dense
    assert layer_handlers.get_handler(tfscalpel.GroupPrunedConv2D) is layer_handlers.get_handler(
        L.Conv2D)
    assert layer_handlers.get_handler(Scale).role == "opaque"
    assert layer_handlers.get_handler(MaskLayer).role == "gate"
    assert layer_handlers.get_handler(L.Add).zero == "all"
    assert layer_handlers.get_handler(L.Multiply).zero == "any"
    # a registration for the subclass wins over its base class's, and undoes cleanly
    own = layer_handlers.Weighted("units", "dense", "FULLY_CONNECTED")
    try:
        assert tfscalpel.register_layer(WideDense, own) is None
        assert layer_handlers.get_handler(WideDense(3)) is own
    finally:
        assert layer_handlers.unregister_layer(WideDense) is own
    assert layer_handlers.get_handler(WideDense) is dense


def test_weighted_handler_describes_kernel_groups_and_export_form():
    conv = L.Conv2D(5, 3)
    conv.build((None, 8, 8, 2))
    h = layer_handlers.get_handler(conv)
    assert (h.role, h.kind, h.export_op, h.width_key) == ("weighted", "conv", "CONV_2D", "filters")
    assert h.fan_in(conv) == 18 and h.group_axes(conv) == (0, 1, 2)
    assert h.prunable_weights(conv) == [conv.kernel]
    dw = L.DepthwiseConv2D(3)
    dw.build((None, 8, 8, 2))
    assert layer_handlers.get_handler(dw).group_axes(dw) == (0, 1)
    assert layer_handlers.get_handler(dw).prunable_weights(dw) == [dw.kernel]
    bn = L.BatchNormalization()
    bn.build((None, 4))
    assert layer_handlers.get_handler(bn).prunable_weights(bn) == []
    assert h.pruned_twin(conv) is tfscalpel.GroupPrunedConv2D
    dense = layer_handlers.get_handler(L.Dense)
    assert (dense.kind, dense.export_op, dense.width_key) == ("dense", "FULLY_CONNECTED", "units")
    assert dense.pruned_twin(L.Dense(3)) is tfscalpel.GroupPrunedDense
    # a subclass is followed as a Dense, but prune() does not swap in a twin that would lose it
    assert dense.pruned_twin(WideDense(3)) is None and is_weighted(WideDense(3))
    assert dense.pruned_twin(tfscalpel.GroupPrunedDense(3, schedule=None or
                                                        tfscalpel.ConstantSparsity(0.5))) is None
    assert not is_weighted(L.Conv2D(4, 1, groups=2))
    conv1d = L.Conv1D(4, 3)
    conv1d.build((None, 10, 6))
    assert layer_handlers.get_handler(conv1d).fan_in(conv1d) == 18
    assert layer_handlers.get_handler(conv1d).group_axes(conv1d) == (0, 1)


def test_kernel_matrix_is_the_im2col_view():
    kernel = np.arange(3 * 3 * 2 * 5).reshape(3, 3, 2, 5)
    assert kernel_matrix(kernel).shape == (18, 5)
    np.testing.assert_array_equal(kernel_matrix(kernel)[:, 1], kernel[..., 1].ravel())
    # a depthwise kernel (kh, kw, channels, multiplier) contracts over its window only
    np.testing.assert_array_equal(kernel_matrix(kernel, 2)[:, 3], kernel[:, :, 0, 3].ravel())
    assert tfscalpel.layers.GroupPrunedDepthwiseConv2D.fan_in_ndim == 2


def test_register_layer_checks_its_arguments():
    with pytest.raises(TypeError, match="layer_class must be a keras.layers.Layer subclass"):
        tfscalpel.register_layer(int, layer_handlers.Channelwise())
    with pytest.raises(TypeError, match="handler must be a tfscalpel.layer_handlers.LayerHandler"):
        tfscalpel.register_layer(Scale, "channelwise")
    with pytest.raises(ValueError, match="zero must be 'all' or 'any'"):
        layer_handlers.Merge("some")


def test_unregistered_custom_layer_is_named():
    model = _scale_model()
    _kill(model, {"m1": [1]})
    with pytest.raises(ValueError, match=r"layer 'scale' is a Scale layer, which the channel "
                                         r"analysis does not know.*\['m1'\]"):
        tfscalpel.strip(model)


def test_registered_custom_layer_loses_channels(registered_scale):
    rng = np.random.default_rng(0)
    model = _scale_model()
    _kill(model, {"m1": [1, 4]})
    stripped, report = tfscalpel.strip(model, return_report=True)
    assert {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers} == {
        "c1": (4, 6), "c2": (3, 3)}
    np.testing.assert_array_equal(stripped.get_layer("scale").get_weights()[0],
                                  model.get_layer("scale").get_weights()[0][[0, 2, 3, 5]])
    assert stripped.get_layer("c2").kernel.shape == (1, 1, 4, 3)
    x = rng.normal(size=(3, 5, 5, 2)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)


def test_custom_check_refuses_a_layer(registered_scale):
    def no_odd(layer, input_shapes, output_shapes):
        return "a Scale with an odd channel count" if input_shapes[0][-1] % 2 else None

    tfscalpel.register_layer(Scale, layer_handlers.Channelwise(weight_axes=-1, check=no_odd))
    inputs = keras.Input((5,))
    x = MaskLayer(name="m1")(L.Dense(5, name="d1")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(Scale(name="scale")(x)))
    with pytest.raises(ValueError, match="layer 'scale' is a Scale with an odd channel count"):
        channel_plan(model)


def test_dense_subclass_is_followed_by_strip_and_left_dense_by_prune():
    rng = np.random.default_rng(1)
    inputs = keras.Input((6,))
    x = MaskLayer(name="m1")(WideDense(5, note="x", name="wide")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    _kill(model, {"m1": [0, 2]})
    stripped = tfscalpel.strip(model)
    assert type(stripped.get_layer("wide")) is WideDense
    assert stripped.get_layer("wide").kernel.shape == (6, 3)
    assert stripped.get_layer("wide").note == "x"
    x = rng.normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    with pytest.warns(UserWarning, match=r"stay dense: wide \(WideDense\)\. \['WideDense'\] "
                                         r"subclass a prunable type.*tfscalpel.register_layer"):
        pruned = tfscalpel.prune(model, sparsity=0.5)
    assert [layer.name for layer in tfscalpel.pruned_layers(pruned)] == ["out"]


class PrunedWideDense(tfscalpel.PrunableMixin, WideDense):
    """The documented protocol for a user's pruned twin: PrunableMixin first, _init_pruning in
    __init__, the masked kernel in the forward pass."""

    def __init__(self, units, pattern="group", importance=None, schedule=None,
                 global_group=None, **kwargs):
        super().__init__(units, **kwargs)
        self._init_pruning(pattern, importance, schedule, global_group)

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.masked_kernel()) + self.bias


def test_registered_twin_prunes_a_user_subclass(tmp_path):
    rng = np.random.default_rng(2)
    inputs = keras.Input((8,))
    model = keras.Model(inputs, WideDense(4, note="keep me", name="wide")(inputs))
    handler = layer_handlers.Weighted("units", "dense", "FULLY_CONNECTED", twin=PrunedWideDense)
    tfscalpel.register_layer(WideDense, handler)
    try:
        pruned = tfscalpel.prune(model, sparsity=0.5, group_size=4)
        tfscalpel.update_pruning(pruned)
        wide = pruned.get_layer("wide")
        assert type(wide) is PrunedWideDense and wide.note == "keep me"
        # fan-in 8 = 2 groups per unit, 4 units: 4 of 8 groups kept
        assert wide.pruning_mask.numpy().sum() == 16
        stripped = tfscalpel.strip(pruned)
        assert type(stripped.get_layer("wide")) is WideDense
        assert stripped.get_layer("wide").note == "keep me"
        np.testing.assert_array_equal(stripped.get_layer("wide").kernel.numpy(),
                                      wide.masked_kernel().numpy())
        x = rng.normal(size=(3, 8)).astype("float32")
        np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                                   atol=1e-6)
    finally:
        layer_handlers.unregister_layer(WideDense)
    with pytest.raises(TypeError,
                       match="twin must be a class derived from tfscalpel.PrunableMixin"):
        layer_handlers.Weighted("units", "dense", "FULLY_CONNECTED", twin=WideDense)
