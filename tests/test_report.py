"""tfscalpel.report: PNG plots from a training history, strip / export reports and latency rows."""
import keras
import numpy as np
import pytest

import tfscalpel
from tfscalpel import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the IHDR chunk; asserts the file is a PNG."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _trained_pruned():
    """A tiny pruned MLP trained for 3 epochs with SparsityHistory (sparsity rising 0 -> 0.75)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                              keras.layers.Dense(2, name="fc2")])
    schedule = tfscalpel.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16, frequency=4)
    pruned = tfscalpel.prune(model, schedule=schedule, group_size=4)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    history = pruned.fit(x, y, batch_size=32, epochs=3, verbose=0, validation_split=0.25,
                         callbacks=[tfscalpel.UpdatePruningStep(), tfscalpel.SparsityHistory()])
    return pruned, history


def test_sparsity_history_records_per_layer_and_total_sparsity():
    pruned, history = _trained_pruned()
    logs = history.history
    assert {"sparsity/fc1", "sparsity/fc2", "sparsity", "accuracy", "val_accuracy"} <= set(logs)
    assert len(logs["sparsity/fc1"]) == 3
    # Sparsity rises with the schedule and ends at the layers' real mask sparsity.
    assert logs["sparsity/fc1"][0] < logs["sparsity/fc1"][-1]
    layers = {layer.name: layer for layer in tfscalpel.pruned_layers(pruned)}
    assert logs["sparsity/fc1"][-1] == pytest.approx(layers["fc1"].mask_sparsity())
    sizes = {"fc1": 16 * 32, "fc2": 32 * 2}
    total = sum(logs[f"sparsity/{n}"][-1] * s for n, s in sizes.items()) / sum(sizes.values())
    assert logs["sparsity"][-1] == pytest.approx(total)


def test_write_all_writes_readable_pngs(tmp_path):
    pruned, history = _trained_pruned()
    _, strip_report = tfscalpel.strip(pruned, return_report=True)
    rows = [{"model": "dense float32", "bytes": 9000, "latency_us": 5.0, "error": 1.0},
            {"model": "pruned float32", "bytes": 3000, "latency_us": 2.5, "error": 1.1}]
    written = report.write_all(tmp_path / "plots", history=history, strip_report=strip_report,
                               latency_rows=rows, prefix="run_")
    assert set(written) == {"training", "layers", "latency"}
    for kind, path in written.items():
        assert path == str(tmp_path / "plots" / f"run_{kind}.png")
        width, height = _png_size(path)
        assert width >= 500 and height >= 300, (kind, width, height)


def test_plot_training_accepts_a_history_dict_and_node_pruning_logs(tmp_path):
    logs = {"loss": [1.0, 0.5], "kept/mask_fc1": [1.0, 0.6]}
    path = report.plot_training(logs, tmp_path / "t.png", title="gates")
    _png_size(path)


def test_plot_layers_from_an_export_report(tmp_path):
    from tflite_export.report import ExportReport, LayerReport

    layers = tuple(
        LayerReport(layer=f"fc{i}", shape=(64, 32), dtype="int8", activation="relu",
                    format=fmt, g=g, density=d, stored_units=10, bytes_dense=2048 + 128,
                    bytes_exported=b, expected_speedup=1.5, reason="test")
        for i, (fmt, g, d, b) in enumerate((("custom", 4, 0.1, 400), ("dense", 0, 0.9, 2176)), 1))
    export_report = ExportReport(target="cortex-m4", quantize="int8", layers=layers,
                                 model_bytes=3000, dense_model_bytes=5000)
    written = report.write_all(tmp_path, export_reports=[export_report])
    assert list(written) == ["layers_int8"]
    _png_size(written["layers_int8"])


def test_bad_inputs_raise_clear_errors(tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match="SparsityHistory"):
        report.plot_training({"loss": [1.0, 0.5], "accuracy": [0.5, 0.6]}, out)
    with pytest.raises(ValueError, match="empty"):
        report.plot_training({}, out)
    with pytest.raises(ValueError, match="one value per epoch"):
        report.plot_training({"loss": [1.0, 0.5], "sparsity/fc1": [0.1]}, out)
    with pytest.raises(TypeError, match="History"):
        report.plot_training([0.1, 0.2], out)
    with pytest.raises(TypeError, match="StripReport"):
        report.plot_layers({"fc1": 0.5}, out)
    with pytest.raises(ValueError, match="no layers"):
        report.plot_layers(tfscalpel.StripReport(()), out)
    with pytest.raises(ValueError, match="at least one"):
        report.plot_latency([], out)
    with pytest.raises(ValueError, match="latency_us"):
        report.plot_latency([{"model": "dense", "latency_us": float("nan")}], out)
    with pytest.raises(ValueError, match="'model' name"):
        report.plot_latency([{"latency_us": 1.0}], out)
    with pytest.raises(TypeError, match="list of row dicts"):
        report.plot_latency({"model": "dense", "latency_us": 1.0}, out)
    with pytest.raises(ValueError, match=r"\.png"):
        report.plot_latency([{"model": "dense", "latency_us": 1.0}], tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="at least one of"):
        report.write_all(tmp_path)
    assert not out.exists()


def test_readme_targets_table_is_the_registry():
    import os

    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    begin, end = "<!-- targets-table:begin -->\n", "\n<!-- targets-table:end -->"
    assert begin in readme and end in readme
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    assert table == report.targets_table(), "README is stale: paste `python -m tfscalpel.report --targets`"
    assert "| `cortex-m4` | mcu | int8 |" in table


def test_plot_layers_shows_removed_nodes_of_a_node_pruned_report(tmp_path):
    from tfscalpel.strip import LayerReport

    rows = (LayerReport("conv1", "dense", 1, 18, 25, 450, 450, 450, nodes_kept=18, nodes_total=20),
            LayerReport("fc1", "group(g=8)", 8, 30, 624, 4000, 600, 2340, nodes_kept=30, nodes_total=500))
    _png_size(report.plot_layers(tfscalpel.StripReport(rows), tmp_path / "nodes.png"))
