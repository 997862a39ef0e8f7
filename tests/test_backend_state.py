"""The cheap variable reads and writes a mask update uses between training steps."""
import keras
import numpy as np
import pytest

from tfscalpel.backend_state import read_numpy, write


def test_read_is_a_read_only_snapshot_and_write_casts_to_the_variable_dtype():
    var = keras.Variable(np.arange(6, dtype="float32").reshape(2, 3), trainable=False)
    got = read_numpy(var)
    assert got.dtype == np.float32 and got.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 99.0
    var.assign_add(np.ones((2, 3), dtype="float32"))  # an in-place update after the read
    assert got.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert read_numpy(var).tolist() == [[1, 2, 3], [4, 5, 6]]

    write(var, np.ones((2, 3), dtype="float64"))
    assert keras.ops.convert_to_numpy(var).dtype == np.float32
    assert read_numpy(var).tolist() == [[1, 1, 1], [1, 1, 1]]

    step = keras.Variable(-1, dtype="int64", trainable=False)
    write(step, 7)
    assert int(read_numpy(step)) == 7


def test_write_refuses_a_value_of_another_shape():
    var = keras.Variable(np.zeros((2, 3), dtype="float32"), trainable=False)
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*shape \(3, 2\)"):
        write(var, np.zeros((3, 2), dtype="float32"))
    assert read_numpy(var).shape == (2, 3)
