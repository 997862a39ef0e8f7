"""Physical node removal: the dependency graph decides, strip() removes, outputs stay equal."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill as _kill
from tfscalpel import MaskLayer
from tfscalpel.dependency import channel_plan

L = keras.layers


def _randomise_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(size=gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])


def _strip_and_compare(model, input_shape, rng):
    stripped, report = tfscalpel.strip(model, return_report=True)
    x = rng.normal(size=(5, *input_shape)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)
    assert not any(isinstance(layer, MaskLayer) for layer in stripped.layers)
    assert stripped.count_params() < model.count_params()
    return stripped, {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers}


def test_dense_chain_loses_units_and_next_rows():
    rng = np.random.default_rng(0)
    inputs = keras.Input((12,))
    x = L.Dense(10, activation="relu", name="fc1")(inputs)
    x = MaskLayer(name="m1")(x)
    x = L.Dropout(0.3)(x)
    x = L.Dense(8, activation="tanh", name="fc2")(x)
    x = MaskLayer(name="m2")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    _kill(model, {"m1": [0, 3, 9], "m2": [1, 2, 3, 4, 5, 6, 7]})
    stripped, nodes = _strip_and_compare(model, (12,), rng)
    assert nodes == {"fc1": (7, 10), "fc2": (1, 8), "out": (3, 3)}
    assert stripped.get_layer("fc2").kernel.shape == (7, 1)
    np.testing.assert_array_equal(stripped.get_layer("fc2").kernel.numpy(),
                                  model.get_layer("fc2").kernel.numpy()[[1, 2, 4, 5, 6, 7, 8]][:, [0]])


def test_layer_with_every_node_dead_keeps_one_zero_node():
    rng = np.random.default_rng(3)
    inputs = keras.Input((6,))
    x = L.Dense(5, activation="relu", name="fc1")(inputs)
    x = MaskLayer(name="m1")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    _kill(model, {"m1": [0, 1, 2, 3, 4]})
    stripped, nodes = _strip_and_compare(model, (6,), rng)
    assert nodes["fc1"] == (1, 5) and stripped.get_layer("out").kernel.shape == (1, 2)


def test_conv_bn_conv_and_flatten_dense_rows_in_hwc_order():
    rng = np.random.default_rng(1)
    inputs = keras.Input((7, 7, 2))
    x = L.Conv2D(6, 3, name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = MaskLayer(name="m1")(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(5, 1, name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = MaskLayer(name="m2")(x)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(4, name="out")(x))
    _randomise_bn(model, rng)
    _kill(model, {"m1": [1, 4], "m2": [0, 2]})
    stripped, nodes = _strip_and_compare(model, (7, 7, 2), rng)
    assert nodes == {"c1": (4, 6), "c2": (3, 5), "out": (4, 4)}
    assert stripped.get_layer("c2").kernel.shape == (1, 1, 4, 3)
    assert stripped.get_layer("bn1").gamma.shape == (4,)
    # Flatten of (2, 2, 5) -> rows h*10 + w*5 + c; channels 0 and 2 go from every position
    rows = [r for r in range(20) if r % 5 not in (0, 2)]
    np.testing.assert_array_equal(stripped.get_layer("out").kernel.numpy(),
                                  model.get_layer("out").kernel.numpy()[rows])


def test_depthwise_follows_channels():
    rng = np.random.default_rng(2)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = MaskLayer(name="m1")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.Conv2D(4, 1, name="pw")(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    _kill(model, {"m1": [0, 5]})
    stripped, nodes = _strip_and_compare(model, (6, 6, 3), rng)
    assert nodes["c1"] == (4, 6) and stripped.get_layer("dw").kernel.shape == (3, 3, 4, 1)


def test_depthwise_bias_keeps_channels_it_makes_nonzero():
    # dw(0) = bias != 0: the channel is not zero where pw reads it, so nothing can go.
    inputs = keras.Input((4, 4, 2))
    x = MaskLayer(name="m1")(L.Conv2D(3, 1, name="c1")(inputs))
    dw = L.DepthwiseConv2D(1, name="dw")
    x = L.Conv2D(2, 1, name="pw")(dw(x))
    model = keras.Model(inputs, x)
    dw.bias.assign([0.0, 0.5, 0.0])
    _kill(model, {"m1": [0, 1]})
    plan = channel_plan(model)
    assert plan.keep_out["c1"].tolist() == [1, 2]


def _inverted_residual():
    """MobileNetV2's block: expand 1x1 -> BN -> ReLU6 -> pad -> depthwise 3x3 stride 2 -> BN ->
    ReLU6 -> project 1x1."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, use_bias=False, name="expand")(inputs)
    x = L.ReLU(6.0, name="expand_relu")(L.BatchNormalization(name="expand_bn")(x))
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = L.DepthwiseConv2D(3, strides=2, use_bias=False, name="dw")(x)
    x = L.ReLU(6.0, name="dw_relu")(L.BatchNormalization(name="dw_bn")(x))
    x = L.Conv2D(4, 1, name="project")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))


