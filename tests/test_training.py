"""Pruning inside training: strip equivalence and report, .keras round trip, resuming with
BackupAndRestore, custom training loops, TensorBoard summaries, MirroredStrategy."""
import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfscalpel

SCHEDULE = tfscalpel.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=24, power=3, frequency=4)


def _dense_model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((12,))
    x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc2")(x))


def _data():
    rng = np.random.default_rng(5)
    return rng.normal(size=(64, 12)).astype("float32"), rng.integers(0, 3, 64)


def _pruned(**kwargs):
    model = tfscalpel.prune(_dense_model(), schedule=SCHEDULE, group_size=2, **kwargs)
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _masks(model):
    return [l.pruning_mask.numpy() for l in tfscalpel.pruned_layers(model)]


def _fit(model, epochs, callbacks=()):
    x, y = _data()
    model.fit(x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0,
              callbacks=[tfscalpel.UpdatePruningStep(), *callbacks])


def test_strip_gives_plain_model_same_outputs_and_exact_report():
    model = _pruned()
    _fit(model, 3)
    stripped, report = tfscalpel.strip(model, return_report=True)
    assert [type(l) for l in stripped.layers[1:]] == [keras.layers.Dense, keras.layers.Dense]
    x, _ = _data()
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    fc1 = report.layers[0]
    kernel = stripped.layers[1].kernel.numpy()
    nnz = int(np.count_nonzero(kernel))
    groups = int(np.any(kernel.reshape(6, 2, 16) != 0, axis=1).sum())
    assert (fc1.rows, fc1.cols, fc1.nonzero, fc1.nonzero_groups, fc1.total_groups) == (16, 12, nnz, groups, 96)
    assert fc1.density == pytest.approx(0.2, abs=0.01)
    assert fc1.bytes_dense == 4 * 192
    assert fc1.bytes_csr == 4 * (2 * nnz + 17)
    assert fc1.bytes_group_csr == 4 * 2 * groups + 1 * groups + 4 * 17  # uint8 group indices
    assert report.group_sizes() == {"fc1": 2, "fc2": 2}
    assert "group(g=2)" in str(report)


def test_keras_file_round_trip_keeps_masks_step_and_schedule(tmp_path):
    model = _pruned()
    _fit(model, 2)
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(_masks(model), _masks(loaded)):
        np.testing.assert_array_equal(a, b)
    layer = tfscalpel.pruned_layers(loaded)[0]
    assert int(layer.pruning_step.numpy()) == 15
    assert layer.schedule == SCHEDULE and layer.pattern == tfscalpel.GroupPattern(2)
    assert layer.importance == tfscalpel.RMS()


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("simulated crash")


def test_resume_with_backup_and_restore_gives_same_masks(tmp_path):
    reference = _pruned()
    _fit(reference, 4)

    resumed = _pruned()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(resumed, 4, callbacks=[backup, _Interrupt()])
    fresh = _pruned()  # a new process would start from a fresh model
    _fit(fresh, 4, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    for a, b in zip(_masks(reference), _masks(fresh)):
        np.testing.assert_array_equal(a, b)
    assert tfscalpel.pruned_layers(fresh)[0].mask_sparsity() == pytest.approx(0.8, abs=0.02)


def test_custom_training_loop_matches_fit():
    by_fit = _pruned()
    _fit(by_fit, 2)

    manual = _pruned()
    optimizer = keras.optimizers.Adam(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = _data()
    for _ in range(2):
        for start in range(0, 64, 8):
            tfscalpel.update_pruning(manual)
            with tf.GradientTape() as tape:
                loss = loss_fn(y[start:start + 8], manual(x[start:start + 8], training=True))
            grads = tape.gradient(loss, manual.trainable_variables)
            optimizer.apply_gradients(zip(grads, manual.trainable_variables))
    for a, b in zip(_masks(by_fit), _masks(manual)):
        np.testing.assert_array_equal(a, b)


def test_pruning_summaries_write_sparsity_and_threshold(tmp_path):
    model = _pruned()
    _fit(model, 2, callbacks=[tfscalpel.PruningSummaries(str(tmp_path))])
    tags = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags[value.tag] = float(tf.make_ndarray(value.tensor))
    assert {"fc1/sparsity", "fc1/threshold", "fc2/sparsity", "fc2/threshold"} <= set(tags)
    assert tags["fc1/sparsity"] == pytest.approx(tfscalpel.pruned_layers(model)[0].mask_sparsity())
    assert tags["fc1/threshold"] > 0


def test_update_pruning_needs_pruned_layers():
    with pytest.raises(ValueError, match="no pruned layers"):
        tfscalpel.update_pruning(_dense_model())


def test_mirrored_strategy_masks_identical_on_every_replica():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = _pruned()
    _fit(model, 3)
    for layer in tfscalpel.pruned_layers(model):
        replicas = [v.numpy() for v in strategy.experimental_local_results(layer.pruning_mask.value)]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
        assert layer.mask_sparsity() == pytest.approx(0.8, abs=0.02)
        kernels = [v.numpy() for v in strategy.experimental_local_results(layer.kernel.value)]
        np.testing.assert_array_equal(kernels[0] * replicas[0], kernels[1] * replicas[1])


def test_recompiling_with_a_new_optimizer_continues_the_schedule():
    model = _pruned()
    _fit(model, 1)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, 1)  # the new optimizer counts from 0; pruning must go on from step 8
    assert int(tfscalpel.pruned_layers(model)[0].pruning_step.numpy()) == 15
    assert tfscalpel.pruned_layers(model)[0].mask_sparsity() == pytest.approx(
        SCHEDULE.sparsity_at(12), abs=0.02)
