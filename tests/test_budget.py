"""Prune to a budget (tfscalpel.Budget): allocations on a toy model whose costs are computed by
hand, infeasible budgets, the energy model, plan printing, and prune(budget=) end to end."""
import json

import numpy as np
import pytest

import keras

import tfscalpel
from tfscalpel import energy
from tfscalpel.budget import Budget, BudgetError
from tfscalpel.targets import HardwareTarget

# Hand-computable costs: dense 1 per weight; the custom op 2 per stored group of 4 (0.5 per
# weight); no fixed or per-row cost; no margin.
TOY_PROFILE = {
    "name": "toy", "min_speedup": 1.0, "dtypes": ["float32"],
    "formats": {
        "dense": {"float32": {"fixed_ns": 0.0, "row_ns": 0.0, "unit_ns": 1.0}},
        "custom": {"float32": {"fixed_ns": 0.0, "row_ns": 0.0,
                               "unit_ns": {"1": 1.0, "2": 1.0, "4": 2.0, "8": 4.0, "16": 8.0}}},
    },
}
TOY = HardwareTarget("toy", "cpu", {"float32": 4}, "float32", {"dense": "group", "conv": "node"},
                     cost_profile=TOY_PROFILE)


def toy_model(a=1.0, b=2.0, c=3.0):
    """8 -> a(4) -> b(4) -> c(2), every kernel a constant (so the magnitude proxy is exact):
    a has 32 weights (8 groups of 4), b 16 (4 groups), c 8 (2 groups)."""
    x = inputs = keras.Input((8,))
    for name, units, value in (("a", 4, a), ("b", 4, b), ("c", 2, c)):
        layer = keras.layers.Dense(units, name=name)
        x = layer(x)
        layer.kernel.assign(np.full(layer.kernel.shape, value, np.float32))
    return keras.Model(inputs, x)


def allocated(the_plan):
    return {r.name: r.sparsity for r in the_plan.allocation.layers}


def test_allocation_is_the_hand_computed_knapsack():
    # Dense latency 32 + 16 + 8 = 56; a 0.5x budget is 28. At 50 %: a 8, b 4, c 2 (gains 24,
    # 12, 6). Proxy deltas (removed norm^2 / 168): a 16, b 32, c 36. Per gain: a 16/24 first
    # (total 32), then b 32/12 before c 36/6 (total 20 <= 28); undoing either misses the budget.
    p = tfscalpel.plan(toy_model(), TOY, budget=Budget(latency=0.5, sparsities=(0.5,)))
    assert allocated(p) == {"a": 0.5, "b": 0.5, "c": 0.0}
    alloc = p.allocation
    assert alloc.limits == {"latency": 28.0}
    assert (alloc.totals.latency, alloc.dense_totals.latency) == (20.0, 56.0)
    assert alloc["a"].format == "custom g=4" and alloc["a"].costs.latency == 8.0
    assert alloc["a"].sensitivity == pytest.approx(16 / 168)
    # The flash the layer takes in the file. Its parameter blob: a 16-byte header and five
    # 16-byte section entries (96), then each section 16-byte aligned: values 4 groups x 4
    # float32 = 64, uint8 indices 4 -> 16, row pointers 4 x 5 = 20 -> 32, meta 64, bias 16: 288,
    # in the file after a 4-byte length, 64-byte aligned: 320. Dense: weights 32 x 4 = 128 and
    # bias 16, each a buffer: 192 + 64 = 256.
    assert (alloc["a"].costs.flash, alloc["a"].dense.flash) == (320.0, 256.0)
    assert [(d.name, d.method, d.group_size) for d in p.layers] == [
        ("a", "group", 4), ("b", "group", 4), ("c", "none", 1)]


