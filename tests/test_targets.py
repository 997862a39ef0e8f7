"""Hardware targets and the planner: tables per target, overrides, prune(target=...), errors."""
import keras
import numpy as np
import pytest

import tfscalpel
from tfscalpel import models
from tfscalpel import targets as targets_module
from tfscalpel.targets import HardwareTarget


def _methods(plan):
    return {p.name: (p.method, p.group_size, p.mask_after) for p in plan.layers}


def test_registry_has_the_issue_targets_and_serialises():
    for name in ("cortex-m4", "cortex-m7", "cortex-m55", "x86-avx2", "x86-avx512", "arm-neon",
                 "gpu-ampere"):
        target = tfscalpel.get_target(name)
        assert target.name == name and target.group_size() >= 1
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(target))
        assert restored == target
    assert tfscalpel.get_target("cortex-m4").group_size("int16") == 2
    assert tfscalpel.get_target("cortex-m55").group_size("int8") == 16


def test_unknown_target_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown target 'tpu'; known targets: \['arm-neon', "
                                         r"'cortex-m4'.*register_target"):
        tfscalpel.plan(models.lenet_300_100(), "tpu")
    with pytest.raises(ValueError, match="no group width for dtype 'int4'; known"):
        tfscalpel.plan(models.lenet_300_100(), "cortex-m4", dtype="int4")


def test_user_target_registration_and_validation(monkeypatch):
    # The registry is global: the test's target must not outlive the test (README table check).
    monkeypatch.setattr(targets_module, "_TARGETS", dict(targets_module._TARGETS))
    mine = tfscalpel.register_target(dict(
        name="test-dsp", kind="mcu", group_width={"int8": 8}, default_dtype="int8",
        methods={"dense": "group", "conv": "node"}))
    assert tfscalpel.get_target("test-dsp") is mine and "test-dsp" in tfscalpel.known_targets()
    with pytest.raises(ValueError, match="already registered"):
        tfscalpel.register_target(mine)
    with pytest.raises(ValueError, match=r"methods\['conv'\] must be one of"):
        HardwareTarget("x", "cpu", {"float32": 4}, "float32", {"dense": "group", "conv": "magic"})
    with pytest.raises(ValueError, match="kind must be one of"):
        HardwareTarget("x", "fpga", {"float32": 4}, "float32", {"dense": "group", "conv": "node"})


def test_plan_tables_per_target():
    lenet5 = models.lenet5()
    mcu = tfscalpel.plan(lenet5, "cortex-m4")
    assert _methods(mcu) == {n: ("group", 4, "") for n in ("conv1", "conv2", "fc1", "fc2")}
    cpu = tfscalpel.plan(lenet5, "x86-avx2")
    assert _methods(cpu) == {"conv1": ("node", 1, "pool1"), "conv2": ("node", 1, "pool2"),
                             "fc1": ("group", 8, ""), "fc2": ("group", 8, "")}
    gpu = tfscalpel.plan(models.lenet_300_100(), "gpu-ampere")
    # 2:4 wherever the inputs are a multiple of 4 (node removal upstream keeps whole windows);
    # the logits are never node-pruned
    assert _methods(gpu) == {"fc1": ("node+2:4", 1, "fc1"), "fc2": ("node+2:4", 1, "fc2"),
                             "fc3": ("2:4", 1, "")}
    table = str(cpu)
    assert table.splitlines()[0] == "plan for x86-avx2 (float32)"
    assert "conv2       conv         500x50  node        1  pool2" in table
    assert ("cin = 1 is not a multiple of 4: windows would straddle kernel positions: no 2:4"
            in str(tfscalpel.plan(lenet5, "gpu-ampere")))


