"""`python -m tflite_export.convert`: success paths, one-line errors with non-zero exits, no partial files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import export_testlib as tl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tflite_export.convert", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = tl.stripped_model(32, [(16, "relu"), (4, None)], g=4, sparsity=0.8, seed=3)
    model.save(d / "m.keras")
    (d / "notzip.keras").write_text("not a zip archive")
    np.save(d / "calib.npy", np.random.default_rng(5).standard_normal((16, 32)).astype(np.float32))
    return d


def test_float32_and_int8_conversions_write_model_and_report(files):
    out, rep = files / "f.tflite", files / "f.json"
    p = _cli("--model", "m.keras", "--output", str(out), "--report", str(rep), cwd=files)
    assert p.returncode == 0, p.stderr
    assert "[convert] loading m.keras" in p.stdout and f"[convert] wrote {out}" in p.stdout
    assert out.read_bytes()[4:8] == b"TFL3"
    report = json.loads(rep.read_text())
    assert [lr["layer"] for lr in report["layers"]] == ["dense", "dense_1"]
    assert report["quantize"] == "float32" and report["model_bytes"] == out.stat().st_size

    q = files / "q.tflite"
    p = _cli("--model", "m.keras", "--output", str(q), "--quantize", "int8",
             "--representative_data", "calib.npy", "--int8_io", cwd=files)
    assert p.returncode == 0, p.stderr
    assert "int8" in p.stdout and q.stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--model", "missing.keras", "--output", "o.tflite"], "error: --model: no such file: missing.keras"),
    (["--model", "m.keras", "--output", "o.tflite", "--quantize", "int4"],
     "error: flag --quantize=int4: value should be one of <none|int8>"),
    (["--model", "m.keras", "--output", "o.tflite", "--quantize", "int8"],
     "error: --quantize=int8 needs --representative_data"),
    (["--model", "m.keras", "--output", "o.tflite", "--target", "riscv"], "error: --target: unknown target 'riscv'"),
    (["--model", "m.keras", "--output", "no_dir/o.tflite"], "error: --output: directory does not exist"),
    (["--output", "o.tflite"], "error: --model is required"),
    (["--model", "notzip.keras", "--output", "o.tflite"],
     "error: --model: notzip.keras is not a Keras model file: a .keras file is a zip archive"),
])
def test_bad_invocations_fail_with_one_clear_line(files, args, message):
    p = _cli(*args, cwd=files)
    assert p.returncode != 0
    assert _error_line(p).startswith(message)
    assert not (files / "o.tflite").exists()


def test_failure_after_loading_leaves_no_partial_file(files):
    # Calibration data of the wrong width fails inside the conversion, after TF has started.
    np.save(files / "bad.npy", np.zeros((4, 31), np.float32))
    p = _cli("--model", "m.keras", "--output", "x.tflite", "--report", "x.json", "--quantize", "int8",
             "--representative_data", "bad.npy", cwd=files)
    assert p.returncode == 1
    assert "sample shape (31,), model expects (32,)" in _error_line(p)
    leftovers = [f for f in os.listdir(files) if f.startswith(("x.", ".x."))]
    assert leftovers == []


def test_a_pruned_unstripped_model_is_stripped_first(tmp_path):
    import keras

    import tfscalpel

    keras.utils.set_random_seed(8)
    model = keras.Sequential([
        keras.Input((32,)),
        tfscalpel.GroupPrunedDense(16, activation="relu", name="a",
                                   schedule=tfscalpel.ConstantSparsity(0.75)),
        tfscalpel.MaskLayer(name="mask_a"), keras.layers.Dense(4, name="b")])
    tfscalpel.update_pruning(model)
    model.get_layer("mask_a").node_mask.assign((np.arange(16) >= 4).astype(np.float32))
    model.save(tmp_path / "pruned.keras")
    p = _cli("--model", "pruned.keras", "--output", "p.tflite", "--report", "p.json",
             cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "[convert] the model is pruned but not stripped: stripping it" in p.stdout
    layers = json.loads((tmp_path / "p.json").read_text())["layers"]
    # 4 dead nodes of 'a' removed (and b's matching input rows); a's 75 % group sparsity kept.
    assert [(r["layer"], r["shape"], r["density"]) for r in layers] == [
        ("a", [32, 12], round(np.count_nonzero(tfscalpel.strip(model).get_layer("a").kernel)
                              / (32 * 12), 6)), ("b", [12, 4], 1.0)]
