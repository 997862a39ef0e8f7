"""Data-driven importance (tfscalpel.saliency): estimators against exact values, OBD against
brute force, and the criteria inside the ordinary mask machinery."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfscalpel
from tfscalpel import saliency

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _spearman(a, b):
    ra = np.argsort(np.argsort(a.ravel())).astype(float)
    rb = np.argsort(np.argsort(b.ravel())).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def tiny():
    """A trained 6-8-3 tanh classifier whose inputs have very different scales (0.1 .. 5), so
    that a weight's size says little about how much it matters; plus the brute-force loss
    increase of zeroing each of its 72 weights."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 512
    z = rng.normal(size=(n, 6)).astype(np.float32)
    x = z * np.array([0.1, 0.2, 0.5, 1.0, 2.0, 5.0], np.float32)
    y = np.argmax(np.tanh(z @ rng.normal(size=(6, 3))) + 0.3 * rng.normal(size=(n, 3)), axis=1)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc2")(h))
    model.compile(keras.optimizers.Adam(0.03), LOSS)
    # Full-batch steps in one epoch: trains to (near) a minimum, where OBD's premise holds.
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(400), epochs=1, verbose=0, shuffle=False)
    base = float(LOSS(y, model(x)))
    increase = {}
    for name in ("fc1", "fc2"):
        kernel = model.get_layer(name).kernel
        k = kernel.numpy()
        d = np.zeros_like(k)
        for idx in np.ndindex(k.shape):
            k2 = k.copy()
            k2[idx] = 0.0
            kernel.assign(k2)
            d[idx] = float(LOSS(y, model(x))) - base
        kernel.assign(k)
        increase[name] = d
    return model, x, y, increase


def _pruned(model, importance="obd", pattern="unstructured", sparsity=0.5):
    return tfscalpel.prune(model, sparsity=sparsity, pattern=pattern, importance=importance)


def _flat(per_layer):
    return np.concatenate([per_layer[k].ravel() for k in ("fc1", "fc2")])


@pytest.mark.parametrize("hessian, probes", [("fisher", 1), ("hutchinson", 64)])
def test_obd_ranks_like_brute_force_loss_increase_better_than_magnitude(tiny, hessian, probes):
    model, x, y, increase = tiny
    pruned = _pruned(model)
    saliency.calibrate(pruned, (x, y), LOSS, hessian=hessian, probes=probes, batch_size=512)
    layers = tfscalpel.pruned_layers(pruned)
    obd = {l.name: saliency.weight_saliency(l) for l in layers}
    magnitude = {l.name: np.abs(l.kernel.numpy()) for l in layers}
    rho_obd = _spearman(_flat(obd), _flat(increase))
    rho_mag = _spearman(_flat(magnitude), _flat(increase))
    assert rho_obd > 0.8, rho_obd
    assert rho_obd > rho_mag + 0.2, (rho_obd, rho_mag)
    # Top-k agreement: of the 18 weights whose removal hurts least, OBD finds most.
    k = 18
    truth = set(np.argsort(_flat(increase))[:k])
    found_obd = len(truth & set(np.argsort(_flat(obd))[:k]))
    found_mag = len(truth & set(np.argsort(_flat(magnitude))[:k]))
    assert found_obd > found_mag and found_obd >= 12, (found_obd, found_mag)


def test_taylor_beats_magnitude_on_the_first_layer(tiny):
    model, x, y, increase = tiny
    pruned = _pruned(model, importance="taylor")
    saliency.calibrate(pruned, (x, y), LOSS, hessian=None, batch_size=64)
    fc1 = pruned.get_layer("fc1")
    rho_taylor = _spearman(saliency.weight_saliency(fc1), increase["fc1"])
    rho_mag = _spearman(np.abs(fc1.kernel.numpy()), increase["fc1"])
    assert rho_taylor > rho_mag + 0.3, (rho_taylor, rho_mag)


def _linear_mse(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(64, 5)) * [0.5, 1, 2, 3, 0.2]).astype(np.float32)
    y = rng.normal(size=(64, 3)).astype(np.float32)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
    return _pruned(model), x, y


def test_fisher_is_the_mean_of_per_example_gradient_squares():
    pruned, x, y = _linear_mse()
    stats = saliency.calibrate(pruned, (x, y), "mse", hessian="fisher", batch_size=32,
                               fisher_chunk=8)["fc"]
    layer = pruned.get_layer("fc")
    residual = x @ layer.kernel.numpy() + layer.bias.numpy() - y
    grads = (2.0 / 3.0) * x[:, :, None] * residual[:, None, :]  # d mean_j (r_j^2) / dW_ij
    np.testing.assert_allclose(stats.hessian_diag, np.mean(grads ** 2, axis=0), rtol=1e-4)
    np.testing.assert_allclose(stats.grad_abs, np.abs(grads.reshape(2, 32, 5, 3).mean(1)).mean(0),
                               rtol=1e-4)


