"""target="host": candidates measured on this machine through an injected timer (synthetic
timings: no test depends on this CPU's speed), the never-slower rule, and the cache."""
import numpy as np
import pytest

from export_testlib import stripped_model
from tflite_export import converter, exporter, flatbuffer, host, host_info
from tflite_export.fc_layers import find_fully_connected


class SyntheticTimer:
    """Seconds from the model's structure, summed over its nodes: dense costs 1 ns a weight; a
    custom node costs ``custom_ns`` per byte of its parameter blob plus ``node_ns`` (once for a
    fused chain); TFLite's block-sparse FC is slow."""

    def __init__(self, custom_ns=0.2, node_ns=100.0):
        self.custom_ns, self.node_ns, self.calls = custom_ns, node_ns, 0

    def __call__(self, model_bytes, x):
        self.calls += 1
        model = flatbuffer.load(model_bytes)
        sg = model.subgraphs[0]
        ns = 0.0
        for op in sg.operators:
            if op.inputs is None or len(op.inputs) < 2:
                continue  # pooling and the like: free here
            w = sg.tensors[int(op.inputs[1])]
            if flatbuffer.custom_code(model, op) is not None:
                ns += self.custom_ns * int(np.prod(w.shape)) + self.node_ns
            else:
                ns += int(np.prod(w.shape)) * (5.0 if w.sparsity is not None else 1.0)
        return 1e-9 * ns


@pytest.fixture(scope="module")
def converted():
    model = stripped_model(64, [(32, "relu"), (10, None)], g=4, sparsity=0.9, seed=4)
    return model, converter.convert_keras(model)


def test_layer_model_holds_one_fully_connected(converted):
    model, tflite = converted
    fcs = find_fully_connected(flatbuffer.load(tflite))
    one = host.layer_model(tflite, fcs[1])
    (fc,) = find_fully_connected(one)
    assert (fc.in_features, fc.out_features) == (32, 10)
    np.testing.assert_array_equal(fc.weights, fcs[1].weights)
    assert [tm.tensorIndex for tm in one.signatureDefs[0].inputs] == [int(one.subgraphs[0].inputs[0])]


def test_selection_is_deterministic_and_never_slower(converted, tmp_path):
    model, tflite = converted
    timer = SyntheticTimer()
    measured = host.HostMeasurement(timer=timer, cache_dir=str(tmp_path), key="test-cpu | build 1")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    # The synthetic custom node costs its parameter blob's bytes: the smallest blob wins. The
    # second layer reads only the first one's output, so behind the custom first layer it is
    # timed fused (what it adds to the first layer's time: no second node cost), where g=1
    # wins; alone, g=2 won at 1.86x (0.17 us, node cost included). In the whole model, the
    # second layer is rewritten into the model as decided so far (the first one custom, fused):
    # the same saving, so both measurements agree.
    assert [(r.format, r.g) for r in result.layers] == [("custom", 4), ("custom", 1)]
    assert [r.reason for r in result.layers] == [
        "custom g=4 measured 5.37x vs dense (0.38 us vs 2.05 us, the slower of: alone 0.38 us, "
        "the dense layer plus the whole model's change -1.67 us; on test-cpu | build 1)",
        "custom g=1 measured 3.54x vs dense (0.09 us vs 0.32 us, the slower of: alone 0.09 us, "
        "the dense layer plus the whole model's change -0.23 us; on test-cpu | build 1; alone: "
        "each behind dense as custom g=4)"]
    assert [r.expected_speedup for r in result.layers] == [5.367, 3.54]
    assert "measured on this host (test-cpu | build 1)" in str(result)
    assert "whole model measured 5.02x vs dense (0.47 us vs 2.37 us)" in result.report.note
    assert result.report.note.endswith("fused into one node each: dense+dense_1")
    ops = flatbuffer.load(result.model_bytes).subgraphs[0].operators
    assert len(ops) == 1
    # Never slower: a custom node that costs more than dense keeps every layer dense.
    slow = host.HostMeasurement(timer=SyntheticTimer(custom_ns=50.0), cache_dir=str(tmp_path),
                                key="slow-cpu")
    kept = exporter.rewrite_tflite(tflite, target=slow, keras_model=model)
    assert [r.format for r in kept.layers] == ["dense", "dense"]
    assert kept.layers[0].reason == (
        "kept dense: best sparse choice builtin block-sparse 1x4 measured 0.20x vs dense "
        "(10.24 us vs 2.05 us, the slower of: alone 10.24 us, the dense layer plus the whole "
        "model's change +8.19 us; on slow-cpu), < 1.10x required")


