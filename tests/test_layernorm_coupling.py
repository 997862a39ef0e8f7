"""LayerNormalization in the channel graph: a residual stream written by gated Dense layers
(coupled by Add) and normalised by a LayerNormalization loses channels in the writers, the layer
norm and its readers; the stripped layer norm still normalises over the original width."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill
from layer_testlib import strip_and_reload
from tfscalpel import MaskLayer
from tfscalpel.dependency import channel_plan, coupled_gates
from tfscalpel.layers import PrunedLayerNormalization

L = keras.layers
_NODES = {n: {"method": "node"} for n in ("embed", "ff1", "ff2", "head1")}
_NODES["out"] = {"method": "none"}


def _stream_model(tokens=None):
    """Input(16) -> Dense(32) -> [Dense(64, relu) -> Dense(32)] + residual -> LayerNorm ->
    Dense(32, relu) -> Dense(10); ``tokens``: a rank-3 ``(tokens, 16)`` input instead."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,) if tokens is None else (tokens, 16))
    h = L.Dense(32, name="embed")(inputs)
    f = L.Dense(32, name="ff2")(L.Dense(64, activation="relu", name="ff1")(h))
    x = L.LayerNormalization(epsilon=1e-3, name="ln")(L.Add(name="add")([h, f]))
    x = L.Dense(32, activation="relu", name="head1")(x)
    return keras.Model(inputs, L.Dense(10, name="out")(x))


def _randomise_ln(model, rng):
    ln = model.get_layer("ln")
    ln.set_weights([rng.uniform(0.5, 2, 32), rng.normal(size=32)])  # beta != 0: no zeros


def test_gate_after_layernorm_is_coupled_with_the_stream_writers():
    pruned = tfscalpel.prune(_stream_model(), target="gpu-ampere", per_layer=_NODES)
    gates = [layer.name for layer in pruned.layers if isinstance(layer, MaskLayer)]
    assert gates == ["mask_embed", "mask_ff1", "mask_ff2", "mask_ln", "mask_head1"]
    groups = sorted(sorted(g) for g in coupled_gates(pruned))
    assert groups == [[("mask_embed", k), ("mask_ff2", k), ("mask_ln", k)] for k in range(32)]


def test_default_plan_keeps_node_pruning_on_the_stream_writers():
    # Before LayerNormalization was followed, the stream's writers were left out of node
    # pruning (their channels reached an opaque layer).
    p = tfscalpel.plan(_stream_model(), "gpu-ampere")
    assert {d.name: d.node_pruned for d in p.layers} == {
        "embed": True, "ff1": True, "ff2": True, "head1": True, "out": False}