def _conv_flatten_dense(channels):
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(channels, 3, name="c")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_no_2_4_where_its_windows_would_pin_upstream_channels():
    """LeNet-5's fc1 reads a flattened 4x4x50 map: its 2:4 windows would chain all 50 conv2
    channels, none removable alone, so the GPU plan node-prunes fc1 without 2:4. A flattened
    map with a multiple of 4 channels keeps node+2:4; per_layer still forces it."""
    gpu = tfscalpel.plan(models.lenet5(), "gpu-ampere")
    assert _methods(gpu) == {"conv1": ("node", 1, "pool1"), "conv2": ("node+2:4", 1, "pool2"),
                             "fc1": ("node", 1, "fc1"), "fc2": ("2:4", 1, "")}
    assert gpu["fc1"].reason == (
        "gpu: node+2:4 on dense; its 2:4 input windows straddle the channels of conv2 "
        "(flattened; channels not a multiple of 4): they would tie 50 channels together, none "
        "removable alone: no 2:4")
    assert _methods(tfscalpel.plan(_conv_flatten_dense(6), "gpu-ampere"))["fc"] == ("node", 1, "fc")
    assert _methods(tfscalpel.plan(_conv_flatten_dense(8), "gpu-ampere"))["fc"] == (
        "node+2:4", 1, "fc")
    forced = tfscalpel.plan(models.lenet5(), "gpu-ampere",
                            per_layer={"fc1": {"method": "node+2:4"}})
    assert _methods(forced)["fc1"] == ("node+2:4", 1, "fc1")
    # stripped, the conv2 channels whose gates died go (with fc1's 2:4 they could not)
    for per_layer, kept in ((None, 17), ({"fc1": {"method": "node+2:4"}}, 50)):
        pruned = tfscalpel.prune(models.lenet5(), target="gpu-ampere", per_layer=per_layer)
        gate = pruned.get_layer("mask_pool2")
        gate.set_gates(np.where(np.arange(50) % 3 == 0, 1.0, 0.0))
        gate(np.zeros((1, 4, 4, 50), "float32"), training=True)  # the mask follows the gates
        assert tfscalpel.strip(pruned).get_layer("conv2").filters == kept


def test_mask_goes_after_activation_pooling_and_batch_norm():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    assert tfscalpel.plan(model, "arm-neon")["c"].mask_after == "pool"


def test_per_layer_override_and_errors():
    model = models.lenet5()
    plan = tfscalpel.plan(model, "x86-avx2", per_layer={"conv1": {"method": "none"},
                                                        "fc1": {"group_size": 2}})
    assert _methods(plan)["conv1"] == ("none", 1, "") and _methods(plan)["fc1"] == ("group", 2, "")
    assert plan["conv1"].reason == "per_layer override"
    with pytest.raises(ValueError, match=r"layer 'conv1': method must be one of .*'group'"):
        tfscalpel.plan(model, "x86-avx2", per_layer={"conv1": {"method": "prune"}})
    with pytest.raises(ValueError, match=r"per_layer names unknown layers \['conv9'\]"):
        tfscalpel.plan(model, "x86-avx2", per_layer={"conv9": {"method": "none"}})
    with pytest.raises(ValueError, match=r"layer 'conv1': unknown per_layer keys \['sparsity'\]"):
        tfscalpel.plan(model, "x86-avx2", per_layer={"conv1": {"sparsity": 0.5}})
    with pytest.raises(ValueError, match="not Dense or Conv2D: \\['pool1'\\]"):
        tfscalpel.plan(model, "x86-avx2", per_layer={"pool1": {"method": "none"}})
    with pytest.raises(ValueError, match="group_size applies to method 'group' only"):
        tfscalpel.plan(model, "x86-avx2", per_layer={"conv1": {"group_size": 4}})


def test_prune_with_target_builds_gated_group_pruned_model():
    model = models.lenet5()
    pruned = tfscalpel.prune(model, target="x86-avx2", sparsity=0.5,
                             per_layer={"conv1": {"method": "none"}})
    names = [layer.name for layer in pruned.layers]
    assert names == ["input", "conv1", "pool1", "conv2", "pool2", "mask_pool2", "flatten", "fc1",
                     "fc2"]
    assert pruned.get_layer("fc1").pattern == tfscalpel.GroupPattern(8)
    assert type(pruned.get_layer("conv2")) is keras.layers.Conv2D
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    gpu = tfscalpel.prune(models.lenet_300_100(), target="gpu-ampere")  # 2:4 needs no sparsity
    assert gpu.get_layer("fc1").pattern == tfscalpel.NMPattern(2, 4)
    assert [layer.name for layer in tfscalpel.mask_layers(gpu)] == ["mask_fc1", "mask_fc2"]


def test_prune_with_target_errors():
    with pytest.raises(ValueError, match="plan group-prunes .*give schedule= or sparsity="):
        tfscalpel.prune(models.lenet_300_100(), target="cortex-m4")
    with pytest.raises(ValueError, match="with target=, the target chooses pattern"):
        tfscalpel.prune(models.lenet_300_100(), target="cortex-m4", sparsity=0.5, group_size=2)
    with pytest.raises(ValueError, match="dtype= and mask_options= apply only together"):
        tfscalpel.prune(models.lenet_300_100(), sparsity=0.5, dtype="int8")
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(4, 1, name="c1")(inputs)
    x = keras.layers.Reshape((8, 8), name="reshape")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    # The plan leaves out of node pruning a layer whose channels reach a layer the channel
    # analysis cannot follow; asked for explicitly, prune names that layer.
    plan = tfscalpel.plan(model, "x86-avx2")
    assert plan["c1"].method == "none" and plan["c1"].reason.endswith(
        "no node pruning: its channels reach 'reshape' (a Reshape layer that changes the "
        "channel axis (4 -> 8))")
    assert not tfscalpel.mask_layers(tfscalpel.prune(model, target="x86-avx2", sparsity=0.5))
    with pytest.raises(ValueError, match="layer 'reshape' is a Reshape layer"):
        tfscalpel.prune(model, target="x86-avx2", sparsity=0.5, per_layer={"c1": {"method": "node"}})


