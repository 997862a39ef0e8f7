"""Attention heads as prunable nodes: GatedMultiHeadAttention (one MaskLayer gate per head),
GateTraining over its gate, node plans that gate heads, and strip removing dead heads
(stock MultiHeadAttention with fewer heads, outputs equal to the gated model's)."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill
from tfscalpel import GatedMultiHeadAttention

L = keras.layers


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _attention_model(heads=4, key_dim=8, value_dim=None, use_gate=False, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 16))
    a = GatedMultiHeadAttention(heads, key_dim, value_dim=value_dim, use_gate=use_gate,
                                name="mha")(inputs, inputs)
    return keras.Model(inputs, L.LayerNormalization(name="ln")(L.Add()([inputs, a])))


def _heads(report):
    return {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers if "/" in r.name}


@pytest.mark.parametrize("value_dim,use_gate", [(None, False), (6, True)])
def test_strip_removes_dead_heads_and_keeps_outputs(value_dim, use_gate):
    model = _attention_model(value_dim=value_dim, use_gate=use_gate)
    gated = model.get_layer("mha")
    assert [m.name for m in tfscalpel.mask_layers(model)] == ["mask_mha"]
    kill(model, {"mask_mha": [1, 3]})
    np.testing.assert_array_equal(gated.kept_heads(), [0, 2])
    x = _x((3, 6, 16))
    stripped, report = tfscalpel.strip(model, return_report=True)
    mha = stripped.get_layer("mha")
    assert type(mha) is L.MultiHeadAttention and mha.num_heads == 2
    assert not tfscalpel.mask_layers(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    # the kept heads' weights, sliced along the heads axis, unchanged
    np.testing.assert_array_equal(mha.query_dense.kernel.numpy(),
                                  gated.query_dense.kernel.numpy()[:, [0, 2]])
    np.testing.assert_array_equal(mha.value_dense.bias.numpy(),
                                  gated.value_dense.bias.numpy()[[0, 2]])
    np.testing.assert_array_equal(mha.output_dense.kernel.numpy(),
                                  gated.output_dense.kernel.numpy()[[0, 2]])
    np.testing.assert_array_equal(mha.output_dense.bias.numpy(),
                                  gated.output_dense.bias.numpy())
    v = value_dim or 8
    assert tuple(mha.output_dense.kernel.shape) == (2, v, 16)
    names = ["mha/query", "mha/key"] + ["mha/gate"] * use_gate + ["mha/value",
                                                                  "mha/attention_output"]
    assert _heads(report) == dict.fromkeys(names, (2, 4))
    rows = {r.name: (r.rows, r.cols) for r in report.layers}
    assert rows["mha/query"] == (16, 16) and rows["mha/attention_output"] == (16, 2 * v)
    assert "\nmha/attention_output dense " in str(report)


def test_every_head_dead_keeps_one_zero_head():
    model = _attention_model()
    kill(model, {"mask_mha": [0, 1, 2, 3]})
    x = _x((2, 6, 16))
    stripped, report = tfscalpel.strip(model, return_report=True)
    mha = stripped.get_layer("mha")
    assert mha.num_heads == 1 and not np.any(mha.output_dense.kernel.numpy())
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert _heads(report)["mha/query"] == (1, 4)


def test_live_heads_change_nothing_and_dead_heads_output_zero():
    keras.utils.set_random_seed(1)
    stock = L.MultiHeadAttention(3, 4, name="mha")
    x = _x((2, 5, 8))
    reference = stock(x, x).numpy()
    gated = GatedMultiHeadAttention(3, 4, name="mha")
    gated(x, x)
    tfscalpel.attention_layers.copy_projections(gated, stock)
    np.testing.assert_array_equal(gated(x, x).numpy(), reference)
    gated.head_gate.node_mask.assign([0.0, 0.0, 0.0])
    # every head zero: the output projection's bias alone
    np.testing.assert_allclose(gated(x, x).numpy(),
                               np.broadcast_to(gated.output_dense.bias.numpy(), (2, 5, 8)))


def test_gated_and_stripped_models_save_and_load(tmp_path):
    model = _attention_model(value_dim=6)
    kill(model, {"mask_mha": [2]})
    x = _x((2, 6, 16))
    model.save(tmp_path / "gated.keras")
    loaded = keras.models.load_model(tmp_path / "gated.keras")
    assert type(loaded.get_layer("mha")) is GatedMultiHeadAttention
    np.testing.assert_array_equal(loaded.get_layer("mha").kept_heads(), [0, 1, 3])
    np.testing.assert_array_equal(loaded.get_layer("mha").head_gate.gates(),
                                  model.get_layer("mha").head_gate.gates())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    stripped = tfscalpel.strip(loaded)
    stripped.save(tmp_path / "stripped.keras")
    again = keras.models.load_model(tmp_path / "stripped.keras")
    assert type(again.get_layer("mha")) is L.MultiHeadAttention
    assert again.get_layer("mha").num_heads == 3
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_gate_training_drives_head_gates_like_any_mask():
    model = _attention_model(heads=2)
    gate = model.get_layer("mha").head_gate
    assert gate.input_rank == 1  # a "dense" mask for GateTraining
    x = _x((8, 6, 16))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    # the head gate takes its own strengths by name, as any MaskLayer
    training = tfscalpel.GateTraining(
        penalties={"conv": (0.0,), "dense": (0.0,), "mask_mha": (0.5,)}, finetune_epochs=1)
    model.fit(x, x, batch_size=8, epochs=1, callbacks=[training], verbose=0)
    # one Adam step of gate_scale 16 x lr 1e-3 from 1.0, pushed down by the L1 penalty
    np.testing.assert_allclose(gate.gates(), [0.984, 0.984], atol=1e-4)
    assert float(gate.penalty.numpy()) == 0.5 and float(gate.frozen.numpy()) == 0.0
    # fine-tuning: frozen, no penalty; the mask stays fixed even for a gate below the band
    gate.set_gates([0.984, 0.1])
    model.fit(x, x, batch_size=8, epochs=2, initial_epoch=1, callbacks=[training], verbose=0)
    assert float(gate.frozen.numpy()) == 1.0 and float(gate.penalty.numpy()) == 0.0
    np.testing.assert_array_equal(gate.kept(), [True, True])


def test_dead_gate_rule_and_hysteresis_apply_to_heads():
    model = _attention_model()
    gate = model.get_layer("mha").head_gate
    x = _x((4, 6, 16))
    model.compile(keras.optimizers.SGD(0.0), "mse")  # gates stay where they are set
    gate.set_gates([0.9, 0.44, 0.5, 0.46])  # threshold 0.5, band +-0.05
    gate.node_mask.assign([1.0, 1.0, 1.0, 0.0])
    model.fit(x, x, batch_size=4, epochs=1, verbose=0)
    # 0.44 <= 0.45 dies; 0.5 stays alive inside the band; 0.46 does not revive a dead head
    np.testing.assert_array_equal(gate.kept(), [True, False, True, False])
    stripped, report = tfscalpel.strip(model, return_report=True)
    assert stripped.get_layer("mha").num_heads == 2 and _heads(report)["mha/value"] == (2, 4)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def _encoder_block(seq=8, d=16, heads=4):
    """A Transformer encoder block: MHA + residual + LayerNorm + FFN (+ residual + LayerNorm)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((seq, d))
    a = L.MultiHeadAttention(heads, d // heads, name="mha")(inputs, inputs)
    x = L.LayerNormalization(name="ln1")(L.Add()([inputs, a]))
    f = L.Dense(2 * d, activation="relu", name="ffa")(x)
    f = L.Dense(d, name="ffb")(f)
    x = L.LayerNormalization(name="ln2")(L.Add()([x, f]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x))


def test_gpu_plan_gates_heads_of_a_transformer_block_and_strip_removes_them(tmp_path):
    model = _encoder_block()
    # ffb feeds the residual Add into LayerNormalization: kept dense here (node removal of
    # the residual stream is not this test's subject).
    per_layer = {"ffb": {"method": "none"}}
    plan = tfscalpel.plan(model, "gpu-ampere", per_layer=per_layer)
    row = plan["mha"]
    assert (row.layer_type, row.method, row.mask_after, row.heads_gated) == (
        "attention", "node", "mha", True)
    assert "a gate per attention head (4 heads)" in row.reason
    assert "mha         attention" in str(plan) and "node" in str(plan).splitlines()[3]
    assert plan["ffa"].method == "node+2:4"
    pruned = tfscalpel.prune(model, target="gpu-ampere", per_layer=per_layer)
    assert type(pruned.get_layer("mha")) is GatedMultiHeadAttention
    assert [m.name for m in tfscalpel.mask_layers(pruned)] == ["mask_mha", "mask_ffa"]
    x = _x((4, 8, 16), seed=5)
    tfscalpel.update_pruning(pruned)  # the 2:4 masks of ffa and head
    kill(pruned, {"mask_mha": [0, 3], "mask_ffa": [0, 1, 2, 3, 7]})
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert stripped.get_layer("mha").num_heads == 2
    nodes = {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers}
    assert nodes == {"mha/query": (2, 4), "mha/key": (2, 4), "mha/value": (2, 4),
                     "mha/attention_output": (2, 4), "ffa": (27, 32), "ffb": (16, 16),
                     "head": (3, 3)}
    assert tfscalpel.check_nm(stripped).ok
    # save/load of the gated and the stripped model
    pruned.save(tmp_path / "gated.keras")
    loaded = keras.models.load_model(tmp_path / "gated.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    stripped.save(tmp_path / "stripped.keras")
    again = keras.models.load_model(tmp_path / "stripped.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_cpu_plans_weight_prune_heads_unless_asked_and_subclasses_are_left_out():
    model = _encoder_block()
    cpu = tfscalpel.plan(model, "x86-avx2")
    assert (cpu["mha"].method, cpu["mha"].group_size) == ("group", 8)
    asked = tfscalpel.plan(model, "x86-avx2", per_layer={"mha": {"method": "node"}})
    assert asked["mha"].method == "node" and asked["mha"].heads_gated
    assert asked["mha"].reason.startswith("per_layer override; node: a gate per attention head")
    pruned = tfscalpel.prune(model, target="x86-avx2", sparsity=0.5,
                             per_layer={"mha": {"method": "node"}})
    assert type(pruned.get_layer("mha")) is GatedMultiHeadAttention
    assert type(pruned.get_layer("ffa")).__name__ == "GroupPrunedDense"

    class MyAttention(L.MultiHeadAttention):
        pass

    inputs = keras.Input((6, 16))
    x = MyAttention(2, 8, name="mine")(inputs, inputs)
    sub = keras.Model(inputs, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)))
    # a subclass may change call(): no pruned twin and no head gates, so plans leave it out
    assert [p.name for p in tfscalpel.plan(sub, "gpu-ampere").layers] == ["out"]
    with pytest.raises(ValueError, match=r"per_layer configures layers .*\['mine'\]"):
        tfscalpel.plan(sub, "gpu-ampere", per_layer={"mine": {"method": "node"}})


@keras.saving.register_keras_serializable(package="tfscalpel_tests")
class TinyEncoder(keras.Model):
    """A subclassed model with a head-gated attention built by hand."""

    def __init__(self, heads=4, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.mha = GatedMultiHeadAttention(heads, 4, name="mha")
        self.norm = L.LayerNormalization()
        self.head = L.Dense(3)

    def call(self, x):
        return self.head(self.norm(x + self.mha(x, x)))

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


def test_subclassed_model_with_gated_heads_strips_to_a_stock_attention():
    keras.utils.set_random_seed(4)
    model = TinyEncoder()
    x = _x((2, 5, 16))
    model(x)
    kill(model, {"mask_mha": [1]})
    stripped, report = tfscalpel.strip(model, return_report=True)
    assert type(stripped.mha) is L.MultiHeadAttention and stripped.mha.num_heads == 3
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert _heads(report)["mha/attention_output"] == (3, 4)


def test_weight_pruning_a_gated_attention_keeps_its_gates(tmp_path):
    model = _attention_model()
    kill(model, {"mask_mha": [1]})
    pruned = tfscalpel.prune(model, sparsity=0.5, group_size=4)
    mha = pruned.get_layer("mha")
    assert type(mha) is tfscalpel.attention_layers.GatedGroupPrunedMultiHeadAttention
    np.testing.assert_array_equal(mha.kept_heads(), [0, 2, 3])
    tfscalpel.update_pruning(pruned)
    x = _x((2, 6, 16))
    pruned.save(tmp_path / "both.keras")
    loaded = keras.models.load_model(tmp_path / "both.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    stripped, report = tfscalpel.strip(loaded, return_report=True)
    assert type(stripped.get_layer("mha")) is L.MultiHeadAttention
    assert stripped.get_layer("mha").num_heads == 3
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    rows = {r.name: r for r in report.layers if "/" in r.name}
    assert {n: (r.pattern, r.nodes_kept, r.nodes_total) for n, r in rows.items()} == dict.fromkeys(
        ["mha/query", "mha/key", "mha/value", "mha/attention_output"], ("group(g=4)", 3, 4))
    # the query's masked kernel (16, 4 heads, 8) minus head 1: groups of 4 along the width 16
    query = mha.query_dense._numpy_masked_kernel()[:, [0, 2, 3]].reshape(4, 4, 24)
    assert (rows["mha/query"].nonzero_groups, rows["mha/query"].total_groups) == (
        int(np.any(query != 0, axis=1).sum()), 96)
    assert int(np.any(query != 0, axis=1).sum()) < 96


def test_attention_over_two_axes_and_cross_attention_strip_exactly():
    keras.utils.set_random_seed(6)
    image, memory = keras.Input((3, 4, 8)), keras.Input((5, 12))
    a = GatedMultiHeadAttention(3, 4, attention_axes=(1, 2), name="axes")(image, image)
    c = GatedMultiHeadAttention(3, 4, name="cross")(L.Reshape((12, 8))(a), memory)
    model = keras.Model([image, memory], c)
    kill(model, {"mask_axes": [0], "mask_cross": [1, 2]})
    x = [_x((2, 3, 4, 8)), _x((2, 5, 12), seed=1)]
    stripped = tfscalpel.strip(model)
    assert [stripped.get_layer(n).num_heads for n in ("axes", "cross")] == [2, 1]
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
