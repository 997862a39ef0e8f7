"""benchmarks/scalpel_table.py end to end on a small slice of MNIST (--quick, LeNet-300-100)."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "scalpel_table.py")
COLUMNS = ["model", "platform", "method", "accuracy_pct", "accuracy_std", "seeds", "pruned_pct",
           "rel_size", "rel_time", "speedup", "measured_on", "note"]


def _run(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--only", "lenet300", "--output", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_quick_table_rows_columns_and_resume(tmp_path):
    first = _run(tmp_path)
    assert "trained in" in first and "reusing" not in first
    for anchor in ("3.54x", "2.61x", "1.25x", "1.90x", "1.06x", "0.41x"):
        assert anchor in first
    with open(tmp_path / "out" / "scalpel_table.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [(r["platform"], r["method"]) for r in rows] == [
        (p, m) for p in ("MCU", "CPU", "GPU") for m in ("dense", "traditional", "scalpel")]
    assert {r["model"] for r in rows} == {"LeNet-300-100"}
    assert {(r["seeds"], r["accuracy_std"]) for r in rows} == {("1", "")}  # one seed: no std
    by = {(r["platform"], r["method"]): r for r in rows}
    for p in ("MCU", "CPU", "GPU"):
        assert float(by[p, "dense"]["rel_size"]) == 1.0 and float(by[p, "dense"]["rel_time"]) == 1.0
        assert float(by[p, "dense"]["pruned_pct"]) == 0.0
    # MCU and CPU plans prune to the target sparsity; the cycle counts under QEMU are exact, so
    # the group-sparse kernel must beat the dense one and groups must store fewer bytes than CSR.
    for p in ("MCU", "CPU"):
        assert float(by[p, "scalpel"]["pruned_pct"]) > 85.0
        assert float(by[p, "traditional"]["pruned_pct"]) > 85.0
    assert float(by["MCU", "scalpel"]["rel_time"]) < 0.5
    assert float(by["MCU", "scalpel"]["rel_size"]) < float(by["MCU", "traditional"]["rel_size"]) < 0.5
    assert by["GPU", "traditional"]["rel_time"] == ""  # needs a real GPU
    assert "not available in this session" in by["GPU", "scalpel"]["note"]
    assert (tmp_path / "out" / "scalpel_table.png").read_bytes()[:4] == b"\x89PNG"

    # A second run resumes from the cached models instead of training again.
    second = _run(tmp_path)
    assert "reusing" in second and "trained in" not in second
    with open(tmp_path / "out" / "scalpel_table.csv", newline="") as f:
        again = list(csv.DictReader(f))
    assert [r["pruned_pct"] for r in again] == [r["pruned_pct"] for r in rows]
    assert [r["accuracy_pct"] for r in again] == [r["accuracy_pct"] for r in rows]


def _row(method, acc, time_, pruned=90.0):
    return {"model": "M", "platform": "CPU", "method": method, "accuracy_pct": acc,
            "accuracy_std": None, "seeds": 1, "pruned_pct": pruned, "rel_size": 0.1,
            "rel_time": time_, "speedup": None if time_ is None else 1 / time_,
            "measured_on": "here", "note": ""}


def test_mean_over_seeds_means_and_sample_std():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import scalpel_table

    runs = [[_row("dense", 98.0, 1.0), _row("scalpel", 97.0, 0.5, 92.0)],
            [_row("dense", 98.4, 1.0), _row("scalpel", 97.6, None, 94.0)],
            [_row("dense", 98.2, 1.0), _row("scalpel", 97.5, 0.25, 93.0)]]
    dense, scalpel = scalpel_table.mean_over_seeds(runs)
    assert dense["seeds"] == 3 and dense["accuracy_pct"] == 98.2
    assert dense["accuracy_std"] == 0.2  # sample std of 98.0, 98.4, 98.2
    assert scalpel["accuracy_pct"] == 97.3667 and scalpel["accuracy_std"] == 0.3215
    assert scalpel["pruned_pct"] == 93.0
    assert scalpel["rel_time"] is None and scalpel["speedup"] is None  # missing in one seed
    one = scalpel_table.mean_over_seeds(runs[:1])
    assert one[1]["accuracy_std"] is None and one[1]["rel_time"] == 0.5
    with pytest.raises(ValueError, match="do not line up"):
        scalpel_table.mean_over_seeds([runs[0], runs[1][::-1]])
    assert "97.37 +- 0.32" in scalpel_table.table_text(
        [dense, scalpel], scalpel_table.summary([dense, scalpel]))


def test_node_pruning_mean_rows_and_kept_text():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_node_pruning as bench

    full = {"fc1": 300, "fc2": 100, "fc3": 10}
    runs = [[("k", "T", "dense", 98.0, full, 1000, 900, 5.0),
             ("k", "T", "gpu-ampere", 97.9, {"fc1": 150, "fc2": 60, "fc3": 10}, 500, 400, 3.0)],
            [("k", "T", "dense", 98.2, full, 1000, 900, 7.0),
             ("k", "T", "gpu-ampere", 98.1, {"fc1": 161, "fc2": 60, "fc3": 10}, 600, 500, 4.0)]]
    dense, gpu = bench.mean_rows(runs)
    assert dense[3] == (98.1, pytest.approx(0.1414, abs=1e-4)) and dense[7] == 6.0
    assert gpu[4] == {"fc1": 155.5, "fc2": 60, "fc3": 10}
    assert bench.kept_text(gpu[4], full) == "fc1 155.5/300, fc2 60/100"
    assert bench.kept_text(full, full) == "(none removed)"


def _tiny_lenet300(seed=0, n=4096):
    import keras

    from tfscalpel import models

    rng = np.random.default_rng(seed)
    x = rng.random((n, 784)).astype(np.float32)
    y = (x[:, :10].argmax(axis=1)).astype(np.int64)  # a learnable label
    keras.utils.set_random_seed(seed)
    dense = models.lenet_300_100()
    models.compile_classifier(dense, keras.optimizers.Adam(1e-3))
    dense.fit(x, y, batch_size=128, epochs=1, verbose=0)
    return dense, (x, y)


def test_finetune_only_distillation_leaves_the_penalty_stages_alone():
    """With ``distill_finetune_only`` the teacher joins only for the frozen fine-tuning: the
    stages, and so the nodes that die, are those of the undistilled run."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import scalpel_table

    dense, train = _tiny_lenet300()
    gates = dict(penalties=(2e-3, 4e-3), stage_epochs=1, finetune_epochs=1, group_sparsity=0.9,
                 tie_windows=True)
    s = {"gates": gates}
    plain = scalpel_table.prune_with_gates(dense, s, train, 0, "gpu-ampere")
    s["gates"] = dict(gates, distill_finetune_only=True)
    late = scalpel_table.prune_with_gates(dense, s, train, 0, "gpu-ampere", scalpel_table.DISTILL)
    units = lambda m: [m.get_layer(n).units for n in ("fc1", "fc2")]  # noqa: E731
    assert units(plain) == units(late) and units(plain)[0] < 300
    assert units(plain)[0] % 4 == 0  # tied 2:4 windows die whole
    # the fine-tuning itself differs: the distilled run learned from the teacher
    assert not np.array_equal(plain.get_layer("fc3").get_weights()[0],
                              late.get_layer("fc3").get_weights()[0])


