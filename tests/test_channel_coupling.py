"""Channel coupling as real nets build it (keras.applications style, at toy sizes): batch norm
and concatenation on ``axis=3``, residual Adds, squeeze-excite (pool, Reshape, Multiply)."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill
from layer_testlib import strip_and_reload
from tfscalpel import MaskLayer
from tfscalpel.dependency import channel_plan

L = keras.layers


def _bn(x, name):
    return L.BatchNormalization(axis=3, name=name)(x)


def _resnet_like():
    """Stem, an identity residual block, and a projection block whose branch concatenates two
    convolutions (axis=3) and scales them by squeeze-excite."""
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU(name="stem_relu")(_bn(L.Conv2D(8, 3, padding="same", name="stem")(inputs),
                                     "stem_bn"))
    y = L.ReLU(name="b1_relu")(_bn(L.Conv2D(6, 3, padding="same", name="b1_c1")(x), "b1_bn1"))
    y = _bn(L.Conv2D(8, 3, padding="same", name="b1_c2")(y), "b1_bn2")
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, y]))
    a = L.ReLU(name="b2_relu_a")(_bn(L.Conv2D(4, 1, name="b2_a")(x), "b2_bn_a"))
    b = L.ReLU(name="b2_relu_b")(_bn(L.Conv2D(4, 3, padding="same", name="b2_b")(x), "b2_bn_b"))
    y = L.Concatenate(axis=3, name="b2_cat")([a, b])
    s = L.Reshape((1, 1, 8), name="se_reshape")(L.GlobalAveragePooling2D(name="se_pool")(y))
    s = L.Conv2D(3, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    y = L.Multiply(name="se_mul")([y, s])
    y = _bn(L.Conv2D(10, 1, name="b2_c3")(y), "b2_bn3")
    shortcut = _bn(L.Conv2D(10, 1, name="b2_short")(x), "b2_bn_short")
    x = L.ReLU(name="b2_out")(L.Add(name="b2_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(4, name="out")(x))


#: Node pruning on every layer: the gpu-ampere plan without its 2:4 part, whose windows would
#: keep channels (tested in test_targets.py); this file is about coupling.
_NODES = {n: {"method": "node"} for n in ("stem", "b1_c1", "b1_c2", "b2_a", "b2_b", "se_reduce",
                                          "se_expand", "b2_c3", "b2_short", "out")}


def _randomise_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.normal(size=n), rng.normal(size=n), rng.normal(size=n),
                               rng.uniform(0.5, 2, n)])


def test_node_plan_puts_gates_where_channels_are_read():
    pruned = tfscalpel.prune(_resnet_like(), target="gpu-ampere", per_layer=_NODES)
    gated = {layer.name: layer for layer in pruned.layers if isinstance(layer, MaskLayer)}
    # after BN and ReLU when they are the only consumer; before a merge otherwise
    assert sorted(gated) == sorted(
        f"mask_{n}" for n in ("stem_relu", "b1_relu", "b1_bn2", "b2_relu_a", "b2_relu_b",
                              "se_reduce", "se_expand", "b2_bn3", "b2_bn_short"))


def test_residual_net_loses_channels_and_keeps_its_outputs(tmp_path):
    rng = np.random.default_rng(0)
    pruned = tfscalpel.prune(_resnet_like(), target="gpu-ampere", per_layer=_NODES)
    _randomise_bn(pruned, rng)
    kill(pruned, {
        "mask_b1_relu": [0, 3],  # inside a block: removed
        "mask_stem_relu": [2, 5], "mask_b1_bn2": [2],  # Add-coupled: only 2 is dead on both
        "mask_b2_relu_a": [1],  # concat channel 1, coupled with SE filter 1 by the Multiply
        "mask_b2_relu_b": [0, 3],  # concat channels 4 and 7
        "mask_b2_bn3": [7, 9], "mask_b2_bn_short": [7],  # Add-coupled: only 7 on both
    })
    x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    stripped, layers = strip_and_reload(pruned, x, tmp_path, tol=1e-4)
    nodes = {name: (r.nodes_kept, r.nodes_total) for name, r in layers.items()}
    assert nodes == {
        "stem": (7, 8), "b1_c1": (4, 6), "b1_c2": (7, 8), "b2_a": (3, 4), "b2_b": (2, 4),
        "se_reduce": (3, 3), "se_expand": (5, 8), "b2_c3": (9, 10), "b2_short": (9, 10),
        "out": (4, 4)}
    assert stripped.get_layer("b1_bn2").gamma.shape == (7,)
    assert stripped.get_layer("b2_c3").kernel.shape == (1, 1, 5, 9)
    assert stripped.get_layer("se_reduce").kernel.shape == (1, 1, 5, 3)
    assert stripped.get_layer("out").kernel.shape == (9, 4)
    # dead channels coupled with live ones stay, zeroed by a stock constant multiply
    assert isinstance(stripped.get_layer("mask_stem_relu"), L.Rescaling)


def test_positive_and_negative_channel_axes_agree():
    for axis in (3, -1):
        inputs = keras.Input((4, 4, 2))
        a = MaskLayer(name="ma")(L.Conv2D(3, 1, name="a")(inputs))
        b = L.Conv2D(2, 1, name="b")(inputs)
        x = L.BatchNormalization(axis=axis, name="bn")(L.Concatenate(axis=axis)([a, b]))
        model = keras.Model(inputs, L.Conv2D(2, 1, name="c")(x))
        kill(model, {"ma": [1]})
        model.get_layer("bn").set_weights([np.ones(5), np.zeros(5), np.zeros(5), np.ones(5)])
        assert channel_plan(model).keep_out["a"].tolist() == [0, 2]
        keras.backend.clear_session()


@pytest.mark.parametrize("make, message", [
    (lambda: L.BatchNormalization(axis=1, name="odd"),
     r"layer 'odd' is a BatchNormalization over axis 1, not the channel axis \(the last of 4\)"),
    (lambda: L.Reshape((4, 12), name="odd"),
     r"layer 'odd' is a Reshape layer that changes the channel axis \(3 -> 12\)"),
    (lambda: L.LayerNormalization(rms_scaling=True, name="odd"),
     r"layer 'odd' is a LayerNormalization with rms_scaling=True, which node removal does not "
     r"support"),
    (lambda: L.LayerNormalization(axis=1, name="odd"),
     r"layer 'odd' is a LayerNormalization over axis \[1\], not the channel axis \(the last of 4\)"),
    (lambda: L.GroupNormalization(groups=1, name="odd"),
     r"layer 'odd' is a GroupNormalization layer, which the channel analysis does not know"),
])
@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
def test_layers_that_mix_the_channel_axis_are_refused_by_name(make, message):
    inputs = keras.Input((4, 4, 2))
    x = MaskLayer(name="m")(L.Conv2D(3, 1, name="c1")(inputs))
    x = make()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x)))
    with pytest.raises(ValueError, match=message + r".*\['m'\]"):
        tfscalpel.strip(model)


def test_concatenation_on_another_axis_is_refused_by_name():
    inputs = keras.Input((4, 4, 2))
    a = MaskLayer(name="m")(L.Conv2D(3, 1, name="a")(inputs))
    x = L.Concatenate(axis=1, name="cat_h")([a, L.Conv2D(3, 1, name="b")(inputs)])
    model = keras.Model(inputs, L.Conv2D(2, 1, name="c")(x))
    with pytest.raises(ValueError, match=r"layer 'cat_h' is a concatenation along axis 1, not "
                                         r"the channel axis.*\['m'\]"):
        channel_plan(model)


def test_coupled_gates_are_the_merges_groups():
    from tfscalpel.dependency import coupled_gates

    pruned = tfscalpel.prune(_resnet_like(), target="gpu-ampere", per_layer=_NODES)
    groups = sorted(sorted(g) for g in coupled_gates(pruned))
    # b1_add ties the stem with the block's second conv channel by channel; b2_add the
    # projection with the branch; se_mul the concatenated branches with the SE filters
    assert groups == sorted(
        [[("mask_b1_bn2", k), ("mask_stem_relu", k)] for k in range(8)]
        + [[("mask_b2_bn3", k), ("mask_b2_bn_short", k)] for k in range(10)]
        + [sorted([("mask_b2_relu_a" if k < 4 else "mask_b2_relu_b", k % 4),
                   ("mask_se_expand", k)]) for k in range(8)])


@pytest.mark.parametrize("tie", [True, False])
def test_gate_training_ties_coupled_gates_so_residual_channels_go(tie):
    rng = np.random.default_rng(1)
    pruned = tfscalpel.prune(_resnet_like(), target="gpu-ampere", per_layer=_NODES,
                             mask_options={"gate_scale": 64.0})
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, size=64)
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    training = tfscalpel.GateTraining(penalties=(0.02,), epochs_per_stage=3, finetune_epochs=0,
                                      tie_coupled=tie)
    pruned.fit(x, y, batch_size=16, epochs=training.total_epochs, verbose=0,
               callbacks=[training])
    stem, block = pruned.get_layer("mask_stem_relu"), pruned.get_layer("mask_b1_bn2")
    if not tie:
        assert not np.array_equal(stem.gates(), block.gates())
        return
    np.testing.assert_array_equal(stem.gates(), block.gates())
    np.testing.assert_array_equal(stem.kept(), block.kept())
    dead = int((~stem.kept()).sum())
    assert 0 < dead < 8
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    nodes = {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers}
    assert nodes["stem"] == nodes["b1_c2"] == (8 - dead, 8)
    np.testing.assert_allclose(stripped.predict(x[:4], verbose=0),
                               pruned.predict(x[:4], verbose=0), atol=1e-4, rtol=1e-4)
