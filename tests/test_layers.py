"""Pruned layers: forward uses kernel*mask (training on TF: the kernel kept zeroed), pruned
weights stay zero, conv groups follow the flattened kh*kw*cin order, and the layers work in
subclassed models."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfscalpel


def _dense(**kw):
    kw.setdefault("schedule", tfscalpel.ConstantSparsity(0.5, frequency=1))
    return tfscalpel.GroupPrunedDense(6, pattern=tfscalpel.GroupPattern(2), name="d", **kw)


def test_forward_equals_masked_matmul_and_pruned_weights_get_no_gradient():
    layer = _dense()
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    layer(x)
    layer.prune_to(sparsity=0.5)
    mask = layer.pruning_mask.numpy()
    assert mask.mean() == 0.5
    expected = x @ (layer.kernel.numpy() * mask) + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grad = tape.gradient(loss, layer.kernel.value).numpy()
    assert np.all(grad[mask == 0] == 0) and np.any(grad[mask == 1] != 0)


def test_groups_are_whole_along_input_dimension():
    layer = _dense()
    layer(np.zeros((1, 9), "float32"))  # in=9, g=2: ragged tail of 1
    layer.prune_to(sparsity=0.6)
    m = layer.pruning_mask.numpy()
    for start in range(0, 8, 2):
        assert np.all(m[start] == m[start + 1])


def test_pruned_weights_stay_exactly_zero_through_training():
    inputs = keras.Input((10,))
    layer = tfscalpel.GroupPrunedDense(
        5, pattern=tfscalpel.GroupPattern(2), schedule=tfscalpel.ConstantSparsity(0.6, 0, frequency=1000))
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 10)).astype("float32"), rng.normal(size=(64, 5)).astype("float32")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])
    mask = layer.pruning_mask.numpy()
    effective = keras.ops.convert_to_numpy(layer.masked_kernel())
    assert 1 - mask.mean() == pytest.approx(0.6, abs=0.01)
    assert np.all(effective[mask == 0] == 0)


def test_conv_groups_follow_flattened_kh_kw_cin():
    layer = tfscalpel.GroupPrunedConv2D(
        4, 3, pattern=tfscalpel.GroupPattern(4), schedule=tfscalpel.ConstantSparsity(0.5), name="c")
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    layer(x)
    layer.prune_to(sparsity=0.5)
    flat = layer.pruning_mask.numpy().reshape(-1, 4)  # (3*3*3=27, filters): row-major kh,kw,cin
    for start in range(0, 24, 4):
        assert np.all(flat[start:start + 4] == flat[start])
    plain = keras.layers.Conv2D(4, 3)
    plain(x)
    plain.set_weights([keras.ops.convert_to_numpy(layer.masked_kernel()), layer.bias.numpy()])
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = tfscalpel.GroupPrunedDense(3, schedule=tfscalpel.ConstantSparsity(0.5, frequency=1))

    def call(self, x):
        return self.fc(x)


def test_layers_work_inside_subclassed_models():
    model = SubclassedNet()
    x = np.ones((4, 8), "float32")
    model(x)  # a subclassed model builds on its first call; masks need built layers
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((4, 3), "float32"), epochs=1, verbose=0,
              callbacks=[tfscalpel.UpdatePruningStep()])
    assert model.fc.mask_sparsity() == 0.5
    assert int(model.fc.pruning_step.numpy()) == 0


def test_magnitude_importance_rejected_for_groups():
    with pytest.raises(ValueError, match="layer 'd': importance 'magnitude' scores single weights"):
        _dense(importance="magnitude")


def test_schedule_is_required():
    with pytest.raises(ValueError, match="layer 'x': schedule is required"):
        tfscalpel.GroupPrunedDense(3, name="x")


def _conv_dense_model(**dense_kwargs):
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc", **dense_kwargs)(h))


def _fit_pruned(model, old_semantics=False, epochs=2):
    # Pruned at step 2, after Adam has built up momentum for every weight.
    pruned = tfscalpel.prune(model, schedule=tfscalpel.ConstantSparsity(0.5, 2, frequency=1000),
                             group_size=2)
    if old_semantics:  # every forward pass multiplies by the mask, no constraint
        for layer in tfscalpel.pruned_layers(pruned):
            layer._mask_after_step, layer.kernel.constraint = False, None
    pruned.compile(keras.optimizers.Adam(0.05), "mse")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")
    pruned.fit(x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    return pruned, x


def test_mask_after_step_trains_live_weights_exactly_as_masking_every_pass():
    """On TensorFlow the kernel constraint keeps pruned weights at zero, so training passes
    skip kernel * mask; the live weights follow the same trajectory bit for bit (Adam is per
    weight), and the raw kernel, not only the masked one, is zero where pruned."""
    keras.utils.set_random_seed(5)
    new, x = _fit_pruned(_conv_dense_model())
    keras.utils.set_random_seed(5)
    old, _ = _fit_pruned(_conv_dense_model(), old_semantics=True)
    drifted = 0
    for a, b in zip(tfscalpel.pruned_layers(new), tfscalpel.pruned_layers(old)):
        mask = a.pruning_mask.numpy()
        assert a.mask_sparsity() == 0.5
        np.testing.assert_array_equal(mask, b.pruning_mask.numpy())
        np.testing.assert_allclose(a.kernel.numpy(), keras.ops.convert_to_numpy(b.masked_kernel()),
                                   rtol=1e-6, atol=1e-7)
        assert np.all(a.kernel.numpy()[mask == 0] == 0)
        drifted += np.count_nonzero(b.kernel.numpy()[mask == 0])
    assert drifted > 0  # masking in the forward pass alone lets Adam's momentum move them
    np.testing.assert_allclose(new(x, training=True).numpy(), new(x, training=False).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_own_kernel_constraint_still_applies_and_stays_in_the_config():
    keras.utils.set_random_seed(6)
    pruned, _ = _fit_pruned(_conv_dense_model(kernel_constraint=keras.constraints.NonNeg()))
    fc = pruned.get_layer("fc")
    kernel = fc.kernel.numpy()
    assert np.all(kernel >= 0) and np.all(kernel[fc.pruning_mask.numpy() == 0] == 0)
    assert fc.get_config()["kernel_constraint"]["class_name"] == "NonNeg"


def test_stale_kernel_values_are_masked_in_inference_and_zeroed_when_training_starts():
    keras.utils.set_random_seed(7)
    pruned, x = _fit_pruned(_conv_dense_model(), epochs=1)
    fc = pruned.get_layer("fc")
    mask = fc.pruning_mask.numpy()
    expected = pruned(x, training=False).numpy()
    fc.kernel.assign(fc.kernel.numpy() + (1 - mask) * 7.0)  # written from outside
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    pruned.fit(x[:8], np.zeros((8, 3), "float32"), epochs=1, verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    assert np.all(fc.kernel.numpy()[mask == 0] == 0)