def test_finetune_only_distilled_run_fine_tunes_from_the_cached_stages(tmp_path, capsys):
    """The undistilled run keeps its penalty stages' state (weights and optimizer); the
    fine-tune-only distilled run loads it instead of training the stages again, and ends with
    the very weights of a distilled run that trained its own stages."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import scalpel_table

    dense, train = _tiny_lenet300()
    gates = dict(penalties=(2e-3, 4e-3), stage_epochs=1, finetune_epochs=1, group_sparsity=0.9,
                 tie_windows=True, weight_decay=0.02)
    s = {"gates": gates}
    cache = scalpel_table.Cache(str(tmp_path), "tiny", dict(data="x", train=None,
                                                            dense_epochs=1), 0)
    scalpel_table.prune_with_gates(dense, s, train, 0, "gpu-ampere", None, cache, "gpu")
    assert "reusing" not in capsys.readouterr().out
    s["gates"] = dict(gates, distill_finetune_only=True)
    cached = scalpel_table.prune_with_gates(dense, s, train, 0, "gpu-ampere",
                                            scalpel_table.DISTILL, cache, "gpu")
    assert "gpu-stages: reusing" in capsys.readouterr().out
    fresh = scalpel_table.prune_with_gates(dense, s, train, 0, "gpu-ampere", scalpel_table.DISTILL)
    for a, b in zip(cached.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    # distilled through the stages: other stages, not the cached ones
    s["gates"] = dict(gates)
    assert (scalpel_table.stage_fields(s["gates"], scalpel_table.DISTILL)
            != scalpel_table.stage_fields(s["gates"], None))
    # the plan's decisions are part of the key: another plan (a planner change) trains anew
    import tfscalpel

    plan = scalpel_table.plan_fields(tfscalpel.plan(dense, "gpu-ampere"))
    assert plan == ["fc1:node+2:4:1:fc1", "fc2:node+2:4:1:fc2", "fc3:2:4:1:"]
    fields = scalpel_table.stage_fields(gates, None)
    assert os.path.exists(cache.state_path("gpu-stages", {**fields, "plan": plan}))
    assert not os.path.exists(cache.state_path("gpu-stages", fields))
    other = plan[:2] + ["fc3:node:1:fc3"]
    assert not os.path.exists(cache.state_path("gpu-stages", {**fields, "plan": other}))


def test_validation_split_holds_out_training_images_under_its_own_keys(tmp_path):
    """--validation trains on the first 50,000 training images and measures on the last
    10,000 (never the test set), under cache keys of its own; the other keys do not move."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import scalpel_table

    from tfscalpel import datasets

    full = scalpel_table.settings_for("lenet5", False)
    val = scalpel_table.settings_for("lenet5", False, validation=True)
    (x, y), _ = datasets.load_mnist()
    (tx, ty), (vx, vy) = scalpel_table.load_data(val)
    assert len(tx) == 50000 and len(vx) == 10000
    np.testing.assert_array_equal(vy, y[50000:])
    np.testing.assert_array_equal(ty, y[:50000])
    path = lambda s: scalpel_table.Cache(str(tmp_path), "lenet5", s, 0).path("dense")  # noqa: E731
    assert os.path.basename(path(full)) == "lenet5_dense_7f96c0afad.keras"  # the old key
    assert path(val) != path(full)
    with pytest.raises(ValueError, match="validation and quick do not go together"):
        scalpel_table.settings_for("lenet5", True, validation=True)


