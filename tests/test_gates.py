"""MaskLayer: hysteresis, straight-through gradient, clamp, revival, exact zeros, save/load;
GateTraining: stages, conv-first, freezing, dropout rescaling, errors."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfscalpel
from tfscalpel import MaskLayer


def _layer(gates, **kwargs):
    layer = MaskLayer(**kwargs)
    layer.build((None, len(gates)))
    layer.set_gates(gates)
    return layer


def _x(n=4):
    return tf.constant(np.arange(2 * n, dtype="float32").reshape(2, n) + 1.0)


def test_hysteresis_band_keeps_state_inside_it():
    # threshold 0.5, band +-0.25 (exact in float32): 0.4 keeps a live node alive but does not
    # revive a dead one.
    layer = _layer([0.4, 0.4, 0.2, 0.8], hysteresis=0.25)
    layer.node_mask.assign([1.0, 0.0, 1.0, 0.0])
    layer(_x(), training=True)
    np.testing.assert_array_equal(layer.node_mask.numpy(), [1, 0, 0, 1])
    # on the band edges: a live node dies at threshold - h, a dead one stays dead at + h
    layer.set_gates([0.25, 0.75, 0.75, 0.2500001])
    layer(_x(), training=True)
    np.testing.assert_array_equal(layer.node_mask.numpy(), [0, 0, 0, 1])


def test_dead_node_outputs_exactly_zero_and_inference_uses_stored_mask():
    layer = _layer([1.0, 0.1, 1.0, 0.1])
    y = layer(_x(), training=True).numpy()
    assert np.all(y[:, [1, 3]] == 0) and np.array_equal(y[:, [0, 2]], _x().numpy()[:, [0, 2]])
    layer.set_gates([1.0, 1.0, 1.0, 1.0])  # gates alone do not change inference
    np.testing.assert_array_equal(layer(_x(), training=False).numpy(), y)


def test_straight_through_gradient_reaches_dead_and_live_gates():
    layer = _layer([1.0, 0.1, 1.0, 0.2])
    x = _x()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) * 2.0)
    grad = tape.gradient(loss, layer.gate_param).numpy()
    # d(x * gate)/d gate, dead too, times d gate / d gate_param = gate_scale
    np.testing.assert_allclose(grad, 16.0 * 2.0 * x.numpy().sum(0))


def test_penalty_adds_l1_loss_and_frozen_stops_gradient_and_mask():
    layer = _layer([1.0, 0.2, 0.8, 0.6])
    layer.penalty.assign(0.5)
    layer(_x(), training=True)
    np.testing.assert_allclose(float(layer.losses[0]), 0.5 * 2.6, rtol=1e-6)
    layer.frozen.assign(1.0)
    layer.set_gates([0.0, 1.0, 0.0, 1.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(_x(), training=True))
    assert np.all(tape.gradient(loss, layer.gate_param).numpy() == 0)
    np.testing.assert_array_equal(layer.node_mask.numpy(), [1, 0, 1, 1])


def test_clamp_after_optimizer_step_and_revival_by_training():
    # One gated unit that the loss needs: the output must be 1, so its gate is pushed up from
    # below the band, gets clamped at 1 and the node revives.
    inputs = keras.Input((1,))
    gate = MaskLayer(name="g", clamp=(0.0, 1.0))
    model = keras.Model(inputs, gate(inputs))
    gate.set_gates([0.3])
    gate.node_mask.assign([0.0])
    model.compile(keras.optimizers.SGD(0.2), "mse")
    ones = np.ones((8, 1), "float32")
    model.fit(ones, ones, epochs=10, batch_size=8, verbose=0)
    assert gate.kept().tolist() == [True]
    assert float(gate.gates()[0]) <= 1.0
    # and the L1 penalty alone pushes it to the clamp minimum and kills it
    gate.penalty.assign(100.0)
    model.fit(ones, ones * 0, epochs=10, batch_size=8, verbose=0)
    assert float(gate.gates()[0]) == 0.0 and gate.kept().tolist() == [False]


def test_save_load_keeps_gates_mask_and_flags(tmp_path):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="d")(inputs)
    model = keras.Model(inputs, MaskLayer(name="m", threshold=0.4, hysteresis=0.1,
                                                 gate_scale=8.0)(x))
    m = model.get_layer("m")
    m.set_gates([0.9, 0.1, 0.7, 0.2])
    m.node_mask.assign([1, 0, 1, 0])
    m.penalty.assign(0.3)
    m.frozen.assign(1.0)
    model.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras").get_layer("m")
    for name in ("gate_param", "node_mask", "penalty", "frozen"):
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(m, name).numpy())
    assert (loaded.threshold, loaded.hysteresis, loaded.clamp) == (0.4, 0.1, (0.0, 1.0))
    assert loaded.gate_scale == 8.0
    np.testing.assert_array_equal(loaded.gates(), np.float32([0.9, 0.1, 0.7, 0.2]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(hysteresis=-0.1), "hysteresis must be >= 0"),
    (dict(clamp=(0.5, 1.0)), "clamp .* must contain the band"),
    (dict(clamp=(0.0,)), "clamp must be a \\(min, max\\) pair"),
    (dict(initial_gate=0.52), "initial_gate must be in"),
    (dict(threshold="a"), "threshold must be a finite number"),
    (dict(gate_scale=0.0), "gate_scale must be > 0"),
])
def test_mask_layer_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskLayer(**kwargs)


def _steps(layer, loss_fn, optimizer, n):
    """``n`` optimizer steps on ``loss_fn(output) + penalty``; the node mask after each call."""
    x = tf.ones((2, layer.units))
    masks = []
    for _ in range(n):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = loss_fn(y) + tf.add_n(layer.losses)
        masks.append(layer.kept().copy())
        optimizer.apply([tape.gradient(loss, layer.gate_param)], [layer.gate_param])
    return masks


def _first_dead(masks):
    return next(i for i, m in enumerate(masks) if not m[0])


def test_gate_scale_sets_how_far_one_adam_step_moves_a_gate():
    # Adam's step is about lr whatever the gradient's size, so a gate stored as
    # gate / gate_scale moves gate_scale * lr per step: 16 * 1e-3 from 1.0 down to the edge of
    # the band (0.45) takes ceil(0.55 / 0.016) = 35 steps of pure penalty; with gate_scale=1 it
    # would take 550, and after 35 steps that gate is still at 0.965.
    fast = _layer([1.0], gate_scale=16.0)
    slow = _layer([1.0], gate_scale=1.0)
    for layer in (fast, slow):
        layer.penalty.assign(1e-3)
    no_task = lambda y: 0.0 * tf.reduce_sum(y)  # noqa: E731
    masks = _steps(fast, no_task, keras.optimizers.Adam(1e-3), 40)
    assert _first_dead(masks) == 35
    np.testing.assert_allclose(fast.gates(), [1.0 - 40 * 0.016], atol=1e-4)
    assert all(m[0] for m in _steps(slow, no_task, keras.optimizers.Adam(1e-3), 40))
    np.testing.assert_allclose(slow.gates(), [1.0 - 40 * 1e-3], atol=1e-4)


def test_dead_gate_revives_when_the_loss_wants_the_node_back():
    layer = _layer([1.0])
    layer.penalty.assign(1e-3)
    opt = keras.optimizers.Adam(1e-3)
    masks = _steps(layer, lambda y: 0.0 * tf.reduce_sum(y), opt, 40)
    assert not masks[-1][0] and not layer.kept()[0]
    # Penalty off, a loss that wants the (dead, zero) output up: the straight-through gradient
    # still reaches the gate, it climbs past threshold + hysteresis and the node is back.
    layer.penalty.assign(0.0)
    masks = _steps(layer, lambda y: -tf.reduce_sum(y), opt, 30)
    revived = next(i for i, m in enumerate(masks) if m[0])
    assert 0 < revived < 30 and float(layer.gates()[0]) > 0.55
    assert all(m[0] for m in masks[revived:])  # and it stays alive


# -- GateTraining --------------------------------------------------------------------------
def _gated_convnet():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c")(inputs)
    x = MaskLayer(name="mc")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", name="d")(x)
    x = MaskLayer(name="md")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_stages_conv_first_then_dense_then_frozen():
    cb = tfscalpel.GateTraining(penalties=(1e-3, 1e-2), epochs_per_stage=2, conv_first=True,
                                finetune_epochs=1)
    assert cb.total_epochs == 9
    got = [cb.settings(e) for e in range(10)]
    assert [g["conv"] for g in got] == [(1e-3, False)] * 2 + [(1e-2, False)] * 2 + [(0.0, True)] * 6
    assert [g["dense"] for g in got] == ([(0.0, False)] * 4 + [(1e-3, False)] * 2
                                         + [(1e-2, False)] * 2 + [(0.0, True)] * 2)
    together = tfscalpel.GateTraining(penalties=(1e-3,), finetune_epochs=2)
    assert together.total_epochs == 3
    assert together.settings(0) == {"conv": (1e-3, False), "dense": (1e-3, False)}
    assert together.settings(1) == {"conv": (0.0, True), "dense": (0.0, True)}


def test_penalties_per_kind_of_mask():
    cb = tfscalpel.GateTraining(penalties={"conv": (1e-2, 3e-2), "dense": (1e-4, 1e-3)},
                                finetune_epochs=1)
    assert cb.total_epochs == 3
    assert [cb.settings(e) for e in range(3)] == [
        {"conv": (1e-2, False), "dense": (1e-4, False)},
        {"conv": (3e-2, False), "dense": (1e-3, False)},
        {"conv": (0.0, True), "dense": (0.0, True)}]
    with pytest.raises(ValueError, match="same number of stages"):
        tfscalpel.GateTraining(penalties={"conv": (1e-2,), "dense": (1e-4, 1e-3)})
    with pytest.raises(ValueError, match="needs the keys"):
        tfscalpel.GateTraining(penalties={"conv": (1e-2,)})
    with pytest.raises(ValueError, match=r"penalties\['dense'\] must not decrease"):
        tfscalpel.GateTraining(penalties={"conv": (1e-2, 2e-2), "dense": (1e-3, 1e-4)})


def test_penalties_for_named_masks():
    """A MaskLayer named in ``penalties`` takes its own strengths in its kind's phase."""
    model = _gated_convnet()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = tfscalpel.GateTraining(penalties={"conv": (1e-3, 2e-3), "dense": (1e-4, 2e-4),
                                           "md": (5e-2, 7e-2)}, conv_first=True,
                                finetune_epochs=1)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(tuple(
        float(model.get_layer(n).penalty.numpy()) for n in ("mc", "md"))))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 1)).astype("float32"), rng.integers(0, 2, 16)
    model.fit(x, y, epochs=cb.total_epochs, batch_size=8, verbose=0, callbacks=[cb, probe])
    expected = [(1e-3, 0.0), (2e-3, 0.0), (0.0, 5e-2), (0.0, 7e-2), (0.0, 0.0)]
    assert np.allclose(seen, expected, rtol=1e-6, atol=0)
    assert float(model.get_layer("md").frozen.numpy()) == 1.0
    with pytest.raises(ValueError, match=r"penalties\['md'\] and penalties\['dense'\] need the same"):
        tfscalpel.GateTraining(penalties={"conv": (1e-3,), "dense": (1e-4,), "md": (1e-2, 2e-2)})
    with pytest.raises(ValueError, match=r"penalties name \['nope'\], which are not MaskLayers"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tfscalpel.GateTraining(
            penalties={"conv": (1e-3,), "dense": (1e-4,), "nope": (1e-2,)})])