def test_cache_hit_and_invalidation(converted, tmp_path):
    model, tflite = converted
    first = SyntheticTimer()
    a = host.HostMeasurement(timer=first, cache_dir=str(tmp_path), key="cpu A | build 1")
    ra = exporter.rewrite_tflite(tflite, target=a, keras_model=model)
    assert first.calls > 0 and a.measured == first.calls
    again = SyntheticTimer()
    b = host.HostMeasurement(timer=again, cache_dir=str(tmp_path), key="cpu A | build 1")
    rb = exporter.rewrite_tflite(tflite, target=b, keras_model=model)
    assert again.calls == 0 and b.measured == 0  # a second export costs nothing
    assert [(r.format, r.g) for r in rb.layers] == [(r.format, r.g) for r in ra.layers]
    rebuilt = SyntheticTimer()
    c = host.HostMeasurement(timer=rebuilt, cache_dir=str(tmp_path), key="cpu A | build 2")
    exporter.rewrite_tflite(tflite, target=c, keras_model=model)
    assert rebuilt.calls == first.calls  # a new kernel build (or CPU) measures anew
    assert a.path != c.path


def test_default_key_names_cpu_and_kernel_build(tmp_path):
    measured = host.HostMeasurement(timer=SyntheticTimer(), cache_dir=str(tmp_path))
    assert host_info.cpu_model() in measured.key and host_info.kernel_build() in measured.key
    assert measured.path.startswith(str(tmp_path))