def test_gated_model_trains_strips_and_survives_save_load(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 784)).astype("float32")
    y = rng.integers(0, 10, 64)
    pruned = tfscalpel.prune(models.lenet_300_100(), target="gpu-ampere",
                             mask_options={"initial_gate": 0.6})
    # gate_scale 16: one Adam(3e-3) step moves a gate up to 0.048, so 8 steps kill some nodes
    models.compile_classifier(pruned, keras.optimizers.Adam(3e-3))
    # fc2 is node+2:4: its input channels (fc1's units) go in whole windows of 4, so the
    # windows' gates are tied to die together and every dead fc1 node is removed
    gates = tfscalpel.GateTraining(penalties=(3e-3,), finetune_epochs=1, tie_windows=True)
    pruned.fit(x, y, epochs=gates.total_epochs, batch_size=8, verbose=0,
               callbacks=[gates, tfscalpel.UpdatePruningStep()])
    pruned.save(tmp_path / "gated.keras")
    loaded = keras.models.load_model(tmp_path / "gated.keras")
    stripped, report = tfscalpel.strip(loaded, return_report=True)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)
    kept = {r.name: r.nodes_kept for r in report.layers}
    assert kept["fc1"] == pruned.get_layer("mask_fc1").num_kept() < 300
    assert "nodes kept" in str(report)


def test_pruned_model_never_shares_layers_with_the_source_model():
    """A gates-only plan (conv layers on a GPU target) once reused the source model's layers,
    so training the pruned model trained the caller's model in place."""
    import keras
    import numpy as np

    import tfscalpel

    keras.utils.set_random_seed(11)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    before = [w.copy() for w in model.get_weights()]
    pruned = tfscalpel.prune(model, target="gpu-ampere")
    source_layers = {id(layer) for layer in model.layers}
    assert not source_layers & {id(layer) for layer in pruned.layers}
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    pruned.fit(rng.normal(size=(16, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 16),
               epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()] if tfscalpel.pruned_layers(pruned) else [])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", tfscalpel.known_targets())
def test_every_target_exports_a_small_model_or_is_refused_at_prune(name):
    """The contract: a target prune() accepts is one the exporter serves (with its own or a
    borrowed cost profile, or gpu-ampere's 2:4 without one); the others are refused by prune()
    and by the exporter with the registry's reason."""
    import re

    import tflite_export
    from tflite_export import runtime

    target = tfscalpel.get_target(name)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((32,), name="x"),
                              keras.layers.Dense(16, activation="relu", name="fc1"),
                              keras.layers.Dense(4, name="fc2")])
    x = np.random.default_rng(0).normal(size=(8, 32)).astype("float32")
    if target.export_unsupported:
        with pytest.raises(ValueError, match=re.escape(target.export_unsupported)):
            tfscalpel.prune(model, target=name, sparsity=0.5)
        with pytest.raises(ValueError, match=f"target '{name}' cannot be exported: "
                                             + re.escape(target.export_unsupported)):
            tflite_export.export(model, target=name)
        assert "not exportable" in str(tfscalpel.plan(model, name))  # the plan still shows it
        return
    pruned = tfscalpel.prune(model, target=name, sparsity=0.5)
    tfscalpel.update_pruning(pruned)  # step 0: the masks (groups or 2:4) are computed now
    stripped = tfscalpel.strip(pruned)
    quantize = "int8" if target.default_dtype == "int8" else None
    result = tflite_export.export(stripped, target=name, quantize=quantize, representative_data=x)
    assert result.report.target == name
    used = {r.format for r in result.layers} - {"dense"}
    assert used <= set(target.export_formats), (used, target.export_formats)
    if target.borrowed_from:
        assert f"note: costs borrowed from {target.borrowed_from}" in str(result)
    if name == "gpu-ampere":
        # fc1 reads the input: 2:4; fc2 too (16 inputs): node removal keeps whole windows.
        assert [r.format for r in result.layers] == ["2:4", "2:4"]
    with runtime.load(result.model_bytes) as rt:
        y = rt.run(x)[0]
    if quantize is None:
        np.testing.assert_allclose(y, stripped.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    else:
        assert y.shape == (8, 4)
