"""keras_names matches FULLY_CONNECTED ops to Keras layers by weights within the FC's precision:
MultiHeadAttention projections (EinsumDense) are candidates under their own names, a kernel of the
same shape as another layer's never steals its name, and an ambiguous match is an error."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from tflite_export.fc_layers import FCLayer
from tflite_export.keras_names import assign_names

L = keras.layers


def _fc(weights, index, scale=None):
    weights = np.asarray(weights)
    return FCLayer(subgraph=0, op_index=index, name=f"tensor_{index}", input=0, weight=index,
                   bias=-1, output=0, in_features=weights.shape[1],
                   out_features=weights.shape[0], dtype=str(weights.dtype), activation=0,
                   weights=weights)


def _tflite(scales):
    """A stand-in for the flatbuffer: only the weight tensors' quantization is read."""
    tensors = [SimpleNamespace(quantization=None if s is None else SimpleNamespace(scale=s))
               for s in scales]
    return SimpleNamespace(subgraphs=[SimpleNamespace(tensors=tensors)])


def _transformer_block():
    inputs = keras.Input((6, 16))
    x = L.Add()([inputs, L.MultiHeadAttention(2, 8, name="mha")(inputs, inputs)])
    x = L.LayerNormalization()(x)
    x = L.Dense(16, activation="relu", name="head1")(x)  # kernel (16, 16): as mha/query's FC
    return keras.Model(inputs, L.Dense(4, name="head2")(x))


def test_projection_with_the_same_shape_as_a_dense_gets_its_own_name():
    keras.utils.set_random_seed(0)
    model = _transformer_block()
    mha, head1 = model.get_layer("mha"), model.get_layer("head1")
    query = mha._query_dense.kernel.numpy().reshape(16, 16).T  # (d, heads, dim) -> [out, in]
    output = mha._output_dense.kernel.numpy().reshape(16, 16).T  # (heads, dim, d)
    stranger = np.random.default_rng(0).normal(size=(16, 16)).astype("float32")
    fcs = [_fc(query, 0), _fc(output, 1), _fc(head1.kernel.numpy().T, 2), _fc(stranger, 3)]
    assign_names(model, _tflite([None] * 4), fcs)
    assert [fc.name for fc in fcs] == ["mha/query", "mha/attention_output", "head1", "tensor_3"]


def test_int8_weights_match_within_half_a_step_and_no_further():
    keras.utils.set_random_seed(1)
    model = _transformer_block()
    w = model.get_layer("head1").kernel.numpy().T
    scale = np.abs(w).max(axis=1, keepdims=True) / 127
    q = np.round(w / scale).astype(np.int8)
    fc = _fc(q, 0)
    assign_names(model, _tflite([scale.ravel()]), [fc])
    assert fc.name == "head1"
    off = q.copy()
    off[3, 5] = np.int8(np.clip(int(off[3, 5]) + 2, -127, 127))  # one weight two steps off
    fc = _fc(off, 0)
    assign_names(model, _tflite([scale.ravel()]), [fc])
    assert fc.name == "tensor_0"  # no match within the precision: no name, not a near one


def test_two_layers_with_the_same_weights_are_an_error_naming_both():
    inputs = keras.Input((8,))
    x = L.Dense(8, kernel_initializer="identity", name="a")(inputs)
    model = keras.Model(inputs, L.Dense(8, kernel_initializer="identity", name="b")(x))
    with pytest.raises(ValueError, match=r"op 0 .*several Keras layers: \['a', 'b'\]"):
        assign_names(model, _tflite([None]), [_fc(np.eye(8, dtype="float32"), 0)])
