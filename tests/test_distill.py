"""Distiller: the loss is Hinton's formula exactly, it trains pruned and gated students with
tfscalpel's callbacks, and it pulls a student towards its teacher."""
import keras
import numpy as np
import pytest

import tfscalpel


def _mlp(seed, hidden=16):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dense(3)])


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 3, n)


def _compiled(distiller, lr=0.05):
    distiller.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return distiller


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_training_loss_is_hard_loss_plus_weighted_softened_kl():
    student, teacher = _mlp(1), _mlp(2)
    d = _compiled(tfscalpel.Distiller(student, teacher, temperature=3.0, weight=0.7))
    x, y = _data(5)
    s, t = np.asarray(student(x)), np.asarray(teacher(x))
    got = float(d.compute_loss(x, y, student(x), training=True))
    hard = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, s))
    log_t, log_s = _log_softmax(t / 3.0), _log_softmax(s / 3.0)
    kl = (np.exp(log_t) * (log_t - log_s)).sum(axis=-1).mean()
    np.testing.assert_allclose(got, hard + 0.7 * 9.0 * kl, rtol=1e-5)
    # Evaluation reports the hard loss only (comparable with an undistilled run).
    np.testing.assert_allclose(float(d.compute_loss(x, y, student(x), training=False)), hard,
                               rtol=1e-6)


def test_probability_outputs_use_their_log_as_logits():
    student = keras.Sequential([_mlp(1), keras.layers.Softmax()])
    teacher = keras.Sequential([_mlp(2), keras.layers.Softmax()])
    d = tfscalpel.Distiller(student, teacher, temperature=2.0, from_logits=False)
    x, _ = _data(4)
    by_probs = float(d.distillation_loss(teacher(x), student(x)))
    by_logits = float(tfscalpel.Distiller(student.layers[0], teacher.layers[0], temperature=2.0)
                      .distillation_loss(teacher.layers[0](x), student.layers[0](x)))
    np.testing.assert_allclose(by_probs, by_logits, rtol=1e-4)


def test_distillation_pulls_the_pruned_student_towards_the_teacher():
    x, y = _data(256)
    teacher = _mlp(2, hidden=32)
    teacher_p = keras.ops.convert_to_numpy(keras.ops.softmax(teacher(x)))

    def train(weight):
        pruned = tfscalpel.prune(_mlp(1), sparsity=0.5, pattern="group", group_size=4)
        d = _compiled(tfscalpel.Distiller(pruned, teacher, temperature=2.0, weight=weight))
        keras.utils.set_random_seed(5)
        d.fit(x, y, batch_size=32, epochs=8, verbose=0, shuffle=False,
              callbacks=[tfscalpel.UpdatePruningStep()])
        assert [layer.mask_sparsity() for layer in tfscalpel.layers.pruned_layers(d)] == [0.5, 0.5]
        p = keras.ops.convert_to_numpy(keras.ops.softmax(d.student(x)))
        return float(np.abs(p - teacher_p).sum(axis=-1).mean())

    assert train(weight=5.0) < 0.7 * train(weight=0.0)  # 0.19 vs 0.29 (seeded)


def test_gated_student_trains_under_gate_training():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    h = tfscalpel.MaskLayer(name="m")(h)
    student = keras.Model(inputs, keras.layers.Dense(3)(h))
    d = _compiled(tfscalpel.Distiller(student, _mlp(2), weight=1.0))
    x, y = _data(64)
    gates = tfscalpel.GateTraining(penalties=(1e-2,), finetune_epochs=1)
    history = d.fit(x, y, batch_size=16, epochs=gates.total_epochs, verbose=0, callbacks=[gates])
    mask = tfscalpel.mask_layers(d)[0]
    assert mask is student.get_layer("m") and bool(keras.ops.convert_to_numpy(mask.frozen))
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0), "temperature must be a number > 0"),
    (dict(temperature=float("nan")), "temperature must be a number > 0"),
    (dict(weight=-1), "weight must be a number >= 0"),
    (dict(teacher="dense"), "teacher must be a Keras model"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    args = dict(student=_mlp(1), teacher=_mlp(2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        tfscalpel.Distiller(**args)


def test_teacher_with_other_classes_is_refused():
    d = tfscalpel.Distiller(_mlp(1), keras.Sequential([keras.Input((8,)), keras.layers.Dense(5)]))
    x, y = _data(4)
    with pytest.raises(ValueError, match=r"teacher's outputs \(4, 5\) and the student's \(4, 3\)"):
        d.distillation_loss(d.teacher(x), d.student(x))


def _gated(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    h = tfscalpel.MaskLayer(name="m")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def _nan_teacher():
    teacher = _mlp(2)
    teacher.layers[-1].kernel.assign(np.full((16, 3), np.nan, np.float32))
    return teacher


def _gate_run(teacher, epochs):
    """The gated student trained ``epochs`` epochs of 2 penalty + 2 fine-tuning epochs, plain
    (teacher None) or through ``Distiller(during="finetune")``; seeded alike."""
    student = _gated(1)
    model = student if teacher is None else tfscalpel.Distiller(
        student, teacher, temperature=2.0, weight=1.0, during="finetune")
    _compiled(model)
    gates = tfscalpel.GateTraining(penalties=(0.05,), epochs_per_stage=2, finetune_epochs=2)
    x, y = _data(64)
    keras.utils.set_random_seed(0)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[gates])
    return student


def test_finetune_only_distillation_trains_the_stages_as_an_undistilled_run():
    """While a gate trains the loss is the hard loss alone and the teacher is not run (a NaN
    teacher leaves no trace): the penalty stages end with the undistilled run's very weights,
    so the same nodes die; the frozen fine-tuning then learns from the teacher."""
    plain = _gate_run(None, 2)
    late = _gate_run(_nan_teacher(), 2)
    for a, b in zip(plain.get_weights(), late.get_weights()):
        np.testing.assert_array_equal(a, b)
    kept = plain.get_layer("m").kept()
    assert 0 < kept.sum() < 16  # the penalty killed some nodes, not all
    assert np.isnan(_gate_run(_nan_teacher(), 4).get_layer("out").kernel.numpy()).all()
    plain, late = _gate_run(None, 4), _gate_run(_mlp(2), 4)
    np.testing.assert_array_equal(plain.get_layer("m").kept(), late.get_layer("m").kept())
    np.testing.assert_array_equal(plain.get_layer("m").kept(), kept)  # frozen in fine-tuning
    assert not np.allclose(plain.get_layer("out").kernel.numpy(),
                           late.get_layer("out").kernel.numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(during="stages"), r"during must be one of \['all', 'finetune'\], got 'stages'"),
    (dict(during="finetune"), "during='finetune' .* the student has no MaskLayer"),
])
def test_bad_during_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfscalpel.Distiller(_mlp(1), _mlp(2), **kwargs)