def test_allocation_follows_sensitivity_and_gives_back_what_the_budget_allows():
    # Deltas /360: a 144, b 32, c 4. Greedy: c (4/6), b (32/12), a (144/24) -> total 14; then
    # undo b (saving 32, total 26 <= 28); undoing c would give 32 > 28.
    p = tfscalpel.plan(toy_model(3.0, 2.0, 1.0), TOY, budget=Budget(latency=0.5, sparsities=(0.5,)))
    assert allocated(p) == {"a": 0.5, "b": 0.0, "c": 0.5}
    assert p.allocation.totals.latency == 26.0


def test_energy_order_prunes_the_most_energy_hungry_layer_first():
    # Same model, order="energy": a (32 MACs) first -> 32 > 28, then b -> 20; nothing to undo.
    p = tfscalpel.plan(toy_model(3.0, 2.0, 1.0), TOY,
                       budget=Budget(latency=0.5, sparsities=(0.5,), order="energy"))
    assert allocated(p) == {"a": 0.5, "b": 0.5, "c": 0.0}


def test_allocation_is_deterministic_and_uses_the_loss_scan_with_data():
    rng = np.random.default_rng(0)
    model = toy_model()
    model.get_layer("a").kernel.assign(rng.normal(size=(8, 4)).astype(np.float32))
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    budget = Budget(latency=0.5, sparsities=(0.25, 0.5, 0.75))
    first = tfscalpel.plan(model, TOY, budget=budget, sensitivity_data=(x, y), loss=loss)
    second = tfscalpel.plan(model, TOY, budget=budget, sensitivity_data=(x, y), loss=loss)
    assert str(first) == str(second)
    assert "one-shot loss scan on 64 held-out samples" in str(first)
    assert first.allocation.totals.latency <= 28.0
    # The scan restores the weights.
    np.testing.assert_array_equal(model.get_layer("b").kernel.numpy(), np.full((4, 4), 2.0))


def test_infeasible_budget_names_the_best_reachable_figure():
    # Every layer at 50 %: 8 + 4 + 2 = 14 = 0.25x; 0.1x cannot be met.
    with pytest.raises(BudgetError, match=r"latency <= 6 ns \(0\.100x dense\) cannot be met on "
                                          r"toy: the best any allocation reaches is 14 ns "
                                          r"\(0\.250x dense\)") as info:
        tfscalpel.plan(toy_model(), TOY, budget=Budget(latency=0.1, sparsities=(0.5,)))
    assert info.value.best == {"latency": 14.0}


def test_arena_is_a_maximum_and_weight_pruning_cannot_shrink_it():
    # The largest working set is a's: (8 inputs + 4 outputs) x 4 bytes = 48 bytes.
    with pytest.raises(BudgetError, match=r"arena <= 40 B .*smallest arena any allocation "
                                          r"reaches is 48 B \(1\.000x dense\)"):
        tfscalpel.plan(toy_model(), TOY, budget=Budget(arena_bytes=40))
    p = tfscalpel.plan(toy_model(), TOY, budget=Budget(arena_bytes=48, latency=0.5,
                                                       sparsities=(0.5,)))
    assert p.allocation.totals.arena == 48.0


def test_budget_arguments_are_checked():
    with pytest.raises(ValueError, match="at least one"):
        Budget()
    with pytest.raises(ValueError, match=r"latency=1.5 is relative .* \['latency_us', "
                                         r"'latency_cycles'\]"):
        Budget(latency=1.5)
    with pytest.raises(ValueError, match="latency is given twice"):
        Budget(latency=0.5, latency_us=30)
    with pytest.raises(ValueError, match="order must be one of"):
        Budget(flash=0.5, order="random")
    with pytest.raises(ValueError, match=r"latency_us does not fit this target, whose latency "
                                         r"is in cycles; use \['latency_cycles'\]"):
        tfscalpel.plan(toy_model(), "cortex-m4", budget=Budget(latency_us=10))
    with pytest.raises(ValueError, match="apply only with budget="):
        tfscalpel.plan(toy_model(), TOY, loss="mse")


