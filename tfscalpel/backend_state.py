"""Reading and writing model variables from a callback in the middle of ``fit``, on any backend.

Under the JAX backend ``fit`` keeps the variables' values in its own state between steps and
purges the model's copies (reading one then fails with ``'NoneType' object is not callable``).
A callback that reads or assigns variables mid-epoch first calls :func:`sync_model_state`:
the model's variables get the current values back, and ``fit`` re-reads them (assignments
included) before its next step. Other backends keep the variables live, so it does nothing
there. Keras syncs by itself before epoch-level callbacks.
"""


def sync_model_state(model):
    """Make ``model``'s variables current (JAX ``fit``); a no-op on other backends."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
