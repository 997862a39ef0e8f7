"""benchmarks/scalpel_table.py end to end on a small slice of MNIST (--quick, LeNet-300-100)."""
import csv
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "scalpel_table.py")
COLUMNS = ["model", "platform", "method", "accuracy_pct", "pruned_pct", "rel_size", "rel_time",
           "speedup", "measured_on", "note"]


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