def test_absolute_budget_in_the_profile_units():
    # latency_us=0.03 is 30 ns: the hand allocation of the 28 ns case fits 30 ns too.
    p = tfscalpel.plan(toy_model(), TOY, budget=Budget(latency_us=0.03, sparsities=(0.5,)))
    assert p.allocation.limits == {"latency": pytest.approx(30.0)}
    assert allocated(p) == {"a": 0.5, "b": 0.5, "c": 0.0}


def test_plan_prints_predicted_costs_per_layer_and_in_total():
    text = str(tfscalpel.plan(toy_model(), TOY, budget=Budget(latency=0.5, sparsities=(0.5,))))
    lines = text.splitlines()
    assert "budget Budget(latency=0.5) on toy (float32; latency in ns, energy per inference)" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("sensitivity:"))
    row = lines[start + 3]
    # flash: the blob's 288 bytes as they sit in the file (64-byte aligned after a 4-byte
    # length): 320. Energy by hand counts what the kernel reads: 16 MACs x 4.6 + 48 registers
    # + 20 SRAM words x 5 + 72 flash words (the 288 bytes) x 640 + 4 group indices x 1.1 =
    # 46,306 pJ.
    assert row.split() == ["a", "50%", "4", "custom", "g=4", "8", "320", "48", "46.3", "0.0952"]
    assert "vs dense: latency 0.357x" in text
    assert "budget:   latency <= 28 ns (0.500x): 20 (met)" in text


def test_energy_against_a_hand_calculation():
    # float32 dense: 100 MACs x (3.7 + 0.9) + 300 register accesses x 1 + (100 + 10) words of
    # SRAM x 5 + 400 bytes = 100 words of DRAM x 640.
    e = energy.layer_energy(100, 10, 1, 400, "float32")
    assert (e.arithmetic, e.registers, e.sram, e.weight_memory, e.index) == (
        pytest.approx(460.0), 300.0, 550.0, 64000.0, 0.0)
    assert e.total == pytest.approx(65310.0)
    # int8 group-sparse, 5 groups over 2 positions: 40 MACs x (3.1 + 0.1), 120 register
    # accesses, ceil((40 + 20) / 4) = 15 SRAM words, ceil(50 / 4) = 13 weight words, and 10
    # index updates x (0.1 + 1).
    e = energy.layer_energy(40, 10, 2, 50, "int8", stored_groups=5)
    assert e.total == pytest.approx(128 + 120 + 75 + 13 * 640 + 11)
    # A target overrides the table through its profile.
    table = energy.table_for({"name": "t", "energy": {"dram": 100.0}})
    assert (table.dram, table.sram) == (100.0, 5.0)
    with pytest.raises(ValueError, match=r"unknown energy keys \['flash'\]"):
        energy.table_for({"name": "t", "energy": {"flash": 1.0}})


def test_energy_budget_counts_the_index_overhead():
    # On layers this small the sparse format's row pointers and meta section cost more weight
    # memory traffic than the pruned values save: no allocation lowers the energy.
    with pytest.raises(BudgetError, match=r"energy <= 25,797 pJ \(0\.600x dense\) cannot be met "
                                          r"on toy: the best any allocation reaches is 42,996 pJ "
                                          r"\(1\.000x dense\)"):
        tfscalpel.plan(toy_model(), TOY, budget=Budget(energy=0.6, sparsities=(0.5,)))
    alloc = tfscalpel.plan(toy_model(), TOY, budget=Budget(latency=0.5, sparsities=(0.5,))).allocation
    # a's dense energy by hand: 32 MACs x 4.6 + 96 registers + (32 + 4) SRAM words x 5 +
    # 144 / 4 = 36 DRAM words x 640.
    assert alloc["a"].dense.energy == pytest.approx(32 * 4.6 + 96 + 36 * 5 + 36 * 640)
    assert alloc.dense_totals.energy == pytest.approx(42996.0, abs=0.5)


