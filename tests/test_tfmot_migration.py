"""What tfmot users rely on in the callbacks and schedules: `update_freq='batch'`, their own
`PruningSchedule` subclasses, `steps_per_execution`, and a word when a schedule never finished."""
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import tfscalpel


def _pruned_model(schedule):
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8), keras.layers.Dense(4)])
    pruned = tfscalpel.prune(model, schedule=schedule, pattern="unstructured")
    pruned.compile(optimizer="sgd", loss="mse")
    return pruned


def _data(n):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 16)).astype(np.float32), rng.standard_normal((n, 4)).astype(np.float32)


def _fit(steps_per_execution, epochs=1):
    """32 optimizer steps of batch 1, in ``epochs`` epochs, under a schedule that updates at
    every step."""
    keras.utils.set_random_seed(7)
    model = _pruned_model(tfscalpel.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=31,
                                                    frequency=1))
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=steps_per_execution)
    x, y = _data(32 // epochs)
    model.fit(x, y, batch_size=1, epochs=epochs, verbose=0,
              callbacks=[tfscalpel.UpdatePruningStep()])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 32
    layers = tfscalpel.layers.pruned_layers(model)
    return ([int(keras.ops.convert_to_numpy(l.pruning_step.value)) for l in layers],
            [round(l.mask_sparsity(), 4) for l in layers])


def test_steps_per_execution_advances_one_pruning_step_per_optimizer_step():
    steps_1, sparsity_1 = _fit(1)
    steps_4, sparsity_4 = _fit(4)
    assert steps_1 == steps_4 == [31, 31]
    # Masks can only change between executions: the last update (step 31) lands at the start
    # of the last execution (steps 28-31) instead of at step 31 itself.
    assert sparsity_1 == sparsity_4 == [0.75, 0.75]


def test_steps_per_execution_counts_steps_across_epochs():
    # Keras numbers the batches of every epoch from 0; the callback counts steps from those
    # indices (it has no batch-end hook), so epoch 2 must continue at step 16, not restart.
    assert _fit(4, epochs=2) == _fit(1, epochs=2) == ([31, 31], [0.75, 0.75])
    assert _fit(8, epochs=4)[0] == [31, 31]


def test_schedule_that_pruned_nothing_is_a_warning_naming_the_layers():
    # frequency 100: the only update in 8 steps is step 0, at the initial sparsity 0.
    model = _pruned_model(tfscalpel.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000,
                                                    frequency=100))
    x, y = _data(8)
    with pytest.warns(UserWarning, match=r"layers \['dense', 'dense_1'\] are still dense "
                                         r"after training stopped at pruning step 7, but their "
                                         r"schedule ends at sparsity 0\.8\. Train"):
        model.fit(x, y, batch_size=1, epochs=1, verbose=0,
                  callbacks=[tfscalpel.UpdatePruningStep()])


def test_schedule_that_never_began_is_a_warning():
    model = _pruned_model(tfscalpel.ConstantSparsity(0.5, begin_step=100))
    x, y = _data(4)
    with pytest.warns(UserWarning, match="still dense .* ends at sparsity 0.5 and begins at step 100"):
        model.fit(x, y, batch_size=1, epochs=1, verbose=0,
                  callbacks=[tfscalpel.UpdatePruningStep()])


def test_schedule_still_ramping_is_not_warned():
    model = _pruned_model(tfscalpel.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000,
                                                    frequency=1))
    x, y = _data(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, batch_size=1, epochs=1, verbose=0,
                  callbacks=[tfscalpel.UpdatePruningStep()])


def test_pruning_summaries_accepts_batch_and_rejects_nonsense(tmp_path):
    assert tfscalpel.PruningSummaries(str(tmp_path), update_freq="batch").update_freq == 1
    for bad in ("step", 0, True, 1.5):
        with pytest.raises(ValueError, match="update_freq must be 'epoch', 'batch' or an integer"):
            tfscalpel.PruningSummaries(str(tmp_path), update_freq=bad)