def test_callback_sets_layers_and_rescales_dropout():
    model = _gated_convnet()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    md = model.get_layer("md")
    md.node_mask.assign([1, 1, 1, 0, 0, 0])
    md.set_gates([1, 1, 1, 0, 0, 0])  # far below the band: they stay dead for two epochs
    cb = tfscalpel.GateTraining(penalties=(0.25,), conv_first=True, finetune_epochs=0,
                                rescale_dropout=True)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append((
        float(model.get_layer("mc").penalty.numpy()), float(md.penalty.numpy()),
        float(model.get_layer("mc").frozen.numpy()), model.get_layer("drop").rate)))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 1)).astype("float32"), rng.integers(0, 2, 16)
    model.fit(x, y, epochs=cb.total_epochs, batch_size=8, verbose=0, callbacks=[cb, probe])
    # conv masks trained first, then frozen while the dense masks train; dropout 0.5 * 3/6
    assert seen == [(0.25, 0.0, 0.0, 0.25), (0.0, 0.25, 1.0, 0.25)]


def test_gate_training_errors():
    with pytest.raises(ValueError, match="penalties must not decrease"):
        tfscalpel.GateTraining(penalties=(1e-2, 1e-3))
    with pytest.raises(ValueError, match="epochs_per_stage must be an integer >= 1"):
        tfscalpel.GateTraining(epochs_per_stage=0)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.compile("adam", "mse")
    with pytest.raises(ValueError, match="no MaskLayer"):
        plain.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0,
                  callbacks=[tfscalpel.GateTraining()])


def test_gate_optimizer_decays_weights_not_gates():
    assert type(tfscalpel.gate_optimizer(1e-3)) is keras.optimizers.Adam
    opt = tfscalpel.gate_optimizer(1e-3, weight_decay=0.5)
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == 0.5
    gate = keras.Variable(np.ones(4, np.float32), name="gate_param")
    kernel = keras.Variable(np.ones(4, np.float32), name="kernel")
    opt.build([gate, kernel])
    opt.apply([np.zeros(4, np.float32)] * 2, [gate, kernel])  # zero gradients: decay alone
    np.testing.assert_array_equal(np.asarray(gate), np.ones(4))
    np.testing.assert_allclose(np.asarray(kernel), np.full(4, 1 - 1e-3 * 0.5), rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0, got -0.1"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number >= 0, got nan"),
    (dict(weight_decay=True), "weight_decay must be a finite number >= 0, got True"),
    (dict(learning_rate=0), "learning_rate must be a number > 0 or a LearningRateSchedule"),
    (dict(learning_rate="fast"), "learning_rate must be a number > 0 or a LearningRateSchedule"),
])
def test_gate_optimizer_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfscalpel.gate_optimizer(**kwargs)