def test_expansion_gate_sits_after_the_depthwise_so_its_channels_go():
    # Before the depthwise a dead channel is zero only until dw_bn (BN(0) = beta - ... != 0):
    # the projection would read a constant there and strip could remove nothing. After
    # dw_relu it is an exact zero, and the channel goes from expand, both BNs and dw.
    rng = np.random.default_rng(4)
    model = _inverted_residual()
    _randomise_bn(model, rng)
    plan = tfscalpel.plan(model, "x86-avx2")
    assert (plan["expand"].method, plan["expand"].mask_after) == ("node", "dw_relu")
    pruned = tfscalpel.prune(model, target="x86-avx2", per_layer={"head": {"method": "none"}},
                             verbose=False)
    _kill(pruned, {"mask_dw_relu": [0, 2, 5]})
    stripped, nodes = _strip_and_compare(pruned, (8, 8, 3), rng)
    assert nodes["expand"] == (3, 6)
    assert stripped.get_layer("dw").kernel.shape == (3, 3, 3, 1)
    assert stripped.get_layer("dw_bn").gamma.shape == (3,)
    assert stripped.get_layer("project").kernel.shape == (1, 1, 3, 4)


def _residual(width=6):
    inputs = keras.Input((5, 5, 2))
    stem = L.Conv2D(width, 3, padding="same", name="stem")(inputs)
    stem = MaskLayer(name="m_stem")(stem)
    y = L.Conv2D(width, 3, padding="same", activation="relu", name="branch")(stem)
    y = MaskLayer(name="m_branch")(y)
    x = L.Add(name="add")([stem, y])
    x = L.Conv2D(3, 1, name="head")(x)
    return keras.Model(inputs, L.GlobalAveragePooling2D()(x))


def test_residual_add_removes_coupled_channels_together_or_not_at_all():
    rng = np.random.default_rng(3)
    model = _residual()
    # channel 1 dead on both sides -> removed everywhere; channel 4 dead only in the branch
    # -> kept on both sides (the branch keeps it as an exact zero)
    _kill(model, {"m_stem": [1], "m_branch": [1, 4]})
    stripped, nodes = _strip_and_compare(model, (5, 5, 2), rng)
    assert nodes == {"stem": (5, 6), "branch": (5, 6), "head": (3, 3)}
    assert stripped.get_layer("head").kernel.shape == (1, 1, 5, 3)
    # the branch's still-needed dead channel is zeroed by a stock constant multiply
    assert isinstance(stripped.get_layer("m_branch"), L.Rescaling)


def test_nothing_dead_on_one_side_removes_nothing():
    model = _residual()
    _kill(model, {"m_branch": [0, 1, 2]})
    plan = channel_plan(model)
    assert all(len(k) == plan.units[n] for n, k in plan.keep_out.items())


def test_concatenate_and_multiply():
    rng = np.random.default_rng(4)
    inputs = keras.Input((6,))
    a = MaskLayer(name="ma")(L.Dense(4, name="a")(inputs))
    b = MaskLayer(name="mb")(L.Dense(3, name="b")(inputs))
    c = L.Concatenate()([a, b])
    g = L.Dense(7, activation="sigmoid", name="g")(inputs)
    x = L.Multiply()([c, g])
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    _kill(model, {"ma": [0], "mb": [2]})
    # a product with an exact zero is zero: the coupled gate unit goes as well
    _, nodes = _strip_and_compare(model, (6,), rng)
    assert nodes == {"a": (3, 4), "b": (2, 3), "g": (5, 7), "out": (2, 2)}


def test_unfollowable_layer_is_named_with_the_way_out():
    inputs = keras.Input((4, 4, 2))
    x = MaskLayer(name="m1")(L.Conv2D(4, 1, name="c1")(inputs))
    x = L.Reshape((8, 8), name="reshape")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    with pytest.raises(ValueError, match=r"layer 'reshape' is a Reshape layer.*\['m1'\].*"
                                         r"per_layer=\{name: \{'method': 'none'\}\}"):
        tfscalpel.strip(model)
    # a Reshape that no gated channel reaches is fine
    inputs = keras.Input((4, 4, 2))
    x = L.Reshape((4, 8), name="reshape")(inputs)
    x = MaskLayer(name="m1")(L.Dense(4, name="c1")(x))
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    _kill(model, {"m1": [3]})
    _strip_and_compare(model, (4, 4, 2), np.random.default_rng(5))


def test_model_outputs_and_inputs_are_never_shrunk():
    inputs = keras.Input((4,))
    x = MaskLayer(name="m_in")(inputs)
    x = MaskLayer(name="m_out")(L.Dense(3, name="d")(x))
    model = keras.Model(inputs, x)
    _kill(model, {"m_in": [0], "m_out": [1]})
    plan = channel_plan(model)
    assert plan.keep_out["d"].tolist() == [0, 1, 2] and plan.keep_in["d"].tolist() == [0, 1, 2, 3]


def test_stripped_model_saves_and_loads(tmp_path):
    rng = np.random.default_rng(6)
    model = _residual()
    _kill(model, {"m_stem": [1, 2], "m_branch": [1, 2, 4]})
    stripped = tfscalpel.strip(model)
    stripped.save(tmp_path / "s.keras")
    loaded = keras.models.load_model(tmp_path / "s.keras")
    x = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
