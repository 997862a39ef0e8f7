"""Lottery tickets (tfscalpel.lottery): recording, rewinding, the control, and the IMP loop."""
import keras
import numpy as np
import pytest

import tfscalpel
from tfscalpel import lottery


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int32)
    return x, y


def _model():
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc2")(h))


def _train_fn(x, y, log=None, epochs=2):
    def train(model, callbacks):
        keras.utils.set_random_seed(7)
        model.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        if log is not None:  # the weights each round starts from
            log.append({v.path: v.numpy().copy() for v in model.trainable_weights})
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks)
    return train


def test_record_weights_at_init_and_after_k_steps():
    x, y = _data()
    model = _model()
    initial = {v.path: v.numpy().copy() for v in model.trainable_weights}
    at0, at3 = lottery.RecordWeights(0), lottery.RecordWeights(3)
    seen = []

    class After3(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                seen.append({v.path: v.numpy().copy() for v in self.model.trainable_weights})

    _train_fn(x, y)(model, [at0, at3, After3()])
    for path, value in initial.items():
        np.testing.assert_array_equal(at0.weights[path], value)
        np.testing.assert_array_equal(at3.weights[path], seen[0][path])
        assert not np.array_equal(at3.weights[path], value)  # three updates happened
    with pytest.raises(ValueError, match="at_step"):
        lottery.RecordWeights(-1)


def test_imp_prunes_nested_masks_and_rewinds_survivors_to_init():
    x, y = _data()
    model = _model()
    initial = {v.path: v.numpy().copy() for v in model.trainable_weights}
    starts, masks = [], []

    def evaluate(m):
        masks.append({l.name: l.pruning_mask.numpy().copy() for l in tfscalpel.pruned_layers(m)})
        return float(m.evaluate(x, y, verbose=0)[1])

    result = lottery.iterative_magnitude_pruning(
        model, _train_fn(x, y, starts), rounds=2, rate=0.5, per_layer_rate={"fc2": 0.25},
        evaluate=evaluate)
    assert [r.round for r in result.rounds] == [0, 1, 2]
    fc1, fc2 = (result.model.get_layer(n) for n in ("fc1", "fc2"))
    assert fc1.mask_sparsity() == pytest.approx(0.75, abs=0.01)
    assert fc2.mask_sparsity() == pytest.approx(1 - 0.75 ** 2, abs=0.04)
    assert result.rounds[2].sparsity > result.rounds[1].sparsity > 0.4
    assert all(0.0 <= r.metric <= 1.0 for r in result.rounds)
    # Each round keeps a subset of the previous survivors.
    for name in ("fc1", "fc2"):
        assert np.all(masks[2][name] <= masks[1][name]) and np.all(masks[1][name] <= masks[0][name])
    # Rounds 1 and 2 start from the initial weights on the survivors, exactly zero elsewhere.
    kernel_path = fc1.kernel.path
    for k in (1, 2):
        mask = masks[k]["fc1"]
        np.testing.assert_array_equal(starts[k][kernel_path], initial[kernel_path] * mask)
        np.testing.assert_array_equal(starts[k][fc1.bias.path], initial[fc1.bias.path])
    # rewind_step=0 records the untrained initial weights.
    assert np.all(result.rewind_weights[kernel_path] == initial[kernel_path])


def test_reinitialize_draws_fresh_weights_and_keeps_masks():
    x, y = _data()
    pruned = tfscalpel.prune(_model(), sparsity=0.6, pattern="unstructured")
    tfscalpel.update_pruning(pruned, step=0)
    mask = pruned.get_layer("fc1").pruning_mask.numpy().copy()
    before = pruned.get_layer("fc1").kernel.numpy().copy()
    twin = lottery.copy_pruned(pruned)
    lottery.reinitialize(pruned, seed=1)
    lottery.reinitialize(twin, seed=1)
    after = pruned.get_layer("fc1").kernel.numpy()
    np.testing.assert_array_equal(after, twin.get_layer("fc1").kernel.numpy())  # seeded
    np.testing.assert_array_equal(after[mask == 0], 0.0)
    assert np.mean(after[mask == 1] == before[mask == 1]) < 0.01
    np.testing.assert_array_equal(pruned.get_layer("fc1").pruning_mask.numpy(), mask)
    lottery.reinitialize(twin, seed=2)
    assert not np.array_equal(twin.get_layer("fc1").kernel.numpy(), after)


def test_errors_are_clear():
    pruned = tfscalpel.prune(_model(), sparsity=0.5)
    with pytest.raises(ValueError, match="recorded no weights"):
        lottery.rewind(pruned, None)
    with pytest.raises(ValueError, match="different model"):
        lottery.rewind(pruned, {"nope": np.zeros(3)})
    with pytest.raises(ValueError, match="rate"):
        lottery.lottery_sparsities(1.0, 3)
    with pytest.raises(ValueError, match="rounds"):
        lottery.lottery_sparsities(0.2, 0)
    x, y = _data(64)
    with pytest.raises(ValueError, match="rewind_step"):
        lottery.iterative_magnitude_pruning(_model(), _train_fn(x, y, epochs=1), rounds=1,
                                            rate=0.5, rewind_step=10_000)
