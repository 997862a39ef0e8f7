"""benchmarks/mcu/bench_tflm.py without TFLite Micro / CMSIS-NN sources (CI): it says what is
missing and how to get them, and exits 0 without building anything."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    path = os.path.join(ROOT, "benchmarks", "mcu", "bench_tflm.py")
    spec = importlib.util.spec_from_file_location("bench_tflm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_sources_it_says_so_and_exits_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TFLM_DIR", raising=False)
    monkeypatch.delenv("CMSIS_NN_DIR", raising=False)
    bench = _bench()
    assert bench.main(["--build-dir", str(tmp_path / "build")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bench_tflm: not run: --tflm-dir None is not a tflite-micro checkout")
    assert bench.TFLM_COMMIT in out and bench.CMSIS_NN_COMMIT in out
    assert not (tmp_path / "build").exists()
    # a tflite-micro checkout but no CMSIS-NN
    tflm = tmp_path / "tflm" / "tensorflow" / "lite" / "micro"
    tflm.mkdir(parents=True)
    (tflm / "micro_interpreter.h").write_text("")
    assert bench.main(["--tflm-dir", str(tmp_path / "tflm"), "--cmsis-nn-dir", str(tmp_path)]) == 0
    assert "is not a CMSIS-NN checkout" in capsys.readouterr().out