@pytest.mark.parametrize("tokens", [None, 5])
def test_dead_stream_channels_go_from_writers_layernorm_and_readers(tmp_path, tokens):
    from tflite_export import runtime
    from tflite_export.converter import convert_keras

    rng = np.random.default_rng(0)
    pruned = tfscalpel.prune(_stream_model(tokens), target="gpu-ampere", per_layer=_NODES)
    _randomise_ln(pruned, rng)
    stream = [1, 4, 9]  # the tied gates of the stream, all three dead together
    kill(pruned, {"mask_embed": stream, "mask_ff2": stream, "mask_ln": stream,
                  "mask_ff1": [0, 5], "mask_head1": [2]})
    x = rng.normal(size=(3, 16) if tokens is None else (3, tokens, 16)).astype("float32")
    stripped, layers = strip_and_reload(pruned, x, tmp_path, tol=1e-5)
    nodes = {name: (r.nodes_kept, r.nodes_total) for name, r in layers.items()}
    assert nodes == {"embed": (29, 32), "ff1": (62, 64), "ff2": (29, 32), "head1": (31, 32),
                     "out": (10, 10)}
    ln = stripped.get_layer("ln")
    assert isinstance(ln, PrunedLayerNormalization) and ln.n_full == 32
    keep = [c for c in range(32) if c not in stream]
    np.testing.assert_array_equal(ln.gamma.numpy(), pruned.get_layer("ln").gamma.numpy()[keep])
    np.testing.assert_array_equal(ln.beta.numpy(), pruned.get_layer("ln").beta.numpy()[keep])
    assert stripped.get_layer("ff1").kernel.shape == (29, 62)
    assert stripped.get_layer("head1").kernel.shape == (29, 31)
    assert not [layer for layer in stripped.layers if isinstance(layer, MaskLayer)]

    expected = stripped.predict(x, verbose=0)
    with runtime.load_stock(convert_keras(stripped)) as rt:
        got = np.concatenate([rt.run(x[i:i + 1])[0] for i in range(len(x))])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_without_the_gate_after_layernorm_nothing_in_the_stream_goes():
    # A stream channel dead at the writers but read after the layer norm (its output there is
    # beta - gamma * mean / std, not zero) must stay everywhere.
    model = tfscalpel.prune(_stream_model(), target="gpu-ampere", per_layer=_NODES)
    dead = {name: np.zeros(model.get_layer(name).units, bool)
            for name in ("mask_embed", "mask_ff1", "mask_ff2", "mask_ln", "mask_head1")}
    dead["mask_embed"][1] = dead["mask_ff2"][1] = True
    plan = channel_plan(model, dead=dead)
    assert len(plan.keep_out["embed"]) == len(plan.keep_out["ln"]) == 32
    dead["mask_ln"][1] = True
    plan = channel_plan(model, dead=dead)
    assert 1 not in plan.keep_out["embed"] and 1 not in plan.keep_out["ln"]
    assert 1 not in plan.keep_in["head1"] and 1 not in plan.keep_in["ff1"]


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_pruned_layernorm_equals_layernorm_with_zero_channels(center, scale):
    rng = np.random.default_rng(3)
    full = L.LayerNormalization(epsilon=1e-3, center=center, scale=scale)
    full.build((None, 4, 12))
    full.set_weights([rng.normal(size=12) for _ in full.weights])
    keep = np.array([0, 2, 3, 7, 8, 11])
    pruned = PrunedLayerNormalization(n_full=12, epsilon=1e-3, center=center, scale=scale)
    pruned.build((None, 4, 6))
    pruned.set_weights([w[keep] for w in full.get_weights()])
    x = np.zeros((2, 4, 12), "float32")
    x[..., keep] = rng.normal(size=(2, 4, 6)) * 3 + 1
    np.testing.assert_allclose(pruned(x[..., keep]).numpy(), full(x).numpy()[..., keep],
                               rtol=1e-5, atol=1e-5)
    again = PrunedLayerNormalization.from_config(pruned.get_config())
    assert again.n_full == 12 and again.epsilon == pruned.epsilon


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
def test_pruned_layernorm_refuses_what_it_does_not_support():
    with pytest.raises(ValueError, match=r"'pln': rms_scaling is not supported"):
        PrunedLayerNormalization(n_full=4, rms_scaling=True, name="pln")
    with pytest.raises(ValueError, match=r"'pln': axis must be the last axis, got 1"):
        PrunedLayerNormalization(n_full=4, axis=1, name="pln").build((None, 3, 4))


def test_gate_training_ties_the_layernorm_gate_with_the_writers():
    rng = np.random.default_rng(1)
    pruned = tfscalpel.prune(_stream_model(), target="gpu-ampere", per_layer=_NODES,
                             mask_options={"gate_scale": 64.0})
    x = rng.normal(size=(64, 16)).astype("float32")
    y = rng.integers(0, 10, size=64)
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    training = tfscalpel.GateTraining(penalties=(0.02,), epochs_per_stage=3, finetune_epochs=0)
    pruned.fit(x, y, batch_size=16, epochs=training.total_epochs, verbose=0,
               callbacks=[training])
    embed, ff2, ln = (pruned.get_layer(f"mask_{n}") for n in ("embed", "ff2", "ln"))
    np.testing.assert_array_equal(embed.gates(), ln.gates())
    np.testing.assert_array_equal(ff2.gates(), ln.gates())
    dead = int((~ln.kept()).sum())
    assert 0 < dead < 32
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    nodes = {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers}
    assert nodes["embed"] == nodes["ff2"] == (32 - dead, 32)
    assert stripped.get_layer("ln").gamma.shape == (32 - dead,)
    np.testing.assert_allclose(stripped.predict(x[:4], verbose=0),
                               pruned.predict(x[:4], verbose=0), atol=1e-5, rtol=1e-5)