def test_validation_flag_reaches_the_settings_and_refuses_quick(monkeypatch, capsys, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import scalpel_table
    from tfscalpel import datasets

    with pytest.raises(SystemExit):
        scalpel_table.main(["--validation", "--quick"])
    assert "--validation tunes on full data" in capsys.readouterr().err

    # The split: train on all training images but the last VALIDATION, score on those.
    s = scalpel_table.settings_for("lenet300", False, validation=True)
    (x, y), (xv, yv) = scalpel_table.load_data(s)
    (x_all, y_all), _ = datasets.load_mnist()
    n = len(x_all) - scalpel_table.VALIDATION
    assert len(x) == n and len(xv) == scalpel_table.VALIDATION
    np.testing.assert_array_equal(yv, y_all[n:])
    np.testing.assert_array_equal(xv, datasets.to_model_inputs(x_all[n:], s["flatten"]))

    seen = []

    def stop(key, quick, validation=False):
        seen.append((key, quick, validation))
        raise RuntimeError("stop before training")

    monkeypatch.setattr(scalpel_table, "settings_for", stop)
    with pytest.raises(RuntimeError, match="stop before training"):
        scalpel_table.main(["--validation", "--only", "convnet", "--output", str(tmp_path)])
    assert seen == [("convnet", False, True)]
