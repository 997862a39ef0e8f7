"""tfscalpel's training side on the JAX backend, and without TensorFlow.

Keras fixes its backend once per process, so the checks run in subprocesses with
KERAS_BACKEND=jax (tests/jax_backend_checks.py); this process (TensorFlow backend) asserts their
numbers and recomputes the JAX calibration statistics with TensorFlow.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfscalpel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **env):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("the JAX backend tests need the missing package jax: pip install 'jax[cpu]' (setup.py's dev "
                    "extras install it)")
    environment = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONPATH=os.pathsep.join(filter(None, [ROOT,
                                                                os.environ.get("PYTHONPATH")])),
                       **env)
    proc = subprocess.run([sys.executable] + args, env=environment, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax")
    _run([os.path.join(ROOT, "tests", "jax_backend_checks.py"), str(out)])
    with open(out / "results.json") as f:
        return out, json.load(f)


def test_prune_fit_save_load_strip_under_jax(jax_run):
    _, r = jax_run
    assert r["backend"] == "jax"
    # PolynomialDecay 0 -> 0.75 over steps 0..6 at every step; 8 steps trained.
    assert r["sparsity"] == [0.75, 0.75]
    assert r["pruning_step"] == [7, 7]  # 2 epochs of 4 batches, batch indices from 0 in each
    assert r["async_batch_end"] == [True, False]
    assert r["masked_nonzero_where_pruned"] == 0
    assert r["reload_max_diff"] == 0.0 and r["reload_sparsity"] == [0.75, 0.75]
    assert r["stripped_layers"] == ["Dense", "Dense"] and r["strip_max_diff"] == 0.0


def test_mask_layer_and_gate_training_under_jax(jax_run):
    _, r = jax_run
    # The 8 gates started at 0.56 fell through the band under the penalty; the others live.
    assert r["gates_kept"] == [False] * 8 + [True] * 24
    assert r["gate_frozen"] == 1.0  # the fine-tuning epoch froze the mask
    assert r["slim_fc1_units"] == 24
    assert r["slim_max_diff"] < 1e-6


def test_export_under_jax_says_it_needs_tensorflow(jax_run):
    _, r = jax_run
    assert "needs Keras's TensorFlow backend" in r["export_error"]
    assert "KERAS_BACKEND='jax'" in r["export_error"]
    assert "python -m tflite_export.convert" in r["export_error"]


def test_jax_calibration_equals_tensorflow_calibration(jax_run):
    out, r = jax_run
    assert r["obd_sparsity"] == [0.5, 0.5]
    jax_stats = np.load(out / "stats.npz")
    model = keras.models.load_model(out / "calibrated.keras")
    rng = np.random.default_rng(0)  # the same data as the JAX run
    x = rng.random((64, 16), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for hessian in ("fisher", "hutchinson"):
        stats = tfscalpel.calibrate(model, (x, y), loss, hessian=hessian, batch_size=32,
                                    probes=2, seed=0)
        assert sorted(stats) == ["fc1", "fc2"]
        for name, s in stats.items():
            for field in ("grad_abs", "hessian_diag"):
                np.testing.assert_allclose(
                    jax_stats[f"{hessian}/{name}/{field}"], getattr(s, field), rtol=1e-4,
                    atol=1e-7, err_msg=f"{hessian} {name} {field}")


def test_import_and_prune_without_tensorflow():
    code = textwrap.dedent("""
        import importlib.abc, sys

        class NoTensorFlow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("tensorflow", "tf_keras"):
                    raise ImportError(f"{name} is blocked by the test")

        sys.meta_path.insert(0, NoTensorFlow())
        import numpy as np
        import keras
        import tfscalpel

        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="fc")])
        pruned = tfscalpel.prune(model, sparsity=0.5, group_size=4)
        tfscalpel.update_pruning(pruned)
        stripped = tfscalpel.strip(pruned)
        kernel = keras.ops.convert_to_numpy(stripped.get_layer("fc").kernel)
        print(keras.backend.backend(), float(np.mean(kernel == 0)),
              sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
    """)
    proc = _run(["-c", code])
    assert proc.stdout.split("\n")[-2] == "jax 0.5 []"
