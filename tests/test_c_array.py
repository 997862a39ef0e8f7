"""Firmware export: the model as a 16-byte-aligned C array (API and `convert.py --format c_array`),
flash bytes per layer and the arena estimate."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import export_testlib as tl
from tflite_export import c_array, exporter, flatbuffer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported():
    model = tl.stripped_model(64, [(32, "relu"), (10, None)], g=4, sparsity=0.85, seed=11)
    calib = np.random.default_rng(2).standard_normal((32, 64)).astype(np.float32)
    sparse = exporter.export(model, quantize="int8", representative_data=calib, int8_io=True,
                             formats={"dense": "custom", "dense_1": "custom"}, group_sizes={"dense": 4})
    dense = exporter.export(model, quantize="int8", representative_data=calib, int8_io=True,
                            formats={"dense": "dense", "dense_1": "dense"})
    return model, calib, sparse, dense


def _array_bytes(cc_text):
    body = cc_text[cc_text.index("{") + 1:cc_text.index("};")]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


def test_c_array_round_trips_and_is_16_byte_aligned(exported, tmp_path):
    _, _, sparse, _ = exported
    cc_path, h_path = sparse.write_c_array(str(tmp_path))
    cc, h = open(cc_path).read(), open(h_path).read()
    assert _array_bytes(cc) == sparse.model_bytes
    assert "alignas(16) const unsigned char g_model_data[]" in cc
    assert f"const unsigned int g_model_data_len = {len(sparse.model_bytes)};" in cc
    assert "extern const unsigned char g_model_data[];" in h and "#ifndef MODEL_DATA_H_" in h
    # The compiler honours the alignment and the bytes are the model's (checked in C).
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.fail("g++ not found (build-essential)")
    main = tmp_path / "main.cc"
    checksum = sum(sparse.model_bytes) % (1 << 32)
    main.write_text(
        '#include <cstdint>\n#include "model_data.h"\n'
        "int main() {\n  uint32_t s = 0;\n  for (unsigned i = 0; i < g_model_data_len; ++i) s += g_model_data[i];\n"
        f"  if (reinterpret_cast<uintptr_t>(g_model_data) % 16 != 0) return 3;\n"
        f"  return s == {checksum}u && g_model_data[4] == 'T' ? 0 : 4;\n}}\n")
    exe = tmp_path / "check"
    build = subprocess.run([gxx, "-std=c++17", "-Wall", "-Werror", str(main), cc_path, "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert subprocess.run([str(exe)]).returncode == 0


def test_c_array_rejects_bad_names_and_missing_directory(exported, tmp_path):
    _, _, sparse, _ = exported
    with pytest.raises(ValueError, match="C identifier"):
        c_array.render(sparse.model_bytes, variable="9lives")
    with pytest.raises(FileNotFoundError):
        c_array.write(sparse.model_bytes, str(tmp_path / "nope"))
    assert not os.listdir(tmp_path)


def test_arena_estimate_plans_activations_and_custom_op_scratch(exported):
    _, _, sparse, dense = exported
    est_sparse, est_dense = c_array.arena_estimate(sparse.model_bytes), c_array.arena_estimate(dense.model_bytes)
    # int8 chain 64 -> 32 -> 10, batch 1: each op needs its input and output live at once.
    al = lambda n: -(-n // 16) * 16  # noqa: E731
    assert est_dense.scratch == 0
    assert est_dense.activations == max(al(64) + al(32), al(32) + al(10))
    # The custom ops add their int16 workspace (batch * in * 2 + 32) while they run.
    assert est_sparse.scratch == al(64 * 2 + 32) + al(32 * 2 + 32)
    assert est_sparse.activations == max(al(64) + al(32) + al(64 * 2 + 32), al(32) + al(10) + al(32 * 2 + 32))
    assert est_sparse.total == est_sparse.activations + est_sparse.persistent
    assert "arena estimate" in str(est_sparse)


# MicroInterpreter::arena_used_bytes measured on a host build of TFLite Micro (public source, not
# part of this repository) with tfs_tflm_adapter.cc, for exactly these two fixture models.
TFLM_MEASURED = {"sparse": 1248, "dense": 1376}


def test_arena_estimate_matches_tflite_micro_measurements(exported):
    _, _, sparse, dense = exported
    est_sparse, est_dense = c_array.arena_estimate(sparse.model_bytes), c_array.arena_estimate(dense.model_bytes)
    # persistent: fixed + 24 per tensor + per op (custom 204, FULLY_CONNECTED 152 plus its
    # per-channel multiplier and shift arrays, 16-byte aligned).
    assert est_sparse.persistent == 456 + 24 * 5 + 2 * 204
    assert est_dense.persistent == 456 + 24 * 7 + 2 * 152 + 2 * (128 + 48)
    assert (est_sparse.total, est_dense.total) == (1240, 1376)
    assert abs(est_sparse.total - TFLM_MEASURED["sparse"]) <= 16
    assert abs(est_dense.total - TFLM_MEASURED["dense"]) <= 16


def test_flash_table_lists_every_layer_and_the_model(exported):
    _, _, sparse, _ = exported
    table = c_array.flash_table(sparse.report, sparse.model_bytes)
    lines = table.splitlines()
    assert lines[1].startswith("dense ") and "custom g=4" in lines[1]
    assert lines[-1].startswith("model (C array)") and f"{len(sparse.model_bytes):,}" in lines[-1]
    lr = sparse.report.layers[0]
    assert f"{lr.bytes_exported:,}" in lines[1] and lr.bytes_exported < lr.bytes_dense


def _convert_cli(exported, tmp_path, *extra):
    """Save the fixture model and calibration data into tmp_path and run `tflite_export.convert`
    for int8 C-array output into tmp_path/fw with the extra flags; returns (process, argv, env)."""
    model, calib, _, _ = exported
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", calib)
    (tmp_path / "fw").mkdir()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    args = [sys.executable, "-m", "tflite_export.convert", "--model", "m.keras", "--quantize", "int8",
            "--representative_data", "calib.npy", "--int8_io", "--format", "c_array", *extra]
    p = subprocess.run(args + ["--output", str(tmp_path / "fw")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    return p, args, env


def test_convert_cli_c_array(exported, tmp_path):
    p, args, env = _convert_cli(exported, tmp_path)
    out = tmp_path / "fw"
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["model_data.cc", "model_data.h"]
    blob = _array_bytes((out / "model_data.cc").read_text())
    assert blob[4:8] == b"TFL3" and flatbuffer.load(blob).subgraphs
    assert "arena estimate" in p.stdout and "model (C array)" in p.stdout
    bad = subprocess.run(args + ["--output", str(tmp_path / "missing")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert [ln for ln in bad.stderr.splitlines() if ln.startswith("error: ")] == [
        f"error: --output: with --format=c_array, a directory that exists: {tmp_path / 'missing'}"]
    assert not (tmp_path / "missing").exists()


def test_convert_cli_target_cortex_m4_chooses_per_layer_from_cycles(exported, tmp_path):
    """`--target cortex-m4`: the 64x32 layer at 85 % group sparsity is predicted faster as the
    custom op, the 32x10 one (per-node and per-row costs dominate) stays dense; the report says so."""
    p, _, _ = _convert_cli(exported, tmp_path, "--target", "cortex-m4", "--report",
                           str(tmp_path / "r.json"))
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["target"] == "cortex-m4"
    layers = {lr["layer"]: lr for lr in report["layers"]}
    assert (layers["dense"]["format"], layers["dense"]["g"]) == ("custom", 4)
    assert layers["dense"]["reason"].endswith("vs dense on cortex-m4")
    assert layers["dense_1"]["format"] == "dense"
    assert layers["dense_1"]["reason"].startswith("kept dense: best sparse choice custom g=")
