"""Deep Compression chain (tflite_export.compression): int8 keeps the pruned zeros, the sparse
encoding round-trips, Huffman sizes are exact, and the report adds up."""
import keras
import numpy as np
import pytest

import tfscalpel
from tflite_export import compression


def _decode(values, gaps, size):
    flat = np.zeros(size, np.int64)
    flat[np.cumsum(gaps) - 1] = values
    return flat


def test_relative_indices_use_fillers_and_round_trip():
    flat = np.zeros(25, np.int8)
    flat[20], flat[24] = 5, -2
    values, gaps = compression.relative_index_stream(flat, 4)
    assert values.tolist() == [0, 5, -2] and gaps.tolist() == [15, 6, 4]  # one filler
    rng = np.random.default_rng(0)
    for bits in (4, 8):
        flat = rng.integers(-127, 128, 5000) * (rng.random(5000) < 0.03)
        values, gaps = compression.relative_index_stream(flat, bits)
        assert gaps.max() <= (1 << bits) - 1
        np.testing.assert_array_equal(_decode(values, gaps, flat.size), flat)


def test_huffman_bits_are_optimal_code_lengths_within_entropy_bounds():
    symbols = list("aaaabbcd")  # code lengths 1, 2, 3, 3
    assert compression.huffman_bits(symbols) == 4 * 1 + 2 * 2 + 3 + 3
    assert compression.entropy_bits(symbols) == pytest.approx(14.0)  # dyadic: exact
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(0, 6, 10_000)).astype(int)
    h, e = compression.huffman_bits(s), compression.entropy_bits(s)
    assert e <= h < e + s.size
    assert compression.huffman_bits([7, 7, 7]) == 3


def _pruned_convnet():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc2")(x))
    pruned = tfscalpel.prune(model, sparsity=0.8, pattern="unstructured")
    # Make many survivors tiny as well: int8 may round *them* to zero, never the reverse.
    for layer in tfscalpel.pruned_layers(pruned):
        k = layer.kernel.numpy()
        k.flat[::7] *= 1e-4
        layer.kernel.assign(k)
    tfscalpel.update_pruning(pruned, step=0)
    return tfscalpel.strip(pruned)


def test_int8_through_the_exporter_keeps_every_pruned_zero():
    stripped = _pruned_convnet()
    data = np.random.default_rng(0).normal(size=(32, 12, 12, 1)).astype(np.float32)
    tflite_bytes, report = compression.deep_compression(stripped, data)
    layers = compression.quantized_weights(tflite_bytes, stripped)
    assert [l.name for l in layers] == ["conv1", "fc1", "fc2"]
    for layer in layers:
        k = stripped.get_layer(layer.name).kernel.numpy()
        w = k.T if k.ndim == 2 else np.transpose(k, (3, 0, 1, 2)).reshape(k.shape[3], -1)
        assert layer.q.shape == w.shape
        assert np.all(layer.q[w == 0] == 0)
        np.testing.assert_allclose(layer.q * layer.scales[:, None], w,
                                   atol=float(layer.scales.max()))
    assert [r.name for r in report.layers] == ["conv1", "fc1", "fc2"]
    assert report.total("nonzero") <= 0.21 * report.total("weights")
    assert report.total("huffman") < report.total("sparse_int8") < report.total("dense_int8")
    assert report.ratio > 4
    assert "total" in str(report)


def test_a_nonzero_where_the_model_has_a_zero_is_reported():
    stripped = _pruned_convnet()
    data = np.random.default_rng(0).normal(size=(16, 12, 12, 1)).astype(np.float32)
    tflite_bytes, _ = compression.deep_compression(stripped, data)
    # Claim a surviving weight was pruned: the check must catch the mismatch.
    fc1 = stripped.get_layer("fc1")
    k = fc1.kernel.numpy()
    k[np.unravel_index(np.argmax(np.abs(k)), k.shape)] = 0.0
    fc1.kernel.assign(k)
    with pytest.raises(ValueError, match="fc1.*pruned weights are nonzero"):
        compression.quantized_weights(tflite_bytes, stripped)


def test_float_model_is_rejected():
    from tflite_export.converter import convert_keras

    stripped = _pruned_convnet()
    with pytest.raises(ValueError, match="not int8"):
        compression.quantized_weights(convert_keras(stripped), stripped)


def test_report_sizes_for_a_known_layer():
    q = np.zeros((4, 40), np.int8)
    q[0, 0], q[1, 5], q[3, 39] = 10, -3, 10
    layer = compression.QuantizedLayer("fc", "fc", q, np.ones(4, np.float32), bias_count=4)
    row = compression.compression_report([layer]).layers[0]
    values, gaps = compression.relative_index_stream(q.ravel(), 4)
    assert row.nonzero == 3 and row.weights == 160
    assert row.dense_fp32 == 4 * 160 + 16
    assert row.dense_int8 == 160 + 16 + 16
    assert row.sparse_int8 == int(np.ceil(values.size * 12 / 8)) + 32
    # Flat positions 0, 45, 159: gaps 1 | 45 = 15+15+15 (2 fillers) | 114 = 7*15+9 (7 fillers).
    assert values.size == 12 and values.tolist().count(0) == 9
