"""Pruned layers and MaskLayer gates under keras.mixed_precision, and their export."""
import warnings

import keras
import numpy as np
import pytest
from keras.src.models.functional import Functional

import tflite_export
import tfscalpel
from tflite_export import runtime
from tflite_export.converter import as_float32


@pytest.fixture
def mixed_float16():
    """The global mixed_float16 policy for one test, float32 again afterwards (even when the
    test fails)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _every_prunable_model():
    """Conv2D, DepthwiseConv2D, Conv1D and Dense, with MaskLayer gates after a conv and a
    Dense; logits in float32 (Keras's advice for mixed precision)."""
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = tfscalpel.MaskLayer(name="gate_conv")(h)
    h = keras.layers.Reshape((16, 8))(h)
    h = keras.layers.Conv1D(8, 3, name="conv1d")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, name="fc")(h)
    h = tfscalpel.MaskLayer(name="gate_fc")(h)
    outputs = keras.layers.Dense(4, name="logits", dtype="float32")(h)
    return keras.Model(inputs, outputs)


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 3), dtype=np.float32), rng.integers(0, 4, n)


def test_every_pruned_layer_and_gate_trains_under_mixed_float16(mixed_float16):
    pruned = tfscalpel.prune(_every_prunable_model(), sparsity=0.5, pattern="unstructured")
    kinds = {type(layer).__name__ for layer in pruned.layers}
    assert {"GroupPrunedConv2D", "GroupPrunedDepthwiseConv2D", "GroupPrunedConv1D",
            "GroupPrunedDense", "MaskLayer"} <= kinds
    for layer in pruned.layers[1:-1]:
        assert layer.compute_dtype == "float16", layer.name
    gates = tfscalpel.mask_layers(pruned)
    gates[1].penalty.assign(1e-3)  # the L1 penalty enters the float32 loss
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    history = pruned.fit(x, y, epochs=1, batch_size=16, verbose=0,
                         callbacks=[tfscalpel.UpdatePruningStep()])
    assert np.isfinite(history.history["loss"][0])
    for layer in tfscalpel.pruned_layers(pruned):
        # Variables stay float32 (Keras's mixed precision keeps float32 weights).
        assert layer.kernel.dtype == "float32" and layer.pruning_mask.dtype == "float32"
        mask = keras.ops.convert_to_numpy(layer.pruning_mask)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert layer.mask_sparsity() == 0.5, layer.name
        assert np.all(kernel[mask == 0] == 0), layer.name  # pruned weights stayed exactly zero
    for gate in gates:
        assert gate.gate_param.dtype == "float32" and gate.node_mask.dtype == "float32"
    # The gradient reached the gates through the float16 graph (they start at 1.0, the clamp).
    for gate in gates:
        assert np.any(gate.gates() < 0.99), gate.name
    out = pruned(x[:2], training=True)
    assert out.dtype == "float32"
    (penalty,) = gates[1].losses  # the L1 penalty, computed in float32
    assert penalty.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(penalty),
                               1e-3 * np.sum(np.abs(gates[1].gates())), rtol=1e-6)


def test_strip_and_export_of_mixed_precision_model_casts_to_float32(mixed_float16):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32,))
    h = keras.layers.Dense(64, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(10, name="fc2", dtype="float32")(h)
    pruned = tfscalpel.prune(keras.Model(inputs, outputs), sparsity=0.75, group_size=4)
    tfscalpel.update_pruning(pruned)
    stripped = tfscalpel.strip(pruned)
    assert stripped.get_layer("fc1").compute_dtype == "float16"
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)

    with pytest.warns(UserWarning, match="mixed precision policy.*exporting it as float32"):
        result = tflite_export.export(stripped, target="x86-avx2")
    with pytest.warns(UserWarning, match="mixed precision"):
        reference = keras.ops.convert_to_numpy(as_float32(stripped)(x))
    with runtime.load(result.model_bytes) as rt:
        (got,) = rt.run(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
    # The float32 copy is the same function as the half-precision model, up to float16 rounding.
    np.testing.assert_allclose(reference, keras.ops.convert_to_numpy(stripped(x)), atol=2e-2)


def test_as_float32_keeps_float32_models_and_refuses_subclassed(mixed_float16):
    keras.mixed_precision.set_global_policy("float32")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_float32(plain) is plain
    keras.mixed_precision.set_global_policy("mixed_float16")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    sub = Sub()
    sub(np.zeros((1, 4), np.float32))
    assert not isinstance(sub, Functional)
    with pytest.raises(ValueError, match="model 'sub' computes in half precision.*Sequential or "
                                         "Functional.*set_global_policy"):
        as_float32(sub)
