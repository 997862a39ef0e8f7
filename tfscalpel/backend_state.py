"""Reading and writing model variables from a callback in the middle of ``fit``, on any backend.

Under the JAX backend ``fit`` keeps the variables' values in its own state between steps and
purges the model's copies (reading one then fails with ``'NoneType' object is not callable``).
A callback that reads or assigns variables mid-epoch first calls :func:`sync_model_state`:
the model's variables get the current values back, and ``fit`` re-reads them (assignments
included) before its next step. Other backends keep the variables live, so it does nothing
there. Keras syncs by itself before epoch-level callbacks.

:func:`read_numpy` and :func:`write` are the cheap reads and writes of a variable between steps.
"""
import keras
import numpy as np


def sync_model_state(model):
    """Make ``model``'s variables current (JAX ``fit``); a no-op on other backends."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def read_numpy(variable):
    """``variable``'s value now, as a read-only NumPy array, read between steps (a mask update,
    a callback).

    On TensorFlow it is a view of one read of the backing ``tf.Variable``: a snapshot, which
    later assignments do not change (TensorFlow copies a variable's buffer before updating it
    in place while a read of it is alive), without ``keras.ops.convert_to_numpy``'s two copies.
    A mask update reads every pruned kernel and mask once per schedule step, inside the timed
    training loop (``benchmarks/bench_training_step.py``). Other backends return a copy,
    read-only too, so no caller can depend on writing to it."""
    backing = _tf_variable(variable)
    if backing is not None:
        array = np.asarray(backing.read_value())
    else:
        array = np.array(keras.ops.convert_to_numpy(variable))
    array.flags.writeable = False
    return array


def write(variable, value):
    """Assign the NumPy (or Python) ``value`` to ``variable``, between steps.

    On TensorFlow it assigns to the backing ``tf.Variable`` without reading the result back
    (Keras's ``assign`` converts, checks, assigns and then reads the new value, more than half
    of a small assignment's cost); the value is cast to the variable's dtype first, and a shape
    that does not match is refused as Keras refuses it. Other backends use Keras's ``assign``."""
    backing = _tf_variable(variable)
    if backing is not None:
        array = np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype))
        if array.shape != tuple(variable.shape):
            raise ValueError(f"variable {variable.path!r} has shape {tuple(variable.shape)}; "
                             f"the value written has shape {array.shape}")
        # A scalar goes in as a Python number: converting a 0-d array costs more than the write.
        backing.assign(array.item() if array.ndim == 0 else array, read_value=False)
    else:
        variable.assign(value)


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable on the TensorFlow backend, else None (other
    backends, or inside an autocast scope, where ``.value`` is a cast copy)."""
    if keras.backend.backend() != "tensorflow":
        return None
    value = variable.value
    return value if hasattr(value, "assign") and hasattr(value, "numpy") else None