def test_hutchinson_converges_to_the_exact_hessian_diagonal():
    pruned, x, y = _linear_mse()
    # For a linear layer under MSE, d2L/dW_ij^2 = 2/(N*units) * sum_n x_ni^2 exactly.
    exact = np.repeat((2.0 / (64 * 3) * np.sum(x ** 2, axis=0))[:, None], 3, axis=1)
    errors = []
    for probes in (4, 256):
        stats = saliency.calibrate(pruned, (x, y), "mse", hessian="hutchinson", probes=probes,
                                   batch_size=64, seed=3)["fc"]
        errors.append(np.max(np.abs(stats.hessian_diag - exact)) / exact.max())
    assert errors[1] < 0.1 and errors[1] < errors[0], errors
    again = saliency.calibrate(pruned, (x, y), "mse", hessian="hutchinson", probes=256,
                               batch_size=64, seed=3)["fc"]
    np.testing.assert_array_equal(again.hessian_diag, stats.hessian_diag)  # seeded


def test_group_scores_are_block_sums_and_masks_follow_them(tiny):
    model, x, y, _ = tiny
    pruned = _pruned(model, pattern="group", sparsity=0.5)  # group_size 4 on fan-ins 6 and 8
    saliency.calibrate(pruned, (x, y), LOSS, hessian="fisher", batch_size=256)
    fc1 = pruned.get_layer("fc1")
    per_weight = saliency.weight_saliency(fc1)
    expected = np.stack([per_weight[:4].sum(0), per_weight[4:].sum(0)])  # ragged tail of 2
    np.testing.assert_allclose(fc1.block_scores(), expected, rtol=1e-5)
    tfscalpel.update_pruning(pruned, step=0)  # the ordinary path: schedule -> block_scores
    mask = fc1.pruning_mask.numpy()
    keep = expected > np.median(expected)
    np.testing.assert_array_equal(mask[:4], np.repeat(keep[:1], 4, axis=0).astype(np.float32))
    # Per unit (node pruning): the masked weights' saliency summed over the fan-in.
    after = saliency.weight_saliency(fc1)
    assert np.all(after[mask == 0] == 0)
    np.testing.assert_allclose(saliency.unit_saliency(fc1), after.sum(0), rtol=1e-6)


def test_pruned_weights_stay_pruned_under_a_rising_schedule(tiny):
    model, x, y, _ = tiny
    schedule = tfscalpel.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=3, frequency=1)
    pruned = tfscalpel.prune(model, schedule=schedule, pattern="unstructured",
                             importance="taylor")
    saliency.calibrate(pruned, (x, y), LOSS, hessian=None, batch_size=128)
    previous = None
    for step in range(4):
        tfscalpel.update_pruning(pruned, step=step)
        mask = pruned.get_layer("fc1").pruning_mask.numpy()
        if previous is not None:
            assert np.all(mask <= previous)  # nothing pruned comes back
        previous = mask
    assert pruned.get_layer("fc1").mask_sparsity() == pytest.approx(0.75, abs=0.03)


def test_errors_are_clear(tiny):
    model, x, y, _ = tiny
    pruned = _pruned(model)
    with pytest.raises(ValueError, match="calibrate"):
        tfscalpel.update_pruning(pruned, step=0)
    with pytest.raises(ValueError, match="hessian="):
        saliency.calibrate(pruned, (x, y), LOSS, hessian="exact")
    with pytest.raises(ValueError, match="no pruned layers"):
        saliency.calibrate(model, (x, y), LOSS)
    with pytest.raises(ValueError, match="no batches"):
        saliency.calibrate(pruned, [], LOSS)
    uncompiled, xl, yl = _linear_mse()
    with pytest.raises(ValueError, match="needs a loss"):
        saliency.calibrate(uncompiled, (xl, yl))  # and no compiled loss to fall back on
    with pytest.raises(ValueError, match="probes"):
        saliency.calibrate(uncompiled, (xl, yl), "mse", probes=0)
    saliency.calibrate(pruned, (x, y), LOSS, hessian=None)
    with pytest.raises(ValueError, match="Hessian diagonal"):
        tfscalpel.update_pruning(pruned, step=0)
    with pytest.raises(ValueError, match="computed from data"):
        tfscalpel.get_importance("obd")(np.ones((2, 1, 3)), np.ones((2, 1)))


def test_criteria_serialise_with_the_model(tiny, tmp_path):
    model, x, y, _ = tiny
    pruned = _pruned(model, importance=saliency.OBD())
    saliency.calibrate(pruned, (x, y), LOSS, hessian="fisher", batch_size=256)
    tfscalpel.update_pruning(pruned, step=0)
    path = str(tmp_path / "m.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("fc1").importance == saliency.OBD()
    np.testing.assert_array_equal(loaded.get_layer("fc1").pruning_mask.numpy(),
                                  pruned.get_layer("fc1").pruning_mask.numpy())