def test_prune_with_budget_trains_each_layer_to_its_own_sparsity(capsys):
    keras.utils.set_random_seed(0)
    model = toy_model()
    pruned = tfscalpel.prune(model, target=TOY, budget=Budget(latency=0.5, sparsities=(0.5,)))
    assert "budget Budget(latency=0.5) on toy" in capsys.readouterr().out
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    pruned.fit(x, np.zeros((16, 2)), epochs=1, batch_size=8, verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    _, report = tfscalpel.strip(pruned, return_report=True)
    kept = {r.name: (r.nonzero_groups, r.total_groups) for r in report.layers}
    assert kept == {"a": (4, 8), "b": (2, 4)}
    with pytest.raises(ValueError, match="the budget sets each layer's sparsity"):
        tfscalpel.prune(model, target=TOY, budget=Budget(latency=0.5), sparsity=0.5)
    with pytest.raises(ValueError, match="budget= applies only together with target="):
        tfscalpel.prune(model, budget=Budget(latency=0.5), sparsity=0.5)


def test_schedule_ramps_each_layer_to_its_own_target():
    model = toy_model()
    pruned = tfscalpel.prune(model, target=TOY, verbose=False,
                             budget=Budget(latency=0.5, sparsities=(0.5,)),
                             schedule=tfscalpel.PolynomialDecay(0.0, 0.9, 0, 10))
    finals = {layer.name: layer.schedule.final_sparsity for layer in pruned.layers
              if isinstance(layer, tfscalpel.PrunableMixin)}
    assert finals == {"a": 0.5, "b": 0.5}


def test_strip_and_export_reports_carry_the_energy():
    from tflite_export import export

    model = toy_model()
    pruned = tfscalpel.prune(model, target=TOY, verbose=False,
                             budget=Budget(latency=0.5, sparsities=(0.5,)))
    pruned.compile("sgd", "mse")
    pruned.fit(np.zeros((8, 8), np.float32), np.zeros((8, 2)), epochs=1, verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    a = report.layers[0]
    # a's dense energy by hand, from strip's byte count (weights only, 128 B = 32 words): 32
    # MACs x 4.6 + 96 registers + 36 SRAM words x 5 + 32 x 640.
    assert a.energy_pj("dense") == pytest.approx(147.2 + 96 + 180 + 32 * 640)
    assert "energy per inference (float32, 45 nm table, tfscalpel.energy): dense" in str(report)
    result = export(model, target="x86-avx2")  # the dense toy: every layer stays dense
    rows = {r.layer: r for r in result.layers}
    # The converter drops the all-zero bias, so a stores its 128 weight bytes only.
    assert rows["a"].energy_pj == rows["a"].energy_dense_pj == pytest.approx(20903.2)
    assert "energy per inference of the FC layers: 36.6 nJ (dense 36.6 nJ" in str(result)


def test_uniform_order_is_the_smallest_common_sparsity_that_fits():
    # 25 %: a keeps 6 of 8 groups (x 2 = 12), b 3 of 4 (6), c round(0.25 x 2) = 0 removed, yet
    # its 2 stored groups cost 4 < 8 dense: 12 + 6 + 4 = 22 <= 28; 0 % is 56.
    p = tfscalpel.plan(toy_model(), TOY, budget=Budget(latency=0.5, sparsities=(0.25, 0.5),
                                                       order="uniform"))
    assert allocated(p) == {"a": 0.25, "b": 0.25, "c": 0.25}
    assert p.allocation.totals.latency == 22.0


def test_predicted_flash_is_the_bytes_the_layers_take_in_the_file():
    # Issue 19: a flash budget is met "as measured, flash bytes from the file". Each layer's
    # predicted flash is what its tensors take in the exported .tflite, and the dense export's
    # remainder (tables, names, other constants: tflite_export.host_profile.measure_flash) is
    # counted once. The old accounting (blob or weights alone) missed the 64-byte alignment,
    # the bias' quantization parameters, a conv blob's geometry and its padding to cout * 3 * 3
    # rows: it predicted conv 448, fc 16864, out 480 (the file: 640, 16896, 688).
    from tflite_export import export, flatbuffer, host_profile
    from tfscalpel.layer_costs import LayerShape, ProfileCosts
    from tfscalpel.sensitivity import group_mask

    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((12, 12, 2))
    conv = keras.layers.Conv2D(8, 3, name="conv")  # K = 18: 5 groups of 4 per filter (ragged)
    fc = keras.layers.Dense(32, name="fc")  # K = 800: 200 groups per row
    out = keras.layers.Dense(10, name="out")
    model = keras.Model(inputs, out(fc(keras.layers.Flatten()(conv(x)))))
    rng = np.random.default_rng(0)
    for layer in (conv, fc, out):  # trained biases: the converter drops an all-zero one
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
    rep = rng.normal(size=(32, 12, 12, 2)).astype(np.float32)
    target = tfscalpel.get_target("cortex-m4")
    profile = host_profile.measure_flash(model, target.name, representative_data=rep)
    dense = host_profile.dense_export(model, "cortex-m4", "int8", rep)
    for layer, s in ((conv, 0.75), (fc, 0.5)):
        layer.kernel.assign(layer.kernel.numpy() * group_mask(layer.kernel.numpy(), s, 4))
    result = export(model, target="cortex-m4", quantize="int8", representative_data=rep,
                    group_sizes={"fc": 4, "conv": 4}, formats={"fc": "custom"})
    assert {r.layer: (r.format, r.stored_units) for r in result.layers} == {
        "conv": ("custom_conv", 10), "fc": ("custom", 3200), "out": ("dense", 320)}
    costs = ProfileCosts(target, profile)
    shapes = {"conv": LayerShape.of(conv, "conv", 18), "fc": LayerShape.of(fc, "dense", 800),
              "out": LayerShape.of(out, "dense", 32)}
    predicted = {"conv": costs._flash(shapes["conv"], "custom", 10, 4),
                 "fc": costs._flash(shapes["fc"], "custom", 3200, 4),
                 "out": costs.dense(shapes["out"]).flash}
    # conv's blob: header 16 + 9 entries = 160, values 40 -> 48, indices 10 -> 16, row
    # pointers 36 -> 48, meta 64, bias 32, requantization 3 x 32, geometry 64: 528, padded to
    # 8 rows x 3 x 3 = 72: 576. fc's: 144 + 12800 + 3200 + 144 + 64 + 128 + 384 = 16864
    # (a multiple of 32). In the file: + 4, 64-aligned. out: weights 320 -> 384, bias 40 ->
    # 64, 10 scales and zero points for each: 240.
    assert predicted == {"conv": 640.0, "fc": 16896.0, "out": 688.0}
    assert costs._blob(shapes["conv"], 10, 4) == 576
    # conv, the flatten's shape, fc, out
    in_file = flatbuffer.operator_constant_bytes(result.model_bytes)
    assert [n for n, _ in in_file][0::2] == ["conv/tfs_conv_params", "fc/tfs_params"]
    assert [b for n, b in in_file if "Reshape" not in n] == [640, 16896, 688]
    assert {r.layer: r.bytes_exported for r in result.layers if r.layer != "out"} == {
        "conv": 576, "fc": 16864}
    # The whole file: the dense export exactly; the pruned one within what its tables change
    # (two CUSTOM operator codes with their names added, the bias tensors and their names
    # gone): 384 bytes, 1.8 %, under (LeNet-5 and the ConvNet: 32 to 448 bytes over).
    dense_total = costs.model_bytes + sum(costs.dense(s).flash for s in shapes.values())
    assert dense_total == len(dense.model_bytes) == 30144
    total = costs.model_bytes + sum(predicted.values())
    assert (costs.model_bytes, total, len(result.model_bytes)) == (2384.0, 20608.0, 20992)


def test_predicted_conv_cycles_are_the_ones_the_exporter_decides_by():
    # One formula (tfscalpel.cost_profile.conv_time) over the profile's custom_conv entry: the
    # allocator's dense (CMSIS-NN's CONV_2D) and sparse cycles of a conv are the exporter's, so
    # its predicted speedup is their ratio, and the stored groups are the same.
    from tflite_export import export
    from tfscalpel.layer_costs import LayerShape, ProfileCosts
    from tfscalpel.sensitivity import group_mask

    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((12, 12, 2))
    conv = keras.layers.Conv2D(8, 3, name="conv")  # K = 18: 5 groups of 4 per filter (ragged)
    outputs = keras.layers.Dense(10, name="out")(keras.layers.Flatten()(conv(x)))
    model = keras.Model(inputs, outputs)
    conv.kernel.assign(conv.kernel.numpy() * group_mask(conv.kernel.numpy(), 0.75, 4))
    rep = np.random.default_rng(0).normal(size=(32, 12, 12, 2)).astype(np.float32)
    result = export(model, target="cortex-m4", quantize="int8", representative_data=rep,
                    group_sizes={"conv": 4})
    row = next(r for r in result.layers if r.layer == "conv")
    costs = ProfileCosts(tfscalpel.get_target("cortex-m4"))
    shape = LayerShape.of(conv, "conv", 18)
    option = costs.option(shape, 0.75, 4)
    assert (row.format, row.stored_units) == ("custom_conv", 10)
    assert (option.format, option.stored_groups) == (row.format, row.stored_units)
    assert row.expected_speedup == round(costs.dense(shape).latency / option.costs.latency, 2)
    # 10x10 positions. Dense: CMSIS-NN's CONV_2D per position (position, K = 18, 8 outputs,
    # 144 MACs). Sparse: the FC core's fixed cost once (one tile), im2col and the kernel per
    # position and per patch byte, widening per byte, 81.497 per filter storing a group
    # (8 * (1 - (30/40) ** 5) expected of 8) and 10.613 per stored group, per position.
    assert costs.dense(shape).latency == pytest.approx(
        100 * (1673.8 + 6.971 * 18 + 58.19 * 8 + 1.8723 * 144), rel=1e-12)
    rows = 8 * (1 - 0.75 ** 5)
    assert option.costs.latency == pytest.approx(
        911.41 + 100 * (914.17 + 1.1874 * 18 + 4.2383 * 18 + 81.497 * rows + 10.613 * 10),
        rel=1e-12)


# A profile measured on a host for the toy model (as tflite_export.host_profile writes it): layer
# a (8x4) timed dense at 40 ns and as the custom op at g=4 with 2 and 6 stored groups; the whole
# model 10 ns below its layers timed alone; the host exporter's margin. b and c are not in the
# table and fall back to the toy line (dense 16 and 8).
TOY_MEASURED = {**TOY_PROFILE, "min_speedup": 1.1, "measured": {"float32": {
    "model_ns": -10.0, "layers": {"8x4": {"dense_ns": 40.0, "custom": {"4": [[2, 10.0],
                                                                          [6, 26.0]]}}}}}}


def test_a_measured_profile_prices_its_layers_from_the_table():
    from tfscalpel import layer_costs

    costs = layer_costs.ProfileCosts(TOY, TOY_MEASURED)
    a = layer_costs.LayerShape("a", "dense", 8, 4, 1, 8, 4)
    # 8 groups of 4: stored 7, 6, 4, 2, 1. Between the points linearly (4 ns per group), beyond
    # them the nearest segment.
    options = [costs.option(a, s, 4) for s in (0.125, 0.25, 0.5, 0.75, 0.875)]
    assert [(o.stored_groups, o.format, o.costs.latency) for o in options] == [
        (7, "custom", 30.0), (6, "custom", 26.0), (4, "custom", 18.0), (2, "custom", 10.0),
        (1, "custom", 6.0)]
    # The margin is the exporter's rule: at 1.5x, 30 ns (1.33x) stays dense, 26 ns (1.54x) not.
    strict = layer_costs.ProfileCosts(TOY, {**TOY_MEASURED, "min_speedup": 1.5})
    assert [(o.format, o.costs.latency) for o in (strict.option(a, 0.125, 4),
                                                  strict.option(a, 0.25, 4))] == [
        ("dense", 40.0), ("custom", 26.0)]
    assert costs.dense(a).latency == 40.0 and costs.model_ns == -10.0
    b = layer_costs.LayerShape("b", "dense", 4, 4, 1, 4, 4)  # not measured: the line
    assert (costs.dense(b).latency, costs.option(b, 0.5, 4).costs.latency) == (16.0, 4.0)
    # Another dtype, or a fitted profile: no table, no whole-model term.
    assert layer_costs.ProfileCosts(TOY, TOY_PROFILE).model_ns == 0.0


def test_a_measured_profile_budget_counts_the_whole_model_once(tmp_path):
    # Dense: -10 + 40 + 16 + 8 = 54, so 0.5x is 27. Uniform at 25 % (c's 2 groups: none removed,
    # round(0.5) = 0, so c is the custom op storing both): -10 + 26 + 6 + 4 = 26. The profile
    # as the JSON file python -m tflite_export.host_profile writes.
    path = tmp_path / "host.json"
    path.write_text(json.dumps(TOY_MEASURED))
    p = tfscalpel.plan(toy_model(), TOY, profile=str(path),
                       budget=Budget(latency=0.5, sparsities=(0.25, 0.5, 0.75), order="uniform"))
    alloc = p.allocation
    assert allocated(p) == {"a": 0.25, "b": 0.25, "c": 0.25}
    assert (alloc.totals.latency, alloc.dense_totals.latency, alloc.limits) == (
        26.0, 54.0, {"latency": 27.0})
    assert alloc.model_latency == -10.0
    assert "(model)" in str(alloc) and "the whole model minus its layers" in str(alloc)
    # The knapsack: a to 75 % (10 ns), the cheapest per sensitivity; c to 25 % (4) is free.
    p = tfscalpel.plan(toy_model(), TOY, profile=TOY_MEASURED,
                       budget=Budget(latency=0.5, sparsities=(0.25, 0.5, 0.75)))
    assert allocated(p) == {"a": 0.75, "b": 0.0, "c": 0.25}
    assert p.allocation.totals.latency == 20.0


def test_infeasible_budget_on_a_measured_profile_names_the_best_reachable_figure():
    # Every layer at its cheapest: -10 + 10 (a at 75 %) + 2 (b at 75 %) + 2 (c at 50 %) = 4 ns.
    with pytest.raises(BudgetError, match=r"latency <= 3 ns \(0\.050x dense\) cannot be met on "
                                          r"toy: the best any allocation reaches is 4 ns "
                                          r"\(0\.074x dense\)") as info:
        tfscalpel.plan(toy_model(), TOY, profile=TOY_MEASURED,
                       budget=Budget(latency=0.05, sparsities=(0.5, 0.75)))
    assert info.value.best == {"latency": 4.0}


def test_a_measured_profile_counts_dense_convolutions_in_the_whole_model_term():
    # On a CPU target the conv is exported dense; measured, its time is in model_ns (the whole
    # model minus its FC layers), so it costs no latency of its own: -10 + 0 + 40 + 8 = 38.
    # Priced by the line instead, it costs 16 x 4 weights x 4 positions: 0.5x is unreachable.
    x = inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(x)  # 9 weights x 2 filters, 2x2 positions
    x = keras.layers.Dense(4, name="a")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="c")(x))
    for layer in model.layers:
        if layer.weights:
            layer.kernel.assign(np.ones(layer.kernel.shape, np.float32))
    budget = Budget(latency=0.5, sparsities=(0.5, 0.75))
    p = tfscalpel.plan(model, TOY, profile=TOY_MEASURED, budget=budget)
    alloc = p.allocation
    assert (alloc["conv"].costs.latency, alloc.dense_totals.latency) == (0.0, 38.0)
    assert allocated(p) == {"conv": 0.0, "a": 0.5, "c": 0.0}
    assert alloc.totals.latency == 16.0  # -10 + 18 + 8 <= 19
    with pytest.raises(BudgetError, match=r"best any allocation reaches is 78 ns \(0\.696x "
                                          r"dense\).*layers counted dense: \['conv'\]"):
        tfscalpel.plan(model, TOY, budget=budget)


