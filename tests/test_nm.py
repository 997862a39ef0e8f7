"""2:4 recipe (prune_2_4: skip rule, fixed mask, channel permutation) and the check_nm validators
on Keras models (tfscalpel.check_nm), .tflite files and the command line (tflite_export.check)."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfscalpel
from tfscalpel import nm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mixed_model():
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c_in3")(x)   # cin 3
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c_in8")(x)  # cin 8
    x = keras.layers.Conv2D(6, 1, name="c_in12")(x)                                     # cin 12
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(30, activation="relu", name="d_in384")(x)
    x = keras.layers.Dense(10, name="d_in30")(x)                                        # 30 % 4
    return keras.Model(inputs, x)


def _window_nnz_per_cin(kernel):
    """Nonzeros per window of 4 along cin at every (kh, kw, cout): Conv2D (kh, kw, cin, cout)."""
    kh, kw, cin, cout = kernel.shape
    return np.count_nonzero(kernel.reshape(kh, kw, cin // 4, 4, cout), axis=3)


def test_skip_rule_and_conv_windows_run_along_cin():
    model = _mixed_model()
    pruned, plan = tfscalpel.prune_2_4(model)
    assert plan.pruned == ["c_in8", "c_in12", "d_in384"]
    assert set(plan.skipped) == {"c_in3", "d_in30"}
    assert "straddle" in plan.skipped["c_in3"] and plan.skipped["d_in30"] == "in = 30 is not a multiple of 4"
    assert "skipped" in str(plan)
    by_name = {layer.name: layer for layer in pruned.layers}
    assert isinstance(by_name["c_in8"], tfscalpel.GroupPrunedConv2D)
    assert type(by_name["c_in3"]) is keras.layers.Conv2D  # skipped layers are not wrapped at all
    np.testing.assert_array_equal(by_name["c_in3"].kernel, model.get_layer("c_in3").kernel)
    for name in ("c_in8", "c_in12"):
        k = np.asarray(by_name[name].masked_kernel())
        # exactly 2 of every 4 cin at each kernel position (magnitude: random weights have no ties)
        assert (_window_nnz_per_cin(k) == 2).all()
        orig = np.abs(np.asarray(model.get_layer(name).kernel))
        kept = k != 0
        w = orig.reshape(orig.shape[0], orig.shape[1], -1, 4, orig.shape[3])
        kw = kept.reshape(w.shape)
        # the kept two are the two largest |w| of each window
        assert (np.where(kw, w, np.inf).min(axis=3) >= np.where(kw, -np.inf, w).max(axis=3)).all()
    report = tfscalpel.check_nm(tfscalpel.strip(pruned))
    status = {c.name: c.status for c in report.layers}
    assert status == {"c_in3": "skipped", "c_in8": "n:m", "c_in12": "n:m", "d_in384": "n:m",
                      "d_in30": "skipped"}
    assert report.ok


def test_plan_and_plan_2_4_agree_on_every_layer():
    """One 2:4 rule (tfscalpel.nm_rule): the planner's 2:4 choice and prune_2_4's plan agree on
    every layer, including a 2x2 convolution with cin = 2, whose kh*kw*cin = 8 is a multiple of 4
    although its windows would straddle kernel positions. Every layer reads a model input and
    is a model output, so the planner's own conditions (fixed input, no node pruning of outputs)
    leave the shape rule as the only one."""
    i1, i2, i3, i4 = (keras.Input((6, 6, 2)), keras.Input((6, 6, 8)), keras.Input((30,)),
                      keras.Input((32,)))
    outputs = [keras.layers.Conv2D(4, 2, name="c2x2_cin2")(i1),
               keras.layers.Conv2D(4, 3, name="c3x3_cin8")(i2),
               keras.layers.Conv2D(4, 1, groups=2, name="grouped")(i2),
               keras.layers.Dense(4, name="d30")(i3), keras.layers.Dense(4, name="d32")(i4)]
    model = keras.Model([i1, i2, i3, i4], outputs)
    gpu = tfscalpel.plan(model, "gpu-ampere")
    recipe = nm.plan_2_4(model)
    assert recipe.pruned == ["c3x3_cin8", "d32"]
    # The planner leaves grouped convolutions out of its plan: not 2:4 either.
    assert {p.name: p.method for p in gpu.layers} == {
        "c2x2_cin2": "none", "c3x3_cin8": "2:4", "d30": "none", "d32": "2:4"}
    methods = {p.name: p.method for p in gpu.layers}
    for p in recipe.layers:
        assert (methods.get(p.name) == "2:4") == p.eligible, p
        if p.name in methods and not p.eligible:
            assert gpu[p.name].reason.endswith(f"; {p.reason}: no 2:4")
    assert recipe.skipped["c2x2_cin2"] == ("cin = 2 is not a multiple of 4: windows would "
                                           "straddle kernel positions")
    assert recipe.skipped["grouped"] == "grouped convolution (groups=2) is not one GEMM"


def test_stricter_asp_rule_and_no_eligible_layer():
    model = _mixed_model()
    plan = nm.plan_2_4(model, k_multiple=16, out_multiple=8)  # apex ASP's fp16 rule
    assert plan.pruned == []
    assert plan.skipped["c_in8"] == "K=8 not a multiple of 16"
    assert plan.skipped["d_in384"] == "out=30 not a multiple of 8"
    ok = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, name="d")])
    assert nm.plan_2_4(ok, k_multiple=16, out_multiple=8).pruned == ["d"]
    model2 = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="no layer is N:M-eligible"):
        tfscalpel.prune_2_4(model2)


def test_mask_stays_fixed_while_fine_tuning():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(4)])
    pruned, _ = tfscalpel.prune_2_4(model)
    masks = [np.asarray(layer.pruning_mask) for layer in tfscalpel.pruned_layers(pruned)]
    pruned.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    before = [np.asarray(layer.kernel).copy() for layer in tfscalpel.pruned_layers(pruned)]
    pruned.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])
    for layer, mask, k0 in zip(tfscalpel.pruned_layers(pruned), masks, before):
        np.testing.assert_array_equal(np.asarray(layer.pruning_mask), mask)
        assert not np.allclose(np.asarray(layer.kernel) * mask, k0)  # it did train
    assert tfscalpel.check_nm(tfscalpel.strip(pruned)).ok


def test_channel_permutation_keeps_function_and_more_magnitude():
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="p"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(8, name="c")])
    # Make the layout adversarial: large weights clustered in the same windows.
    k = rng.standard_normal((16, 8)).astype(np.float32) * 0.05
    k[0:4] *= 40  # four large input channels in one window: 2:4 must drop two of them
    model.get_layer("c").kernel.assign(k)
    x = rng.standard_normal((5, 12)).astype(np.float32)
    y0 = model(x).numpy()
    before = nm.kept_magnitude(np.asarray(model.get_layer("c").kernel))
    gains = nm.permute_channels(model, ["c"], seed=0)
    after = nm.kept_magnitude(np.asarray(model.get_layer("c").kernel))
    np.testing.assert_allclose(model(x).numpy(), y0, rtol=1e-5, atol=1e-5)
    assert gains["c"] == pytest.approx((before, after)) and after > before + 0.15
    assert nm.permute_channels(model, ["p"]) == {}  # fed by the model input: left alone
    # Through the recipe (on a fresh adversarial copy): the plan reports the gain.
    model.get_layer("c").kernel.assign(k)
    model.get_layer("p").kernel.assign(rng.standard_normal((12, 16)).astype(np.float32))
    pruned, plan = tfscalpel.prune_2_4(model, permute=True)
    assert plan.permutation_gain["c"][1] > plan.permutation_gain["c"][0] + 0.15
    assert "channel permutation" in str(plan)
    np.testing.assert_array_equal(np.asarray(model.get_layer("c").kernel), k)  # input untouched


def test_check_nm_keras_reports_first_offender():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="d")])
    k = np.zeros((8, 3), np.float32)
    k[[0, 1], :] = 1.0               # window 0: 2 nonzeros per unit -> fine
    k[[4, 5, 7], 2] = 1.0            # unit 2, window at input 4: 3 nonzeros
    model.get_layer("d").kernel.assign(k)
    report = tfscalpel.check_nm(model)
    (c,) = report.layers
    assert c.status == "not n:m" and c.first_offender == (2, 4, 3) and c.bad_windows == 1
    assert not report.ok and "output 2, window at input 4 has 3 nonzeros" in str(report)
    assert tfscalpel.check_nm(model, n=3, m=4).ok


def test_check_nm_conv_offender_position():
    model = keras.Sequential([keras.Input((5, 5, 8)), keras.layers.Conv2D(2, 3, name="c")])
    k = np.zeros((3, 3, 8, 2), np.float32)
    k[1, 2, 4:7, 1] = 1.0  # 3 nonzeros in cin window 4..7 at position (1, 2), filter 1
    model.get_layer("c").kernel.assign(k)
    (c,) = tfscalpel.check_nm(model).layers
    assert c.first_offender == (1, (1, 2, 4), 3)


@pytest.fixture(scope="module")
def nm_files(tmp_path_factory):
    """A stripped 2:4 model exported three ways: dense .tflite (builtin FC holding 2:4 weights),
    TFS_NM_SPARSE_FC .tflite, and the unpruned dense .tflite."""
    from tflite_export import converter, nm_export

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, activation="relu", name="a"),
                              keras.layers.Dense(8, name="b")])
    pruned, _ = tfscalpel.prune_2_4(model)
    sparse = tfscalpel.strip(pruned)
    d = tmp_path_factory.mktemp("nm")
    paths = {"dense": d / "dense.tflite", "nm_builtin": d / "nm_builtin.tflite",
             "nm_custom": d / "nm_custom.tflite"}
    paths["dense"].write_bytes(converter.convert_keras(model))
    result = nm_export.export_nm(sparse, output=str(paths["nm_custom"]))
    paths["nm_builtin"].write_bytes(result.dense_model_bytes)
    return paths


def test_check_nm_tflite_files(nm_files):
    from tflite_export import check_nm

    good = check_nm(nm_files["nm_builtin"])
    assert good.ok and [c.kind for c in good.layers] == ["FULLY_CONNECTED"] * 2
    custom = check_nm(str(nm_files["nm_custom"]))
    assert custom.ok and [c.name for c in custom.layers] == ["a", "b"]
    assert {c.kind for c in custom.layers} == {"TFS_NM_SPARSE_FC"}
    assert check_nm(nm_files["nm_custom"].read_bytes()).ok
    bad = check_nm(nm_files["dense"])
    assert not bad.ok and all(c.status == "not n:m" for c in bad.layers)
    # The training side checks Keras models only: a .tflite is the deployment side's.
    with pytest.raises(TypeError, match="tflite_export.check_nm"):
        tfscalpel.check_nm(nm_files["dense"])


def _corrupt_positions(path, out_path):
    """Write a copy of a TFS_NM_SPARSE_FC model whose first window has positions (1, 1)."""
    from tflite_export import flatbuffer, params_blob

    model = flatbuffer.load(path.read_bytes())
    sg = model.subgraphs[0]
    t = next(t for t in sg.tensors if t.name.decode().endswith("/tfs_nm_params"))
    sections = params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"]
    blob = np.asarray(model.buffers[t.buffer].data, np.uint8).reshape(t.shape)
    arrays = params_blob.unpack_params(blob, sections)
    arrays["indices"][0] = (arrays["indices"][0] & 0xF0) | 0b0101
    model.buffers[t.buffer].data = params_blob.pack_params(arrays, int(t.shape[0]), sections).ravel()
    out_path.write_bytes(flatbuffer.save(model))


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tflite_export.check", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_check_nm_rejects_corrupt_custom_node(nm_files, tmp_path):
    from tflite_export import check_nm

    corrupt = tmp_path / "corrupt.tflite"
    _corrupt_positions(nm_files["nm_custom"], corrupt)
    report = check_nm(corrupt)
    assert [c.status for c in report.layers] == ["invalid", "n:m"] and not report.ok
    assert "not increasing" in report.layers[0].reason and "invalid" in str(report)


def test_check_nm_cli_exit_codes(nm_files, tmp_path):
    ok = _cli(nm_files["nm_custom"])
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert "OK: every eligible layer is 2:4" in ok.stdout
    bad = _cli(nm_files["dense"])
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "first: output" in bad.stdout
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    unreadable = _cli(garbage)
    assert unreadable.returncode == 2 and "cannot check" in unreadable.stderr
