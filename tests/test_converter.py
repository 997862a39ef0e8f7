"""convert_keras on the models users have: subclassed (no `.inputs`), integer token inputs,
callable representative datasets, and converter failures explained (LSTM / GRU)."""
import keras
import numpy as np
import pytest

from tflite_export import runtime
from tflite_export.converter import ConversionError, convert_keras, explain_converter_error


class TokenClassifier(keras.Model):
    """Subclassed: Embedding over int32 token ids, mean over the sequence, Dense."""

    def __init__(self):
        super().__init__()
        self.embed = keras.layers.Embedding(50, 8)
        self.head = keras.layers.Dense(3)

    def call(self, ids):
        return self.head(keras.ops.mean(self.embed(ids), axis=1))


def _tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, 50, size=(n, 6))  # int64, as numpy makes them


def _subclassed():
    keras.utils.set_random_seed(0)
    model = TokenClassifier()
    model(np.zeros((1, 6), np.int32))
    return model


def _run(model_bytes, x):
    with runtime.load_stock(model_bytes) as rt:
        return rt.run(x)[0]


def test_int8_export_of_a_subclassed_model_with_int32_token_inputs():
    model = _subclassed()
    assert not hasattr(model, "inputs")
    data = convert_keras(model, "int8", _tokens(32))  # int64 arrays: cast to int32, not float
    x = _tokens(4, seed=1).astype(np.int32)
    got = _run(data, x)
    want = np.asarray(model(x))
    assert got.shape == (4, 3)
    assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want)) + 1e-3


def test_functional_int32_input_keeps_its_dtype_and_float_ids_are_refused():
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32")
    out = keras.layers.Dense(3)(keras.ops.mean(keras.layers.Embedding(50, 8)(ids), axis=1))
    model = keras.Model(ids, out)
    data = convert_keras(model, "int8", _tokens(16))
    x = _tokens(2, seed=2).astype(np.int32)
    assert _run(data, x).shape == (2, 3)
    with pytest.raises(TypeError, match="input 0: the model takes int32 .*got float64"):
        convert_keras(model, "int8", _tokens(4).astype(np.float64))


def test_callable_representative_datasets():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(20, 1, 5))  # float64, one array per step (no list around it)
    from_single = convert_keras(model, "int8", lambda: iter(samples))
    from_lists = convert_keras(model, "int8", lambda: ([s.astype(np.float32)] for s in samples))
    from_array = convert_keras(model, "int8", samples[:, 0])
    assert from_single == from_lists == from_array  # same calibration, same model
    with pytest.raises(TypeError, match="must return an iterable of steps"):
        convert_keras(model, "int8", lambda: 3)


def test_subclassed_model_array_count_is_not_guessed_from_missing_inputs():
    model = _subclassed()
    with pytest.raises(ValueError, match="same, nonzero number of samples"):
        convert_keras(model, "int8", [_tokens(4), _tokens(3)])


@pytest.mark.parametrize("cls", [keras.layers.LSTM, keras.layers.GRU])
def test_recurrent_layer_failure_names_the_op_the_layer_and_the_fix(cls):
    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 8))
    model = keras.Model(inp, cls(4, name="rnn")(inp))
    with pytest.raises(ConversionError) as err:
        convert_keras(model)
    msg = str(err.value)
    assert "\n" not in msg  # the CLI prints the first line
    assert "tf.TensorListReserve" in msg and "['rnn']" in msg
    assert "unroll=True" in msg and "SELECT_TF_OPS" in msg
    unrolled = keras.Model(inp, cls(4, unroll=True)(inp))
    assert len(convert_keras(unrolled)) > 0  # the advice works


def test_other_converter_failures_name_the_op():
    msg = explain_converter_error(None, "<unknown>:0: error: loc(x): 'tf.FancyOp' op is neither "
                                        "a custom op nor a flex op\nnote: more")
    assert msg.startswith("TF's converter cannot lower tf.FancyOp to TFLite builtins")
    assert explain_converter_error(None, "error: something else") == \
        "TF's converter failed: error: something else"