def test_user_subclass_of_tfmot_schedule_is_called_through_its_contract():
    """tfmot flips tf.keras for the whole process, so this runs in a subprocess; the same
    process checks that fit with tfmot's UpdatePruningStep instead of ours fails at the first
    step (tfmot's callback does not drive tfscalpel's layers)."""
    script = textwrap.dedent("""
        import tensorflow as tf
        import tfscalpel
        import tensorflow_model_optimization as tfmot

        class EveryTenth(tfmot.sparsity.keras.PruningSchedule):
            def __call__(self, step):
                return (tf.equal(step % 10, 0), tf.constant(0.3 if step < 50 else 0.6))
            def get_config(self):
                return {"class_name": "EveryTenth", "config": {}}

        ours = tfscalpel.get_schedule(EveryTenth())
        assert ours(10)[0] is True and ours(15)[0] is False, (ours(10), ours(15))
        assert abs(ours(10)[1] - 0.3) < 1e-6, ours(10)
        assert abs(ours(60)[1] - 0.6) < 1e-6 and abs(ours.final_amount - 0.6) < 1e-6

        import keras, numpy as np
        pruned = tfscalpel.prune_low_magnitude(
            keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a")]))
        pruned.compile(optimizer="sgd", loss="mse")
        try:
            pruned.fit(np.ones((4, 16), np.float32), np.ones((4, 8), np.float32), verbose=0,
                       callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
            raise AssertionError("fit with tfmot's callback trained without a word")
        except RuntimeError as e:
            assert "layer 'a' is pruned but trains with its pruning step at -1" in str(e), e
            assert "tfmot's UpdatePruningStep does not drive tfscalpel's layers" in str(e), e
        print("ok")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


# ---- prune_low_magnitude: tfmot's entry point, arguments and defaults ------------------------

def _dense_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a"),
                             keras.layers.Dense(4, name="b")])


def _masks_after_one_step(model):
    model.compile(optimizer="sgd", loss="mse")
    x, y = _data(1)
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])
    return [keras.ops.convert_to_numpy(l.pruning_mask) for l in tfscalpel.layers.pruned_layers(model)]


def test_prune_low_magnitude_defaults_to_tfmot_constant_half():
    masks = _masks_after_one_step(tfscalpel.prune_low_magnitude(_dense_model()))
    assert [float(1 - m.mean()) for m in masks] == [0.5, 0.5]


def test_block_size_is_groups_along_the_input_and_pooling_picks_the_score():
    model = _dense_model()
    pruned = tfscalpel.prune_low_magnitude(model, block_size=(4, 1), block_pooling_type="MAX")
    layer = pruned.get_layer("a")
    assert isinstance(layer.pattern, tfscalpel.GroupPattern) and layer.pattern.group_size == 4
    assert type(layer.importance).__name__ == "MaxAbs"
    mask = _masks_after_one_step(pruned)[0]
    # Whole groups of 4 consecutive inputs of one output unit are kept or removed together.
    groups = mask.reshape(4, 4, 8)
    assert np.all((groups.min(axis=1) == groups.max(axis=1)))


def test_m_by_n_counts_zeros_as_tfmot_does():
    pruned = tfscalpel.prune_low_magnitude(_dense_model(), sparsity_m_by_n=(1, 4))
    layer = pruned.get_layer("a")
    assert (layer.pattern.n, layer.pattern.m) == (3, 4)  # 1 zero in 4 = 3 kept of 4


def test_one_built_layer_keeps_its_weights_and_other_layers_are_refused():
    dense = keras.layers.Dense(3, name="d")
    dense.build((None, 5))
    twin = tfscalpel.prune_low_magnitude(dense)
    assert isinstance(twin, tfscalpel.GroupPrunedDense)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin.kernel),
                                  keras.ops.convert_to_numpy(dense.kernel))
    model = keras.Sequential([keras.Input((5,)), tfscalpel.prune_low_magnitude(
        keras.layers.Dense(3)), keras.layers.Dense(2)])
    assert len(tfscalpel.layers.pruned_layers(model)) == 1
    with pytest.raises(ValueError, match="layer 'pr' is a PReLU, which has no pruned twin"):
        tfscalpel.prune_low_magnitude(keras.layers.PReLU(name="pr"))
    emb = keras.layers.Embedding(10, 4, name="emb")
    emb.build()
    twin = tfscalpel.prune_low_magnitude(emb)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin.embeddings),
                                  keras.ops.convert_to_numpy(emb.embeddings))


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_size=(1, 4)), r"block_size=\(1, 4\) is not supported"),
    (dict(block_pooling_type="MIN"), "block_pooling_type must be one of"),
    (dict(sparsity_m_by_n=(4, 4)), "needs 0 < m < n"),
    (dict(sparsity_m_by_n=(2, 4), block_size=(2, 1)), "cannot be combined"),
    (dict(pruning_policy=object()), "a hardware target chooses"),
])
def test_bad_tfmot_arguments_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfscalpel.prune_low_magnitude(_dense_model(), **kwargs)


def test_prune_scope_and_strip_pruning_keep_tfmot_code_running(tmp_path):
    pruned = tfscalpel.prune_low_magnitude(_dense_model())
    _masks_after_one_step(pruned)
    path = str(tmp_path / "m.keras")
    pruned.save(path)
    with tfscalpel.prune_scope():
        loaded = keras.models.load_model(path)
    plain = tfscalpel.strip_pruning(loaded)
    assert not tfscalpel.layers.pruned_layers(plain)
    kernel = keras.ops.convert_to_numpy(plain.get_layer("a").kernel)
    assert float((kernel == 0).mean()) == 0.5


def test_numpy_numbers_are_numbers():
    s = tfscalpel.PolynomialDecay(np.float32(0.25), np.float64(0.75), np.int64(0), np.int32(10),
                                  frequency=np.int64(2))
    assert s == tfscalpel.PolynomialDecay(0.25, 0.75, 0, 10, frequency=2)
    assert type(s.get_config()["begin_step"]) is int
    assert tfscalpel.ConstantSparsity(np.float32(0.5)).target_sparsity == 0.5
    assert tfscalpel.StagedThreshold([np.float32(0.5)], np.int64(3)).stage_steps == 3
    assert tfscalpel.IterativePruning([np.float64(0.5)], np.int64(3)).sparsities == [0.5]


@pytest.mark.parametrize("layer, shape", [
    (keras.layers.Conv2D(4, 3, name="c2"), (None, 8, 8, 3)),
    (keras.layers.Conv1D(4, 3, name="c1"), (None, 8, 3)),
    (keras.layers.DepthwiseConv2D(3, name="dw"), (None, 8, 8, 3)),
])
def test_one_built_conv_layer_keeps_its_weights(layer, shape):
    layer.build(shape)
    twin = tfscalpel.prune_low_magnitude(layer)
    assert type(twin).__name__.startswith("GroupPruned")
    for a, b in zip(layer.weights, twin.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_update_pruning_step_on_a_gates_only_model_warns_and_does_nothing():
    """The README's node-pruning recipe passes UpdatePruningStep for every target; a plan that
    is gates only (no weight-pruned layer) trains with a warning, not an error."""
    inputs = keras.Input((16,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    h = tfscalpel.MaskLayer(name="m")(h)
    model = keras.Model(inputs, keras.layers.Dense(4)(h))
    model.compile(optimizer="sgd", loss="mse")
    x, y = _data(4)
    with pytest.warns(UserWarning, match="no weight-pruned layers, only MaskLayer gates"):
        model.fit(x, y, batch_size=2, epochs=1, verbose=0,
                  callbacks=[tfscalpel.UpdatePruningStep()])
    with pytest.raises(ValueError, match="the model has no pruned layers"):
        plain = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4)])
        plain.compile(optimizer="sgd", loss="mse")
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])


def test_prune_takes_tfmot_keywords_with_their_meaning():
    schedule = tfscalpel.ConstantSparsity(0.5, begin_step=0)
    pruned = tfscalpel.prune(_dense_model(), pruning_schedule=schedule, block_size=(4, 1),
                             block_pooling_type="MAX")
    layer = pruned.get_layer("a")
    assert layer.schedule == schedule and layer.pattern.group_size == 4
    assert type(layer.importance).__name__ == "MaxAbs"
    nm = tfscalpel.prune(_dense_model(), sparsity=0.5, sparsity_m_by_n=(2, 4)).get_layer("a")
    assert (nm.pattern.n, nm.pattern.m) == (2, 4)
    with pytest.raises(ValueError, match="schedule= or tfmot's name pruning_schedule=, not both"):
        tfscalpel.prune(_dense_model(), schedule, pruning_schedule=schedule)
    with pytest.raises(ValueError, match="block_size= .* or tfscalpel's pattern="):
        tfscalpel.prune(_dense_model(), sparsity=0.5, block_size=(4, 1), group_size=8)
    with pytest.raises(ValueError, match=r"prune\(\): block_size=\(1, 4\) is not supported"):
        tfscalpel.prune(_dense_model(), sparsity=0.5, block_size=(1, 4))


def test_sparsity_errors_name_sparsity():
    with pytest.raises(ValueError, match=r"^prune\(\): sparsity must be a number in \[0, 1\)"):
        tfscalpel.prune(_dense_model(), sparsity=1.5)


@pytest.mark.parametrize("step", [-5, 1.5, True, "3"])
def test_update_pruning_refuses_a_step_that_is_not_a_count(step):
    model = tfscalpel.prune(_dense_model(), sparsity=0.5)
    with pytest.raises(ValueError, match="update_pruning: step must be an integer >= 0"):
        tfscalpel.update_pruning(model, step=step)
    assert tfscalpel.update_pruning(model, step=np.int64(3)) == 3
