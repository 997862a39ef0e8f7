"""Shared check for the pruned layer twins: strip, save and load keep every output."""
import keras
import numpy as np

import tfscalpel


def strip_and_reload(model, x, tmp_path, tol=1e-5):
    """Strip the trained pruned ``model`` and save/load both it and the stripped copy: every
    output equals the pruned model's (``tol``, relative and absolute). Returns the stripped model and the strip report's
    layers by name."""
    expected = model.predict(x, verbose=0)
    stripped, report = tfscalpel.strip(model, return_report=True)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), expected, rtol=tol, atol=tol)
    model.save(tmp_path / "pruned.keras")
    stripped.save(tmp_path / "stripped.keras")
    for name in ("pruned.keras", "stripped.keras"):
        loaded = keras.models.load_model(tmp_path / name)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=tol, atol=tol)
    return stripped, {r.name: r for r in report.layers}
