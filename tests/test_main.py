"""The README's main job, end to end on a small slice of MNIST (--quick)."""
import json
import os
import subprocess
import sys


def test_main_job_quick_run_prints_table_and_writes_results(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-m", "tfscalpel_jobs.main", "--quick", "--output", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "[4/5] stripping" in out.stdout
    assert "test error: dense" in out.stdout
    for layer in ("fc1", "fc2", "fc3", "total"):
        assert f"\n{layer}" in out.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sparsity"] >= 0.90
    assert results["bytes_group_csr"] < 0.15 * results["bytes_dense"]
    assert (tmp_path / "lenet300_pruned.keras").exists()
    tflite = {row["model"]: row for row in results["tflite"]}
    assert set(tflite) == {"dense float32", "pruned float32", "dense int8", "pruned int8"}
    # The exported pruned model classifies as the stripped Keras model does (same weights).
    assert abs(tflite["pruned float32"]["error"] - results["pruned_error"]) < 0.2
    assert tflite["pruned float32"]["bytes"] < 0.2 * tflite["dense float32"]["bytes"]
    assert (tmp_path / "lenet300_pruned_int8.tflite").exists()
    # tfscalpel.report's plots of the run (training curves, per-layer bars, latency bars).
    for plot in ("training", "layers", "latency"):
        assert (tmp_path / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"


def test_distiller_option_wraps_the_student_with_a_frozen_copy_of_dense():
    import keras
    import numpy as np

    import tfscalpel
    from tfscalpel_jobs import main as recipe

    keras.utils.set_random_seed(0)
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc")])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc")])
    assert recipe.distiller(student, dense, None) is student
    wrapped = recipe.distiller(student, dense, {"temperature": 2.0, "weight": 0.5})
    assert isinstance(wrapped, tfscalpel.Distiller) and wrapped.student is student
    assert wrapped.teacher is not dense and not wrapped.teacher.trainable
    assert dense.trainable  # the dense model is pruned again later: it must stay trainable
    for a, b in zip(wrapped.teacher.get_weights(), dense.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (wrapped.temperature, wrapped.weight) == (2.0, 0.5)


def test_target_group_sizes_take_the_int8_width_where_it_divides_the_fan_in():
    from tfscalpel import models
    from tfscalpel_jobs import main as recipe

    lenet = models.lenet_300_100()  # fan-ins 784, 300, 100
    assert recipe.target_group_sizes(lenet, "x86-avx512") == {"fc1": 16, "fc2": 4, "fc3": 4}
    assert recipe.target_group_sizes(lenet, "x86-avx2") == {"fc1": 16, "fc2": 4, "fc3": 4}
    assert recipe.target_group_sizes(lenet, "cortex-m4") == {"fc1": 4, "fc2": 4, "fc3": 4}
    assert recipe.target_group_sizes(lenet, None, fallback=2) == {"fc1": 2, "fc2": 2, "fc3": 2}
    # --target may be a cost profile's path: no registered widths, so the fallback everywhere.
    assert recipe.target_group_sizes(lenet, "my-host.json") == {"fc1": 4, "fc2": 4, "fc3": 4}