def test_no_fused_timing_when_the_predecessor_output_has_two_readers(tmp_path):
    import keras

    rng = np.random.default_rng(8)
    x = keras.Input((32,))
    h = keras.layers.Dense(24, activation="relu", name="trunk")(x)
    y = keras.layers.Concatenate()([keras.layers.Dense(64, name="left")(h),
                                    keras.layers.Dense(64, name="right")(h)])
    model = keras.Model(x, y)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            k = layer.kernel.numpy()
            keep = np.repeat(rng.random((k.shape[0] // 4, k.shape[1])) < 0.2, 4, axis=0)
            layer.kernel.assign(k * keep)
    tflite = converter.convert_keras(model)
    measured = host.HostMeasurement(timer=SyntheticTimer(), cache_dir=str(tmp_path), key="cpu")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    assert {r.layer: r.format for r in result.layers} == {"trunk": "custom", "left": "custom",
                                                          "right": "custom"}
    # trunk's output feeds two layers: nothing is fused, so each layer is timed alone.
    assert not any("behind" in r.reason for r in result.layers)
    assert "fused into one node" not in result.report.note
    assert len(flatbuffer.load(result.model_bytes).subgraphs[0].operators) >= 3


def test_measured_profile_prices_a_budget_as_the_host_export_measures(tmp_path):
    """host_profile.measure times the model's layers with the injected timer; a plan priced
    with it predicts the host export's time exactly (one custom layer: nothing fused)."""
    import tfscalpel
    from tflite_export import host_profile

    model = stripped_model(64, [(32, "relu"), (10, None)], g=4, sparsity=0.0, seed=4)
    timer = SyntheticTimer()
    profile = host_profile.measure(model, "x86-avx2", sparsities=(0.75, 0.5), group_sizes=(4,),
                                   rounds=2, timer=timer)
    # 2 rounds x (the whole model, then each layer alone and each layer at 2 sparsities in the
    # whole model and alone, each next to the whole model again).
    assert timer.calls == 2 * (1 + 2 * (2 + 2 * 2 * 2))
    assert (profile["name"], profile["min_speedup"]) == ("x86-avx2-measured", host.MARGIN)
    measured = profile["measured"]["float32"]
    # Synthetic dense: 1 ns per weight, so the layers alone add up to the model (no model term).
    # Custom: the whole model's change from dense, plus dense alone = 0.2 ns per parameter-blob
    # byte + 100: 64x32 at 75 % / 50 % of its 512 groups keeps 128 / 256 (2,624 / 4,800 B),
    # 32x10 of 80 keeps 20 / 40 (610 / 950 B).
    assert measured["model_ns"] == 0.0
    assert measured["layers"] == {
        "64x32": {"dense_ns": 2048.0, "custom": {"4": [[128, pytest.approx(0.2 * 2624 + 100)],
                                                      [256, pytest.approx(0.2 * 4800 + 100)]]}},
        "32x10": {"dense_ns": 320.0, "custom": {"4": [[20, pytest.approx(0.2 * 610 + 100)],
                                                     [40, pytest.approx(0.2 * 950 + 100)]]}}}
    the_plan = tfscalpel.plan(model, "x86-avx2", profile=profile,
                              per_layer={n: {"group_size": 4} for n in ("dense", "dense_1")},
                              budget=tfscalpel.Budget(latency=0.5, sparsities=(0.5, 0.75)))
    alloc = the_plan.allocation
    # 0.5x of 2,368 ns: the first layer at 50 % (1,060 + 320) misses, at 75 % (624.8 + 320) fits.
    assert alloc.sparsities() == {"dense": 0.75}
    assert alloc.totals.latency == pytest.approx(944.8)
    for r in alloc.layers:
        if r.sparsity:  # what training would leave: the lowest-norm groups removed
            layer = model.get_layer(r.name)
            layer.kernel.assign(host_profile.group_pruned(layer.kernel.numpy().T, r.g, r.sparsity).T)
    result = exporter.export(model, target=host.HostMeasurement(
        timer=SyntheticTimer(), cache_dir=str(tmp_path), key="cpu"), group_sizes=alloc.group_sizes())
    assert [(r.format, r.g) for r in result.layers] == [("custom", 4), ("dense", 0)]
    assert 1e9 * SyntheticTimer()(result.model_bytes, None) == pytest.approx(944.8)


def test_group_pruned_removes_the_lowest_norm_groups_ragged_tail_included():
    from tflite_export import host_profile

    # [out, in] = 2 x 5, g = 2: groups (cols 0-1, 2-3, 4) per row; norms row 0: 5, 1, 3;
    # row 1: 0.5, 4, 2. 50 % of 6 groups: the 3 lowest go (0.5, 1, 2).
    w = np.array([[3, 4, 1, 0, 3], [0.5, 0, 0, 4, 2]], np.float32)
    np.testing.assert_array_equal(host_profile.group_pruned(w, 2, 0.5),
                                  [[3, 4, 0, 0, 3], [0, 0, 0, 4, 0]])
    with pytest.raises(ValueError, match=r"sparsities must lie in \(0, 1\)"):
        host_profile.measure(stripped_model(8, [(4, None)], 4, 0.0, 0), sparsities=(1.0,),
                             timer=SyntheticTimer())


def test_measured_times_are_made_non_decreasing_in_stored_groups():
    from tflite_export import host_profile

    # Each time lowered to the least at a larger stored count: 5 -> 3, 9 -> 7.
    assert host_profile.nondecreasing([2.0, 5.0, 3.0, 4.0, 9.0, 7.0]) == [2.0, 3.0, 3.0, 4.0, 7.0,
                                                                          7.0]
    assert host_profile.nondecreasing([1.0, 2.0]) == [1.0, 2.0]


def _conv_net(seed=3):
    """conv c1 (groups of 4 along kh*kw*cin pruned at 90 %) -> conv c2 (unpruned) -> fc."""
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((10, 10, 4)),
        keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(8, 3, name="c2"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="fc")])
    k, b = model.get_layer("c1").get_weights()
    flat = k.reshape(-1, 16)
    dead = np.repeat(rng.random((-(-flat.shape[0] // 4), 16)) < 0.9, 4, axis=0)[:flat.shape[0]]
    flat[dead] = 0.0
    model.get_layer("c1").set_weights([flat.reshape(k.shape), b])
    return model


def test_conv_layers_measured_in_the_whole_model_deterministic_and_never_slower(tmp_path):
    """target="host" decides each CONV_2D from the whole model timed dense and with that conv
    alone rewritten (interleaved, best of host.CONV_ROUNDS), plus the conv alone dense: c1
    (90 % group-sparse) becomes the conv op, c2 (unpruned) stays dense; with a slow custom
    node every conv stays dense; the cache serves a second export."""
    model = _conv_net()
    tflite = converter.convert_keras(model)
    timer = SyntheticTimer()
    measured = host.HostMeasurement(timer=timer, cache_dir=str(tmp_path), key="conv-cpu")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    rows = {r.layer: r for r in result.layers}
    assert [(rows[n].format, rows[n].g) for n in ("c1", "c2")] == [("custom_conv", 1), ("dense", 0)]
    # The synthetic custom node costs its blob's bytes (g = 1 stores the fewest); c2's best
    # saves 3 % of its time, under the 1.10x margin: dense.
    assert rows["c1"].reason == (
        "custom_conv g=1 measured 2.36x vs dense (0.24 us vs 0.58 us, the slower of: alone "
        "0.24 us, the dense conv plus the whole model's change -0.33 us; on conv-cpu)")
    assert rows["c2"].reason == (
        "kept dense: best sparse choice custom_conv g=16 measured 1.03x vs dense (1.12 us vs "
        "1.15 us, the slower of: alone 1.12 us, the dense conv plus the whole model's change "
        "-0.03 us; on conv-cpu), < 1.10x required")
    ops = [flatbuffer.custom_code(flatbuffer.load(result.model_bytes), op)
           for op in flatbuffer.load(result.model_bytes).subgraphs[0].operators]
    assert ops.count("TFS_GROUP_SPARSE_CONV2D") == 1
    calls = timer.calls
    # 3 rounds each of: the whole dense model, then the other candidates each behind it again.
    # FC: alone dense and 6 candidates alone and in the whole model (3 x 27); per conv: the conv
    # alone and 5 widths in the whole model and alone (3 x 23); the confirmation (3 x 3).
    assert calls == 3 * 27 + 2 * 3 * 23 + 3 * 3
    again = host.HostMeasurement(timer=timer, cache_dir=str(tmp_path), key="conv-cpu")
    assert exporter.rewrite_tflite(tflite, target=again, keras_model=model).model_bytes == result.model_bytes
    assert timer.calls == calls and again.measured == 0
    slow = host.HostMeasurement(timer=SyntheticTimer(custom_ns=50.0), cache_dir=str(tmp_path),
                                key="slow-conv-cpu")
    kept = exporter.rewrite_tflite(tflite, target=slow, keras_model=model)
    assert {r.layer: r.format for r in kept.layers} == {"c1": "dense", "c2": "dense", "fc": "dense"}
    assert kept.layers[-1].reason.startswith("kept dense: best sparse choice custom_conv g=")
    forced = exporter.rewrite_tflite(tflite, target=slow, keras_model=model,
                                     formats={"c1": "custom_conv"}, group_sizes={"c1": 4})
    row = {r.layer: r for r in forced.layers}["c1"]
    assert (row.format, row.g) == ("custom_conv", 4) and row.reason.endswith("(forced by formats=)")
    with pytest.raises(ValueError, match="format 'custom' not in"):
        exporter.rewrite_tflite(tflite, target=slow, keras_model=model, formats={"c1": "custom"})


class FlatteringTimer(SyntheticTimer):
    """A busy spell that flatters every whole model holding the conv op by 0.5 us."""

    def __call__(self, model_bytes, x):
        model = flatbuffer.load(model_bytes)
        ops = model.subgraphs[0].operators
        custom = [flatbuffer.custom_code(model, op) for op in ops]
        flatter = 0.5e-6 if len(ops) > 1 and "TFS_GROUP_SPARSE_CONV2D" in custom else 0.0
        return super().__call__(model_bytes, x) - flatter


def test_conv_candidate_counts_its_slower_measurement(tmp_path):
    """c2 measures 1.03x alone; flattered by 0.5 us in the whole model it would pass as 1.85x:
    the slower of the two measurements counts, and it stays dense."""
    model = _conv_net()
    tflite = converter.convert_keras(model)
    measured = host.HostMeasurement(timer=FlatteringTimer(), cache_dir=str(tmp_path), key="busy")
    rows = {r.layer: r for r in exporter.rewrite_tflite(tflite, target=measured, keras_model=model).layers}
    assert rows["c2"].format == "dense"
    assert rows["c2"].reason == (
        "kept dense: best sparse choice custom_conv g=16 measured 1.03x vs dense (1.12 us vs "
        "1.15 us, the slower of: alone 1.12 us, the dense conv plus the whole model's change "
        "-0.53 us; on busy), < 1.10x required")
    assert (rows["c1"].format, rows["c1"].g) == ("custom_conv", 1)


def test_host_conv_export_runs_and_matches_dense(tmp_path):
    """The host export's conv op (float32) runs on the host runtime like the dense model."""
    from tflite_export import runtime
    from tflite_export.quiet import filtered_stderr, litert_noise

    model = _conv_net()
    tflite = converter.convert_keras(model)
    measured = host.HostMeasurement(timer=SyntheticTimer(), cache_dir=str(tmp_path), key="cpu")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    assert {r.layer: r.format for r in result.layers}["c1"] == "custom_conv"
    x = np.random.default_rng(0).random((2, 10, 10, 4), dtype=np.float32)
    with filtered_stderr(litert_noise):
        got = runtime.load(result.model_bytes).run(x)[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


class FlatteringAloneTimer(SyntheticTimer):
    """A busy spell that flatters every one-node model of a custom op 20x: the layer alone."""

    def __call__(self, model_bytes, x):
        model = flatbuffer.load(model_bytes)
        ops = model.subgraphs[0].operators
        flatter = len(ops) == 1 and flatbuffer.custom_code(model, ops[0]) is not None
        return super().__call__(model_bytes, x) / (20.0 if flatter else 1.0)


def test_fc_candidate_flattered_in_one_measurement_stays_dense(converted, tmp_path):
    """With a slow custom node (0.29x in the whole model) flattered 20x alone (5.7x), the
    slower of the two measurements counts: both layers stay dense."""
    model, tflite = converted
    measured = host.HostMeasurement(timer=FlatteringAloneTimer(custom_ns=5.0),
                                    cache_dir=str(tmp_path), key="busy")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    assert [r.format for r in result.layers] == ["dense", "dense"]
    assert result.layers[0].reason == (
        "kept dense: best sparse choice custom g=4 measured 0.29x vs dense (7.14 us vs 2.05 us, "
        "the slower of: alone 0.36 us, the dense layer plus the whole model's change +5.09 us; on "
        "busy), < 1.10x required")


class ZeroMarginalTimer(SyntheticTimer):
    """A cut-out model (``host.layer_model``: input named x) of the second layer fused behind
    the first costs ``first_s``, the first layer's time alone: the second one adds 0."""

    def __init__(self, first_s: float, whole_too: bool = False):
        super().__init__()
        self.first_s, self.whole_too = first_s, whole_too  # whole_too: any such fused model

    def __call__(self, model_bytes, x):
        model = flatbuffer.load(model_bytes)
        sg = model.subgraphs[0]
        cut_out = self.whole_too or model.signatureDefs[0].inputs[0].name == b"x"
        fused = cut_out and len(sg.operators) == 1 \
            and flatbuffer.custom_code(model, sg.operators[0]) is not None \
            and sg.tensors[int(sg.inputs[0])].shape[-1] == 64 \
            and sg.tensors[int(sg.outputs[0])].shape[-1] == 10
        return self.first_s if fused else super().__call__(model_bytes, x)


def test_a_marginal_time_of_zero_is_no_speedup(converted, tmp_path):
    """Behind the fused first layer (custom g=4) the second one adds 0 us: that measures
    nothing (it used to count as 1 ns, a 320x speedup); the whole model's measurement counts
    alone."""
    from tflite_export import formats

    model, tflite = converted
    first_s = host.HostMeasurement(timer=SyntheticTimer(), cache_dir=str(tmp_path), key="one").time_candidate(
        tflite, find_fully_connected(flatbuffer.load(tflite))[0], formats.get("custom"), 4)
    measured = host.HostMeasurement(timer=ZeroMarginalTimer(first_s), cache_dir=str(tmp_path),
                                    key="zero")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    assert [(r.format, r.g) for r in result.layers] == [("custom", 4), ("custom", 1)]
    assert result.layers[1].reason == (
        "custom g=1 measured 3.54x vs dense (0.09 us vs 0.32 us, the slower of: alone 0.00 us, "
        "the dense layer plus the whole model's change -0.23 us; on zero; alone: each behind "
        "dense as custom g=4)")
    assert result.layers[1].expected_speedup == 3.54
    # The whole model with it fused costs the first layer alone too: no custom candidate has a
    # credible measurement (0 us and 0 us, under dense / 50), so none can win; the best credible
    # one (TFLite's block-sparse FC) is slower than dense, and the layer stays dense.
    nothing = host.HostMeasurement(timer=ZeroMarginalTimer(first_s, whole_too=True),
                                   cache_dir=str(tmp_path), key="nothing")
    result = exporter.rewrite_tflite(tflite, target=nothing, keras_model=model)
    assert [(r.format, r.g) for r in result.layers] == [("custom", 4), ("dense", 0)]
    assert result.layers[1].reason == (
        "kept dense: best sparse choice builtin block-sparse 1x4 measured 0.20x vs dense (1.60 us "
        "vs 0.32 us, the slower of: alone 1.60 us, the dense layer plus the whole model's change "
        "+1.28 us; on nothing; alone: each behind dense as custom g=4), < 1.10x required")


class SlowModelTimer(SyntheticTimer):
    """Synthetic times, plus 5 us for one given model (the exported one)."""

    def __init__(self, slow: bytes):
        super().__init__()
        self.slow = slow

    def __call__(self, model_bytes, x):
        return super().__call__(model_bytes, x) + (5e-6 if bytes(model_bytes) == self.slow else 0.0)


def test_whole_model_slower_than_dense_reverts_the_least_gain_first(converted, tmp_path):
    """Both layers win alone and in the model as decided, but the exported model measures
    slower than dense: the second layer (3.54x, the lesser gain) goes back to dense, and the
    model without it is faster than dense."""
    model, tflite = converted
    first = exporter.rewrite_tflite(tflite, keras_model=model, target=host.HostMeasurement(
        timer=SyntheticTimer(), cache_dir=str(tmp_path), key="fast"))
    assert [(r.format, r.g) for r in first.layers] == [("custom", 4), ("custom", 1)]
    measured = host.HostMeasurement(timer=SlowModelTimer(first.model_bytes),
                                    cache_dir=str(tmp_path), key="slow-whole")
    result = exporter.rewrite_tflite(tflite, target=measured, keras_model=model)
    assert [(r.format, r.g) for r in result.layers] == [("custom", 4), ("dense", 0)]
    assert result.layers[0].reason == first.layers[0].reason.replace("fast", "slow-whole")
    assert result.layers[1].reason == (
        "kept dense: reverted, the whole model measured 0.43x vs dense (5.47 us vs 2.37 us) with "
        "it, slower than dense; per layer: " + first.layers[1].reason.replace("fast", "slow-whole"))
    assert "whole model measured 3.38x vs dense (0.70 us vs 2.37 us), 1 sparse choice(s) " \
           "reverted" in result.report.note
    again = SlowModelTimer(first.model_bytes)
    cached = exporter.rewrite_tflite(tflite, keras_model=model, target=host.HostMeasurement(
        timer=again, cache_dir=str(tmp_path), key="slow-whole"))
    assert again.calls == 0 and cached.model_bytes == result.model_bytes  # the confirmation too


def test_measured_profile_times_each_conv_and_a_budget_group_prunes_convs():
    """host_profile.measure times each CONV_2D as it does a FULLY_CONNECTED (dense alone; the
    whole model with that conv alone in TFS_GROUP_SPARSE_CONV2D at each sparsity, interleaved),
    and a host latency budget priced with it group-prunes the convs (the CPU target node-prunes
    them otherwise) at exactly the measured, interpolated times."""
    import keras

    import tfscalpel
    from tfscalpel import layer_costs
    from tflite_export import host_profile

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((10, 10, 4)),
        keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(8, 3, name="c2"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="fc")])
    timer = SyntheticTimer()
    profile = host_profile.measure(model, "x86-avx2", sparsities=(0.5, 0.75), rounds=2, timer=timer)
    # 2 rounds x (the whole model, then 3 layers alone and 3 layers at 2 sparsities in the whole
    # model and alone, each next to the whole model again).
    assert timer.calls == 2 * (1 + 2 * (3 + 3 * 2 * 2))
    measured = profile["measured"]["float32"]
    # Synthetic dense: 1 ns per weight (c1 36 x 16, c2 144 x 8, fc 288 x 10); the model term is
    # the Flatten's ops (STRIDED_SLICE, PACK, RESHAPE: 1 + 1 + 2 ns by their second inputs here).
    # Custom: 0.2 ns per blob byte + 100. At g = 8, c1 has 5 groups per filter (80), c2 18
    # (144): 75 % / 50 % keep 20 / 40 and 36 / 72; blobs 1,152 / 1,872 and 1,584 / 2,808 B
    # (padded to whole blob rows: 144 for c1's 16 filters x 3 x 3 VALID window, 72 for c2).
    assert measured["model_ns"] == pytest.approx(4.0)
    assert {k: v for k, v in measured["layers"].items() if k.startswith("conv:")} == {
        "conv:36x16@64": {"dense_ns": pytest.approx(576.0), "custom": {"8": [
            [20, pytest.approx(0.2 * 1152 + 100)], [40, pytest.approx(0.2 * 1872 + 100)]]}},
        "conv:144x8@36": {"dense_ns": pytest.approx(1152.0), "custom": {"8": [
            [36, pytest.approx(0.2 * 1584 + 100)], [72, pytest.approx(0.2 * 2808 + 100)]]}}}
    assert measured["layers"]["288x10"]["dense_ns"] == pytest.approx(2880.0)
    # A busy spell flattering every whole model holding the conv op by 0.5 us: the conv alone
    # is the slower measurement, and it counts (as export(target="host") counts it).
    busy = host_profile.measure(model, "x86-avx2", sparsities=(0.5, 0.75), rounds=2,
                                timer=FlatteringTimer())["measured"]["float32"]["layers"]
    assert all([n, pytest.approx(t)] == [m, u] for k in busy for g in busy[k]["custom"]
               for (n, t), (m, u) in zip(busy[k]["custom"][g], measured["layers"][k]["custom"][g]))
    assert {k: len(v["custom"]["8"]) for k, v in busy.items()} == {
        "288x10": 2, "conv:36x16@64": 2, "conv:144x8@36": 2}
    the_plan = tfscalpel.plan(model, "x86-avx2", profile=profile,
                              budget=tfscalpel.Budget(latency=0.5, sparsities=(0.5, 0.75)))
    methods = {p.name: p.method for p in tfscalpel.plan(model, "x86-avx2").layers}
    assert (methods["c1"], methods["c2"]) == ("node", "node")
    # The knapsack (magnitude proxy): c2 at 50 % (661.6 ns), fc at 75 % (90 stored groups,
    # a 3,240 B blob: 748 ns); c1, the cheapest conv, is left dense.
    assert [(p.name, p.method) for p in the_plan.layers] == [("c1", "none"), ("c2", "group"),
                                                           ("fc", "group")]
    assert the_plan.allocation.sparsities() == {"c2": 0.5, "fc": 0.75}
    assert the_plan.allocation.totals.latency == pytest.approx(4 + 576 + 661.6 + 748)
    rows = {r.name: r for r in the_plan.allocation.layers}
    assert all(r.note == "" for r in rows.values())  # every layer allocated, none fixed dense
    costs = layer_costs.ProfileCosts(tfscalpel.get_target("x86-avx2"), profile)
    c2 = layer_costs.LayerShape.of(model.get_layer("c2"), "conv", 144)
    # Between the measured points linearly: 60 % of 144 groups leaves 58.
    assert [(o.stored_groups, o.format, o.costs.latency) for o in
            (costs.option(c2, s, 8) for s in (0.5, 0.6, 0.75))] == [
        (72, "custom_conv", pytest.approx(661.6)), (58, "custom_conv", pytest.approx(
            416.8 + (58 - 36) * (661.6 - 416.8) / 36)), (36, "custom_conv", pytest.approx(416.8))]
    assert the_plan.allocation.dense_totals.latency == pytest.approx(4 + 576 + 1152 + 2880)


def test_interleaved_best_pairs_each_candidate_with_the_reference_timed_beside_it():
    # Each round: the reference, then each candidate behind the reference again. A quiet moment
    # flattered the reference's first timing (5 ns): each change is from the reference timed
    # just before the candidate, per round.
    times = iter([5.0, 10.0, 12.0, 8.0, 9.0,
                  10.0, 10.0, 13.0, 9.0, 7.0])
    paired = {}
    best = host.interleaved_best(lambda b, x: 1e-9 * next(times),
                                 [("ref", b"", None), ("a", b"", None), ("b", b"", None)], 2, paired)
    assert best == {"ref": pytest.approx(5.0), "a": pytest.approx(12.0), "b": pytest.approx(7.0)}
    assert paired == {"a": [pytest.approx(2.0), pytest.approx(3.0)],
                      "b": [pytest.approx(1.0), pytest.approx(-2.0)]}
