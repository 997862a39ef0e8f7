"""Target plans over the new layer types, node+2:4 with whole windows, and subclassed models
(plan, prune, prune(target=...), strip)."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill
from tfscalpel import models
from tfscalpel.dependency import coupled_gates

L = keras.layers


def _methods(plan):
    return {p.name: (p.layer_type, p.method, p.group_size) for p in plan.layers}


def test_plans_list_depthwise_and_weights_only_layers():
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    assert _methods(tfscalpel.plan(model, "cortex-m4")) == {
        "c1": ("conv", "group", 4), "dw": ("depthwise", "group", 4), "out": ("dense", "group", 4)}
    cpu = tfscalpel.plan(model, "x86-avx2")
    assert cpu["dw"].method == "none" and cpu["dw"].reason.endswith(
        "channel-wise: its channels go with the gates of the layer before it")
    assert (cpu["dw"].fan_in, cpu["dw"].units) == (9, 8)  # one 3x3 window per channel

    inputs = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 16, name="emb")(inputs)
    x = L.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = L.EinsumDense("abc,cd->abd", (6, 12), name="ff")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)))
    cpu = tfscalpel.plan(model, "x86-avx2")
    assert _methods(cpu) == {"emb": ("embedding", "group", 8), "mha": ("attention", "group", 8),
                             "ff": ("dense", "group", 8), "out": ("dense", "group", 8)}
    assert (cpu["mha"].fan_in, cpu["mha"].units) == (16, 16)
    gpu = tfscalpel.plan(model, "gpu-ampere")  # heads are nodes (tests/test_head_pruning.py)
    assert (gpu["mha"].method, gpu["mha"].mask_after) == ("node", "mha")
    assert "a gate per attention head (2 heads)" in gpu["mha"].reason
    pruned = tfscalpel.prune(model, target="x86-avx2", sparsity=0.5)
    assert [type(pruned.get_layer(n)).__name__ for n in ("emb", "mha", "ff")] == [
        "GroupPrunedEmbedding", "GroupPrunedMultiHeadAttention", "GroupPrunedEinsumDense"]
    with pytest.raises(ValueError, match="layer 'emb': method 'node' needs a weighted layer"):
        tfscalpel.plan(model, "x86-avx2", per_layer={"emb": {"method": "node"}})


def test_node_plus_2_4_removes_whole_windows_and_stays_2_4():
    pruned = tfscalpel.prune(models.lenet_300_100(), target="gpu-ampere")
    tfscalpel.update_pruning(pruned)
    # fc1: window 0..3 dead as a whole; 5, 6, 7 and 9 dead in windows with live nodes; fc2 alike
    kill(pruned, {"mask_fc1": [0, 1, 2, 3, 5, 6, 7, 9, 299], "mask_fc2": [0, 1, 2, 3, 4, 50]})
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    assert {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers} == {
        "fc1": (296, 300), "fc2": (96, 100), "fc3": (10, 10)}
    assert tfscalpel.check_nm(stripped).ok
    x = np.random.default_rng(0).normal(size=(4, 784)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_gates_feeding_a_2_4_layer_are_tied_in_windows():
    pruned = tfscalpel.prune(models.lenet_300_100(), target="gpu-ampere")
    groups = sorted(sorted(g) for g in coupled_gates(pruned))
    assert groups == sorted([[("mask_fc1", k) for k in range(w, w + 4)] for w in range(0, 300, 4)]
                            + [[("mask_fc2", k) for k in range(w, w + 4)]
                               for w in range(0, 100, 4)])


# -- subclassed models ----------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tfscalpel_tests")
class SmallNet(keras.Model):
    """A subclassed model: layers in attributes, in a list, and one built pruned by hand."""

    def __init__(self, width=16, hand_pruned=False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.hand_pruned = width, hand_pruned
        self.conv = L.Conv2D(8, 3, activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.blocks = [L.Dense(width, activation="relu"), L.Dense(width)]
        self.head = (tfscalpel.GroupPrunedDense(3, schedule=tfscalpel.ConstantSparsity(0.5))
                     if hand_pruned else L.Dense(3))

    def call(self, x):
        x = self.pool(self.conv(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "hand_pruned": self.hand_pruned}


def _fit(model, x, steps=2):
    rng = np.random.default_rng(5)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, rng.normal(size=(len(x), 3)).astype("float32"), batch_size=len(x) // steps,
              epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])


def test_subclassed_model_is_pruned_stripped_saved_and_loaded(tmp_path):
    x = np.random.default_rng(6).normal(size=(8, 6, 6, 3)).astype("float32")
    model = SmallNet()
    model(x)
    pruned = tfscalpel.prune(model, sparsity=0.5, group_size=4)
    assert type(model.blocks[0]) is L.Dense  # the original is untouched
    assert [type(layer).__name__ for layer in (pruned.conv, *pruned.blocks, pruned.head)] == [
        "GroupPrunedConv2D", "GroupPrunedDense", "GroupPrunedDense", "GroupPrunedDense"]
    np.testing.assert_array_equal(pruned.blocks[1].kernel.numpy(), model.blocks[1].kernel.numpy())
    _fit(pruned, x)
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    assert [type(layer) for layer in (stripped.conv, *stripped.blocks, stripped.head)] == [
        L.Conv2D, L.Dense, L.Dense, L.Dense]
    assert [r.name for r in report.layers] == [model.conv.name, model.blocks[0].name,
                                               model.blocks[1].name, model.head.name]
    expected = pruned.predict(x, verbose=0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    stripped.save(tmp_path / "s.keras")
    loaded = keras.models.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_subclassed_model_built_from_pruned_layers_strips():
    x = np.random.default_rng(7).normal(size=(4, 6, 6, 3)).astype("float32")
    model = SmallNet(hand_pruned=True)
    model(x)
    tfscalpel.update_pruning(model)
    stripped = tfscalpel.strip(model)
    assert type(stripped.head) is L.Dense
    np.testing.assert_array_equal(stripped.head.kernel.numpy(),
                                  model.head.masked_kernel().numpy())
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_subclassed_target_plan_keeps_weight_patterns_only():
    x = np.zeros((2, 6, 6, 3), "float32")
    model = SmallNet()
    model(x)
    plan = tfscalpel.plan(model, "x86-avx2")
    assert [p.method for p in plan.layers] == ["none", "group", "group", "group"]
    assert "subclassed model: node pruning needs the layer graph" in plan.layers[0].reason
    pruned = tfscalpel.prune(model, target="x86-avx2", sparsity=0.5)
    assert type(pruned.conv) is L.Conv2D and not tfscalpel.mask_layers(pruned)
    assert pruned.blocks[0].pattern == tfscalpel.GroupPattern(8)


def test_subclassed_model_without_config_or_unbuilt_is_refused_by_name():
    class NoConfig(keras.Model):
        def __init__(self, units):
            super().__init__()
            self.dense = L.Dense(units)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match=r"prune\(\): the subclassed model '\w+' is not built"):
        tfscalpel.prune(NoConfig(3), sparsity=0.5)
    model = NoConfig(3)
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match=r"(?s)prune\(\): the subclassed model .* cannot be copied "
                                         r"from its config .*get_config\(\)"):
        tfscalpel.prune(model, sparsity=0.5)


def _encoder_block():
    inputs = keras.Input((8, 16))
    x = L.Dense(16, name="proj")(inputs)
    a = L.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = L.LayerNormalization(name="ln1")(L.Add()([x, a]))
    f = L.Dense(32, activation="relu", name="ffa")(x)
    f = L.Dense(16, name="ffb")(f)
    x = L.LayerNormalization(name="ln2")(L.Add()([x, f]))
    return keras.Model(inputs, L.Dense(10, name="head")(L.GlobalAveragePooling1D()(x)))


def test_plan_proposes_node_pruning_only_where_strip_can_remove_channels():
    model = _encoder_block()
    plan = tfscalpel.plan(model, "gpu-ampere")
    methods = {p.name: (p.method, p.mask_after) for p in plan.layers}
    assert methods == {"proj": ("2:4", ""), "mha": ("node", "mha"), "ffa": ("node+2:4", "ffa"),
                       "ffb": ("2:4", ""), "head": ("2:4", "")}
    assert plan["proj"].reason.endswith(
        "no node pruning: its channels reach 'mha' (a MultiHeadAttention layer, which the "
        "channel analysis does not know)")
    # ln2 is followed now (LayerNormalization couples channels), but ffb's stream goes on
    # through the Add and ln1 to the attention's inputs, which block it
    assert "no node pruning: its channels reach 'mha'" in plan["ffb"].reason
    # what plan() proposes, prune() accepts; the caller's layers are not called again
    pruned = tfscalpel.prune(model, target="gpu-ampere")
    assert [layer.name for layer in pruned.layers if isinstance(layer, tfscalpel.MaskLayer)] == [
        "mask_ffa"]
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers[1:])
    # an explicit per_layer method stays as asked, and prune names the layer that blocks it
    forced = tfscalpel.plan(model, "gpu-ampere", per_layer={"proj": {"method": "node"}})
    assert forced["proj"].method == "node"
    with pytest.raises(ValueError, match="layer 'mha' is a GatedMultiHeadAttention layer"):
        tfscalpel.prune(model, target="gpu-ampere", per_layer={"proj": {"method": "node"}})


def test_plan_leaves_out_gates_whose_channels_are_read_ungated():
    inputs = keras.Input((16,))
    x = L.Dense(16, name="d1")(inputs)
    y = L.Add()([inputs, L.Dense(16, name="d2")(x)])  # a residual from the (ungated) input
    model = keras.Model(inputs, L.Dense(4, name="out")(L.Dense(8, name="d3")(y)))
    plan = tfscalpel.plan(model, "gpu-ampere")
    assert {p.name: p.method for p in plan.layers} == {
        "d1": "node+2:4", "d2": "2:4", "d3": "node+2:4", "out": "2:4"}
    assert plan["d2"].reason.endswith("no node pruning: none of its channels can be removed: "
                                      "each is also read where no gate zeroes it (a model input "
                                      "or output, or a path such as a residual stream that "
                                      "other layers feed)")
