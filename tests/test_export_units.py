"""Exporter pieces without TF conversion: group-CSR, int8 requantization numbers, cost-model choices."""
import json
import math

import numpy as np
import pytest

from export_testlib import reference_group_csr
from tflite_export import cost_model, group_csr, planner, quantization
from tflite_export.fc_layers import FCLayer


# ---------------------------------------------------------------------------------- group-CSR
@pytest.mark.parametrize("g", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("shape", [(5, 37), (8, 64), (3, 7)])
def test_group_csr_matches_reference_including_ragged(shape, g):
    rng = np.random.default_rng(g * 100 + shape[1])
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < 0.6] = 0.0
    csr = group_csr.encode(w, g)
    values, col_idx, row_ptr = reference_group_csr(w, g)
    np.testing.assert_array_equal(csr.values, values)
    np.testing.assert_array_equal(csr.col_idx, col_idx)
    np.testing.assert_array_equal(csr.row_ptr, row_ptr)
    assert csr.col_idx.dtype == np.uint8 and csr.row_ptr.dtype == np.int32  # <= 256 groups a row
    assert csr.values.size == csr.n_groups * g
    np.testing.assert_array_equal(group_csr.decode(csr), w)
    assert group_csr.count_groups(w, g) == csr.n_groups


def test_group_csr_int8_and_all_zero_rows():
    w = np.zeros((4, 20), dtype=np.int8)
    w[2, 17] = -3  # only the ragged tail group of row 2
    csr = group_csr.encode(w, 8)
    assert csr.values.dtype == np.int8
    np.testing.assert_array_equal(csr.row_ptr, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(csr.col_idx, [2])  # group index: column 16 / g
    np.testing.assert_array_equal(csr.values, [0, -3, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("in_f,g,dtype", [(1024, 4, np.uint8), (1025, 4, np.uint16),
                                          (256, 1, np.uint8), (257, 1, np.uint16),
                                          (4096, 16, np.uint8), (65536, 1, np.uint16)])
def test_group_csr_index_width_is_the_narrowest(in_f, g, dtype):
    """col_idx is uint8 exactly when a row has at most 256 groups (FORMAT.md version 2)."""
    w = np.zeros((2, in_f), np.int8)
    w[1, -1] = 5  # the row's last (possibly ragged) group
    csr = group_csr.encode(w, g)
    assert csr.col_idx.dtype == dtype
    np.testing.assert_array_equal(csr.col_idx, [(in_f - 1) // g])
    np.testing.assert_array_equal(group_csr.decode(csr), w)

def test_group_csr_rejects_bad_g_and_wide_inputs():
    with pytest.raises(ValueError, match=r"g=3 .*\(1, 2, 4, 8, 16\)"):
        group_csr.encode(np.ones((2, 8), np.float32), 3)
    with pytest.raises(ValueError, match="in=65537 exceeds 65536"):
        group_csr.encode(np.ones((1, 65537), np.float32), 16)


# ------------------------------------------------------------------------ int8 requantization
def _reference_multiplier(real):
    # Independent form: choose shift so that real * 2**(31 - shift) lies in [2**30, 2**31).
    shift = math.floor(math.log2(real)) + 1
    m = real * 2.0 ** (31 - shift)
    q = math.floor(m + 0.5)  # m > 0: half away from zero
    if q == 2**31:
        q, shift = q // 2, shift + 1
    return q, shift


@pytest.mark.parametrize("real", [0.5, 0.25, 0.75, 1.0, 1.5, 3.0e-3, 1.2345e-5, 0.99999999999, 7.9])
def test_quantize_multiplier_matches_independent_form(real):
    assert quantization.quantize_multiplier(real) == _reference_multiplier(real)


def test_quantize_multiplier_edges():
    assert quantization.quantize_multiplier(0.0) == (0, 0)
    assert quantization.quantize_multiplier(2.0**-40) == (0, 0)  # below 2**-31: flushed
    assert quantization.quantize_multiplier(2.0**35) == (2**31 - 1, 30)  # saturated
    with pytest.raises(ValueError, match=">= 0"):
        quantization.quantize_multiplier(-1.0)


def test_per_channel_multipliers_use_double_products_of_float32_scales():
    in_s, out_s = np.float32(0.0193), np.float32(0.0131)
    w_s = np.array([0.0031, 0.0042, 0.0007], dtype=np.float32)
    mult, shift = quantization.per_channel_multipliers(in_s, w_s, out_s, 3)
    for c in range(3):
        real = float(in_s) * float(w_s[c]) / float(out_s)
        assert (mult[c], shift[c]) == _reference_multiplier(real)
    # Per-tensor scales are replicated to every output channel.
    m1, s1 = quantization.per_channel_multipliers(in_s, w_s[:1], out_s, 4)
    assert len(set(m1.tolist())) == 1 and m1[0] == mult[0] and s1[0] == shift[0]
    with pytest.raises(ValueError, match="expected 1 or 5"):
        quantization.per_channel_multipliers(in_s, w_s, out_s, 5)


def test_activation_range_like_tflite():
    assert quantization.activation_range(quantization.ACT_NONE, 0.05, 3) == (-128, 127)
    assert quantization.activation_range(quantization.ACT_RELU, 0.05, -128) == (-128, 127)
    assert quantization.activation_range(quantization.ACT_RELU, 0.05, -20) == (-20, 127)
    # 6 / 0.05 = 120 -> -128 + 120 = -8
    assert quantization.activation_range(quantization.ACT_RELU6, 0.05, -128) == (-128, -8)
    assert quantization.activation_range(quantization.ACT_RELU6, 0.01, -128) == (-128, 127)
    with pytest.raises(ValueError, match="fused activation 4"):
        quantization.activation_range(4, 0.05, 0)


# --------------------------------------------------------------------------------- cost model
def _profile(custom_unit, builtin_unit=100.0, dense_unit=1.0, min_speedup=1.2):
    return {
        "name": "test-profile",
        "min_speedup": min_speedup,
        "formats": {
            "dense": {d: {"fixed_ns": 0.0, "row_ns": 0.0, "unit_ns": dense_unit} for d in ("float32", "int8")},
            "builtin_sparse": {
                "float32": {"block": 4, "fixed_ns": 0.0, "row_ns": 0.0, "unit_ns": builtin_unit},
                "int8": {"block": 16, "fixed_ns": 0.0, "row_ns": 0.0, "unit_ns": builtin_unit},
            },
            "custom": {
                d: {"fixed_ns": 0.0, "row_ns": 0.0, "unit_ns": {str(g): custom_unit(g) for g in (1, 2, 4, 8, 16)}}
                for d in ("float32", "int8")
            },
        },
    }


def _layer(w, name="fc", dtype="float32", unsupported=None):
    return FCLayer(subgraph=0, op_index=0, name=name, input=0, weight=1, bias=-1, output=2,
                   in_features=w.shape[1], out_features=w.shape[0], dtype=dtype, activation=0,
                   weights=w, unsupported=unsupported)


def _group_sparse(out_f, in_f, g, sparsity, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_f, in_f)).astype(np.float32)
    dead = rng.random((out_f, -(-in_f // g))) < sparsity
    w[np.repeat(dead, g, axis=1)[:, :in_f]] = 0
    return w


@pytest.mark.parametrize("g", [2, 4, 8])
def test_planner_detects_the_pruning_group_width(g):
    # A group costs sqrt(g) weights' worth: wider groups pay off only when zeros fill them.
    cost = cost_model.CostModel(_profile(lambda k: math.sqrt(k)))
    d = planner.decide(_layer(_group_sparse(64, 128, g, 0.9, seed=g)), cost)
    assert (d.format, d.g) == ("custom", g)
    assert d.expected_speedup > 1.2 and "custom g=" in d.reason


def test_planner_keeps_dense_when_sparse_is_slower_and_says_why():
    cost = cost_model.CostModel(_profile(lambda k: 2.0 * k))  # a stored weight costs 2 dense ones
    d = planner.decide(_layer(_group_sparse(32, 64, 4, 0.3, seed=1)), cost)
    assert d.format == "dense" and d.g == 0
    assert d.reason.startswith("kept dense: best sparse choice") and "< 1.20x" in d.reason
    assert d.expected_speedup == 1.0


def test_planner_prefers_builtin_when_it_is_cheaper():
    cost = cost_model.CostModel(_profile(lambda k: 100.0 * k, builtin_unit=0.5))
    d = planner.decide(_layer(_group_sparse(32, 64, 4, 0.9, seed=2)), cost)
    assert (d.format, d.g) == ("builtin_sparse", 4)
    assert "best custom alternative" in d.reason
    # ... but not when the input dimension is not a multiple of the block.
    d = planner.decide(_layer(_group_sparse(32, 66, 2, 0.9, seed=3)), cost)
    assert d.format == "dense" and "not a multiple of the builtin block 4" in d.reason


def test_planner_hints_and_forcing():
    cost = cost_model.CostModel(_profile(lambda k: 2.0 * k))
    w = _group_sparse(32, 64, 4, 0.3, seed=4)
    forced = planner.decide(_layer(w), cost, group_size=8, force="custom")
    assert (forced.format, forced.g) == ("custom", 8) and "forced" in forced.reason
    assert planner.decide(_layer(w), cost, force="dense").reason == "kept dense: forced by formats="
    cheap = cost_model.CostModel(_profile(lambda k: 0.1))
    pinned = planner.decide(_layer(_group_sparse(32, 64, 4, 0.9, seed=5)), cheap, group_size=2)
    assert (pinned.format, pinned.g) == ("custom", 2) and "pinned" in pinned.reason
    with pytest.raises(ValueError, match=r"layer 'fc': group size 3 not in \(1, 2, 4, 8, 16\)"):
        planner.decide(_layer(w), cost, group_size=3)
    with pytest.raises(ValueError, match=r"layer 'fc': format 'csr' not in"):
        planner.decide(_layer(w), cost, force="csr")


def test_planner_unsupported_and_all_zero_layers_stay_dense():
    cost = cost_model.CostModel(_profile(lambda k: 0.1))
    w = _group_sparse(8, 16, 4, 0.9, seed=6)
    d = planner.decide(_layer(w, unsupported="fused activation tanh not supported"), cost)
    assert d.format == "dense" and d.reason == "kept dense: fused activation tanh not supported"
    with pytest.raises(ValueError, match="cannot force custom: fused activation tanh"):
        planner.decide(_layer(w, unsupported="fused activation tanh not supported"), cost, force="custom")
    z = planner.decide(_layer(np.zeros((8, 16), np.float32)), cost)
    assert z.format == "dense" and "all weights are zero" in z.reason


def test_target_profiles_load_and_calibrate(tmp_path):
    cm = cost_model.load("x86-avx2")
    assert cm.builtin_block("float32") == 4 and cm.builtin_block("int8") == 16
    with pytest.raises(ValueError, match=r"unknown target 'nope'; allowed: \['arm-neon', 'cortex-m4', "
                                         r"'cortex-m7', 'x86-avx2', 'x86-avx512'\]"):
        cost_model.load("nope")
    # Profiles are data in the target registry; borrowed ones say whose numbers they are.
    assert cost_model.load("cortex-m7").borrowed_from == "cortex-m4"
    assert cost_model.load("cortex-m7").profile["formats"] == cost_model.load("cortex-m4").profile["formats"]
    for own in ("x86-avx2", "x86-avx512", "arm-neon", "cortex-m4"):
        assert cost_model.load(own).borrowed_from is None
    assert cost_model.load("arm-neon").time_unit == "cycles"
    with pytest.raises(ValueError, match="target 'cortex-m55' cannot be exported: no Helium"):
        cost_model.load("cortex-m55")
    with pytest.raises(ValueError, match=r"target 'gpu-ampere' has no cost profile .*\['2:4'\]"):
        cost_model.load("gpu-ampere")
    bad = dict(cm.to_dict())
    del bad["formats"]["custom"]["int8"]
    with pytest.raises(ValueError, match="invalid target profile"):
        cost_model.CostModel(bad)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_profile(lambda k: 1.0)))
    assert cost_model.load(str(path)).name == "test-profile"
    # Calibration recovers exact linear costs from synthetic "measurements".
    meas = [{"format": "custom", "dtype": "float32", "g": 4, "out": o, "units": u,
             "time_ns": 500 + 3 * o + 0.7 * u} for o, u in [(10, 100), (100, 50), (40, 4000), (7, 9)]]
    fitted = cost_model.calibrate(cm, meas)
    assert fitted.custom("float32", 4, 64, 1000).time_ns == pytest.approx(500 + 3 * 64 + 700)
    # Widths without measurements keep the base profile's per-group cost.
    assert fitted.profile["formats"]["custom"]["float32"]["unit_ns"]["8"] == \
        cm.profile["formats"]["custom"]["float32"]["unit_ns"]["8"]
    assert fitted.name == "x86-avx2-calibrated"


def test_calibration_measures_rows_and_fits_a_profile():
    """Timings themselves are not asserted (they depend on the machine's load); the fit is
    checked on exact synthetic rows, the measurement for its structure."""
    from tflite_export import calibrate

    rows = calibrate.measure_custom(points=((256, 64, 0.1), (128, 32, 0.5)),
                                    dtypes=("float32",), gs=(4,), repeats=1, iterations=5)
    assert len(rows) == 2 and all(r["time_ns"] > 0 and r["units"] > 0 for r in rows)
    assert {(r["format"], r["dtype"], r["g"]) for r in rows} == {("custom", "float32", 4)}
    # time = 100 + 3 * out + 0.5 * units exactly: the fit must recover these coefficients.
    synthetic = [{"format": "custom", "dtype": "float32", "g": 4, "out": out, "units": units,
                  "time_ns": 100.0 + 3.0 * out + 0.5 * units}
                 for out, units in ((64, 400), (32, 2000), (16, 800), (300, 5000))]
    base = cost_model.load("x86-avx2")
    fitted = calibrate.calibrated_profile(base, synthetic, name="host")
    custom = fitted.profile["formats"]["custom"]["float32"]
    assert fitted.name == "host"
    assert custom["unit_ns"]["4"] == pytest.approx(0.5, rel=1e-6)
    assert custom["row_ns"] == pytest.approx(3.0, rel=1e-6)
    assert custom["fixed_ns"] == pytest.approx(100.0 + calibrate.CUSTOM_NODE_OVERHEAD_NS, rel=1e-6)
    # Not measured: kept from the base profile.
    assert custom["unit_ns"]["8"] == base.profile["formats"]["custom"]["float32"]["unit_ns"]["8"]
    assert fitted.profile["formats"]["dense"] == base.profile["formats"]["dense"]


def test_calibrated_profile_errs_towards_dense():
    """Points no line fits: dense is scaled so that it is never predicted slower than measured,
    the custom op so that it is never predicted faster."""
    from tflite_export import calibrate

    dense = [(1024, 1024 * 1024, 47_000.0), (300, 784 * 300, 16_800.0), (100, 30_000, 3_000.0),
             (64, 16_384, 1_360.0)]
    custom = [(1024, 26_000, 9_200.0), (300, 5_800, 3_200.0), (100, 1_900, 2_000.0),
              (64, 380, 1_500.0)]
    rows = ([{"format": "dense", "dtype": "float32", "g": 0, "out": o, "units": u, "time_ns": t}
             for o, u, t in dense]
            + [{"format": "custom", "dtype": "float32", "g": 4, "out": o, "units": u, "time_ns": t}
               for o, u, t in custom])
    fitted = calibrate.calibrated_profile(cost_model.load("x86-avx2"), rows,
                                          add_node_overhead=False)
    for o, u, t in dense:
        assert fitted.dense("float32", u // o, o).time_ns <= t * (1 + 1e-9)
    for o, u, t in custom:
        assert fitted.custom("float32", 4, o, u).time_ns >= t * (1 - 1e-9)
    c = fitted.profile["formats"]["dense"]["float32"]
    assert min(c["fixed_ns"], c["row_ns"], c["unit_ns"]) >= 0 and c["unit_ns"] > 0


def test_calibrate_relative_follows_small_layers():
    """Counts spanning three orders of magnitude (the arm-neon profile's XNNPACK int8 points):
    absolute least squares lets the large layers' residuals set a fixed cost that prices the
    100x10 layer at 3.4x its count; relative=True keeps every point within 15 %."""
    pts = ((10, 1000, 79.0), (100, 30_000, 2886.0), (300, 235_200, 20_008.0), (1024, 1_048_576, 88_463.0))
    rows = [{"format": "dense", "dtype": "int8", "out": o, "units": u, "time_ns": t} for o, u, t in pts]
    base = cost_model.load("arm-neon")
    ratios = {rel: [cost_model.calibrate(base, rows, relative=rel).dense("int8", u // o, o).time_ns / t
                    for o, u, t in pts] for rel in (False, True)}
    assert ratios[False][0] > 3.0
    assert all(0.85 < r < 1.15 for r in ratios[True]), ratios[True]


def test_calibration_through_the_runtime_measures_every_format():
    """Each format's rows come from its one-layer model through the runtime's timer (here a
    synthetic one: the model's size), with the units the format stores."""
    from tflite_export import calibrate

    seen = []

    def timer(model_bytes, x):
        seen.append(x.dtype)
        return len(model_bytes) * 1e-9

    rows = calibrate.measure_formats(points=((64, 16, 0.25),), gs=(4, 16), timer=timer)
    kinds = [(r["format"], r["dtype"], r["g"]) for r in rows]
    assert kinds == [("dense", "float32", 0), ("builtin_sparse", "float32", 4),
                     ("custom", "float32", 4), ("custom", "float32", 16),
                     ("dense", "int8", 0), ("builtin_sparse", "int8", 16),
                     ("custom", "int8", 4), ("custom", "int8", 16)]
    assert len(seen) == len(rows) and set(seen) == {np.dtype(np.float32), np.dtype(np.int8)}
    dense = rows[0]
    assert dense["units"] == 64 * 16 and all(r["out"] == 16 for r in rows)
    # Sparse candidates store fewer bytes than the dense weights at 25 % group density.
    assert all(r["time_ns"] < dense["time_ns"] for r in rows[1:4])
    assert rows[2]["units"] < 16 * 16  # groups of 4 kept out of 16 per output


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import os

    from tflite_export.atomic import write_atomic

    umask = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "m.tflite"), b"abc")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.tflite").read_bytes() == b"abc"
    assert (tmp_path / "m.tflite").stat().st_mode & 0o777 == 0o644


def test_cortex_m4_profile_chooses_from_measured_cycles():
    """The cortex-m4 profile (cycles from QEMU, benchmarks/mcu/bench_mcu.py --fit): int8 only,
    no TFLite block-sparse on TFLite Micro; group-sparse wins from ~45 % group sparsity at g = 4."""
    cost = cost_model.load("cortex-m4")
    assert cost.time_unit == "cycles" and cost.dtypes == ("int8",)
    # The fit against --fit's counts of LeNet-300-100's fc1 (g = 4, 90 %: 5,880 groups, 130,548
    # cycles; dense 583,731): sparse 3.2 % over, dense exact.
    assert cost.custom("int8", 4, 300, 5880).time_ns == pytest.approx(130_548 * 1.0316, rel=1e-3)
    assert cost.dense("int8", 784, 300).time_ns == pytest.approx(583_731, rel=1e-6)
    d = planner.decide(_layer(_group_sparse(300, 784, 4, 0.92, seed=1), dtype="int8"), cost)
    assert (d.format, d.g, d.units) == ("custom", 4, 4590)
    assert d.reason == "custom g=4 predicted 5.13x vs dense on cortex-m4"
    d = planner.decide(_layer(_group_sparse(300, 784, 4, 0.5, seed=1), dtype="int8"), cost)
    assert (d.format, d.g) == ("custom", 4) and d.expected_speedup == pytest.approx(1.1412, abs=1e-4)
    d = planner.decide(_layer(_group_sparse(300, 784, 4, 0.2, seed=1), dtype="int8"), cost)
    assert d.format == "dense" and d.reason == (
        "kept dense: best sparse choice custom g=8 predicted 0.77x vs dense (< 1.10x required on "
        "cortex-m4); builtin block-sparse unusable: TFLite Micro's FULLY_CONNECTED has no sparse weights")
    with pytest.raises(ValueError, match="cannot force builtin_sparse: builtin block-sparse unusable: "
                                         "TFLite Micro's FULLY_CONNECTED"):
        planner.decide(_layer(_group_sparse(16, 64, 4, 0.9, seed=2), dtype="int8"), cost,
                       force="builtin_sparse")
    with pytest.raises(ValueError, match=r"target cortex-m4 has costs for int8 only, not float32 "
                                         r"\(export with quantize='int8'\)"):
        planner.decide(_layer(_group_sparse(16, 64, 4, 0.9, seed=2)), cost)
    with pytest.raises(ValueError, match="dtypes"):
        cost_model.CostModel({**cost.to_dict(), "dtypes": ["int4"]})