def test_a_measured_profile_prices_convolutions_from_their_entries():
    # The toy profile with the conv op priced (a custom_conv entry) and conv measured as
    # tflite_export.host_profile writes it: K = 9, 2 filters, 2x2 positions; dense 30 ns alone,
    # the conv op at g = 4 (3 groups per filter, 6 in all) 10 / 20 ns storing 2 / 4 groups. The
    # CPU target node-prunes convs; a budget priced with the conv op group-prunes them.
    x = inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    x = keras.layers.Dense(4, name="a")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="c")(x))
    for layer in model.layers:
        if layer.weights:
            layer.kernel.assign(np.ones(layer.kernel.shape, np.float32))
    conv_entry = {"float32": {"position_ns": 0.0, "patch_ns": 0.0, "widen_ns": 0.0, "row_ns": 0.0,
                              "unit_ns": {}}}
    fast = {"dense_ns": 30.0, "custom": {"4": [[2, 10.0], [4, 20.0]]}}
    layers = {**TOY_MEASURED["measured"]["float32"]["layers"], "conv:9x2@4": fast}
    profile = {**TOY_MEASURED, "formats": {**TOY_PROFILE["formats"], "custom_conv": conv_entry},
               "measured": {"float32": {"model_ns": -10.0, "layers": layers}}}
    from tfscalpel import layer_costs

    costs = layer_costs.ProfileCosts(TOY, profile)
    conv = layer_costs.LayerShape.of(model.get_layer("conv"), "conv", 9)
    # 6 groups: 50 % stores 3 (15 ns, between the points), 75 % stores 2 (round(4.5) = 4 go).
    assert [(o.stored_groups, o.format, o.costs.latency) for o in
            (costs.option(conv, s, 4) for s in (0.5, 0.75))] == [(3, "custom_conv", 15.0),
                                                                 (2, "custom_conv", 10.0)]
    assert costs.dense(conv).latency == 30.0
    # Dense: -10 + 30 + 40 + 8 = 68; 0.5x is 34: conv at 75 % (10) and a at 50 % (18) fit (26).
    budget = Budget(latency=0.5, sparsities=(0.5, 0.75))
    p = tfscalpel.plan(model, TOY, profile=profile, budget=budget)
    assert [(q.name, q.method) for q in p.layers][0] == ("conv", "group")
    assert "budget: group (the profile prices the conv op per group" in p.layers[0].reason
    assert p.allocation.dense_totals.latency == 68.0
    assert p.allocation.totals.latency <= 34.0 and p.allocation["conv"].format == "custom_conv g=4"
    # A conv whose measured points never beat dense by the margin (1.1x: 30 / 29 = 1.03x) is
    # priced dense at every sparsity, as the host exporter keeps it.
    slow = {**profile, "measured": {"float32": {"model_ns": -10.0, "layers": {
        **layers, "conv:9x2@4": {"dense_ns": 30.0, "custom": {"4": [[2, 29.0], [4, 40.0]]}}}}}}
    costs = layer_costs.ProfileCosts(TOY, slow)
    assert [(o.format, o.costs.latency) for o in (costs.option(conv, s, 4) for s in
                                                  (0.5, 0.75))] == [("dense", 30.0), ("dense", 30.0)]
    # At 0.45x (30.6 ns): with the fast conv -10 + 10 + 10 + 2 = 12 fits; with the slow one the
    # best is -10 + 30 (conv dense) + 10 (a at 75 %) + 2 (c at 50 %) = 32 ns.
    tight = Budget(latency=0.45, sparsities=(0.5, 0.75))
    assert tfscalpel.plan(model, TOY, profile=profile, budget=tight).allocation.totals.latency <= 30.6
    with pytest.raises(BudgetError, match=r"best any allocation reaches is 32 ns \(0\.471x dense\)"):
        tfscalpel.plan(model, TOY, profile=slow, budget=tight)
