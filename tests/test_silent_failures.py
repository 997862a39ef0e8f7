"""Nothing fails silently (issue 18): each case that used to do nothing, or the wrong thing, with
no word is a clear error or a warning naming the layer or argument and the fix."""
import warnings

import keras
import numpy as np
import pytest

import tfscalpel
from tfscalpel.layers import pruned_layers


def _data(n, features=16, outputs=4):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, features)).astype(np.float32),
            rng.standard_normal((n, outputs)).astype(np.float32))


def _pruned(**kwargs):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a"),
                              keras.layers.Dense(4, name="b")])
    pruned = tfscalpel.prune(model, **({"sparsity": 0.5, "pattern": "unstructured"} | kwargs))
    pruned.compile(optimizer="sgd", loss="mse")
    return pruned


def _sparsities(model):
    return [round(layer.mask_sparsity(), 4) for layer in pruned_layers(model)]


# ---- 1. fit without UpdatePruningStep fails at the first step, as in tfmot --------------------

_NO_CALLBACK = (r"layer 'a' is pruned but trains with its pruning step at -1: nothing updates "
                r"its mask, so it would never prune\. Add tfscalpel\.UpdatePruningStep\(\) to "
                r"model\.fit's callbacks")


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_fit_without_update_pruning_step_fails_at_the_first_step(run_eagerly):
    model = _pruned()
    model.compile(optimizer="sgd", loss="mse", run_eagerly=run_eagerly)
    x, y = _data(8)
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with pytest.raises(RuntimeError, match=_NO_CALLBACK):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0,
                  callbacks=[keras.callbacks.History()])
    # Nothing trained.
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    # Inference needs no callback; with the callback the same model trains and prunes.
    assert model.predict(x, verbose=0).shape == (8, 4)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])
    assert _sparsities(model) == [0.5, 0.5]


def test_custom_loop_with_update_pruning_trains_in_training_mode():
    model = _pruned()
    x, _ = _data(4)
    with pytest.raises(RuntimeError, match=_NO_CALLBACK):
        model(x, training=True)
    tfscalpel.update_pruning(model)
    model(x, training=True)
    assert _sparsities(model) == [0.5, 0.5]



# ---- 2. keras.models.clone_model(clone_function=prune_low_magnitude): tfmot's guide ----------

def _conv_model(sequential):
    keras.utils.set_random_seed(11)
    layers = [keras.layers.Conv2D(4, 3, name="conv"), keras.layers.DepthwiseConv2D(3, name="dw"),
              keras.layers.Flatten(name="flat"), keras.layers.Dense(6, name="fc"),
              keras.layers.Dense(3, name="out")]
    if sequential:
        return keras.Sequential([keras.Input((8, 8, 2))] + layers)
    x = inputs = keras.Input((8, 8, 2))
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("sequential", [True, False])
def test_clone_function_keeps_the_trained_weights(sequential):
    model = _conv_model(sequential)
    x = np.random.default_rng(1).standard_normal((4, 8, 8, 2)).astype(np.float32)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.ones((4, 3), np.float32), verbose=0)  # "trained": not the initial weights
    chosen = ("conv", "dw", "fc")

    def apply_pruning(layer):  # as in tfmot's pruning guide
        if layer.name in chosen:
            return tfscalpel.prune_low_magnitude(layer)
        return layer

    pruned = keras.models.clone_model(model, clone_function=apply_pruning)
    assert [type(pruned.get_layer(n)).__name__ for n in chosen + ("out",)] == [
        "GroupPrunedConv2D", "GroupPrunedDepthwiseConv2D", "GroupPrunedDense", "Dense"]
    for name in chosen + ("out",):
        for a, b in zip(model.get_layer(name).weights, pruned.get_layer(name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(pruned.predict(x, verbose=0), model.predict(x, verbose=0))
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit(x, np.ones((4, 3), np.float32), verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    assert [round(l.mask_sparsity(), 2) for l in pruned_layers(pruned)] == [0.5, 0.5, 0.5]


# ---- 3. strip of a model nested in another model ----------------------------------------------

@pytest.mark.parametrize("outer_kind", ["functional", "sequential"])
def test_strip_strips_and_reports_the_layers_of_a_nested_model(outer_kind):
    keras.utils.set_random_seed(2)
    backbone = tfscalpel.prune(
        keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a"),
                          keras.layers.Dense(8, name="b")], name="backbone"), sparsity=0.5)
    head = keras.layers.Dense(3, name="head")
    if outer_kind == "functional":
        inputs = keras.Input((16,))
        outer = keras.Model(inputs, head(backbone(inputs)))
    else:
        outer = keras.Sequential([keras.Input((16,)), backbone, head])
    tfscalpel.update_pruning(outer)
    stripped, report = tfscalpel.strip(outer, return_report=True)
    every = stripped._flatten_layers(include_self=False, recursive=True)
    assert not [l.name for l in every if isinstance(l, tfscalpel.PrunableMixin)]
    assert sorted(type(l).__name__ for l in every if not isinstance(l, keras.layers.InputLayer)) \
        == ["Dense", "Dense", "Dense", "Sequential"]
    assert [(r.name, r.pattern, r.nonzero, r.nonzero_groups) for r in report.layers] == [
        ("a", "group(g=4)", 64, 16), ("b", "group(g=4)", 32, 8)]
    assert report.group_sizes() == {"a": 4, "b": 4}
    x = _data(4)[0]
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), outer.predict(x, verbose=0))


def test_strip_removes_dead_nodes_inside_a_nested_gated_model():
    keras.utils.set_random_seed(2)
    gated = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu",
                                                                     name="a"),
                              tfscalpel.MaskLayer(name="mask_a"), keras.layers.Dense(6, name="b")],
                             name="backbone")
    gated.get_layer("mask_a").node_mask.assign((np.arange(8) >= 3).astype(np.float32))
    outer = keras.Sequential([keras.Input((16,)), gated, keras.layers.Dense(3, name="head")])
    stripped, report = tfscalpel.strip(outer, return_report=True)
    inner = stripped.layers[0]
    assert [tuple(l.kernel.shape) for l in inner.layers if hasattr(l, "kernel")] == [
        (16, 5), (5, 6)]
    assert not [l for l in inner.layers if isinstance(l, tfscalpel.MaskLayer)]
    assert [(r.name, r.nodes_kept, r.nodes_total) for r in report.layers] == [
        ("a", 5, 8), ("b", 6, 6)]
    x = _data(4)[0]
    np.testing.assert_allclose(stripped.predict(x, verbose=0), outer.predict(x, verbose=0),
                               atol=1e-6)


# ---- 4. a MaskLayer right after the model input or a Flatten ---------------------------------

@pytest.mark.parametrize("after", ["input", "flatten"])
def test_mask_after_input_or_flatten_folds_into_the_next_kernel_and_says_why(after):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((4, 4, 2) if after == "flatten" else (32,))
    x = keras.layers.Flatten(name="flat")(inputs) if after == "flatten" else inputs
    x = tfscalpel.MaskLayer(name="mask")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    alive = (np.arange(32) >= 10).astype(np.float32)
    model.get_layer("mask").node_mask.assign(alive)
    reason = ("it gates the model input, whose features cannot be removed" if after == "input"
              else "it follows Flatten 'flat', whose features are not units of a layer")
    with pytest.warns(UserWarning, match=r"strip: MaskLayer 'mask' has 10 dead nodes that cannot "
                                         r"be removed: " + reason + r".*folded into the input "
                                         r"rows of \['fc'\] as zero weights"):
        stripped, report = tfscalpel.strip(model, return_report=True)
    assert not [l for l in stripped.layers
                if isinstance(l, (tfscalpel.MaskLayer, keras.layers.Rescaling))]
    kernel = stripped.get_layer("fc").kernel.numpy()
    np.testing.assert_array_equal(kernel[:10], 0)
    np.testing.assert_array_equal(kernel[10:], model.get_layer("fc").kernel.numpy()[10:])
    assert [(r.name, r.nonzero) for r in report.layers] == [("fc", 22 * 3)]
    x = np.random.default_rng(0).standard_normal((4,) + tuple(inputs.shape[1:]))
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_mask_after_flatten_still_removes_channels_dead_at_every_position():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    x = tfscalpel.MaskLayer(name="mask")(keras.layers.Flatten(name="flat")(x))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    alive = np.ones(48, np.float32)
    alive[1::3] = 0  # conv channel 1 is dead at all 16 positions: the filter goes
    alive[0] = 0  # one position of channel 0: folded into fc
    model.get_layer("mask").node_mask.assign(alive)
    with pytest.warns(UserWarning, match="has 1 dead node that cannot be removed"):
        stripped = tfscalpel.strip(model)
    assert stripped.get_layer("conv").kernel.shape == (3, 3, 2, 2)
    kernel = stripped.get_layer("fc").kernel.numpy()
    assert kernel.shape == (32, 3) and np.count_nonzero(kernel[0]) == 0
    x = np.random.default_rng(0).standard_normal((4, 4, 4, 2))
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


# ---- 6. group_size larger than the layer's fan-in ---------------------------------------------

_TOO_WIDE = (r"layer 'a': group_size 8 is larger than the layer's fan-in 6 \(the inputs one "
             r"output unit sums, along which groups run\); allowed: 1 to 6 \(the exporter's "
             r"kernels take \[1, 2, 4\]\)")


@pytest.mark.parametrize("kwargs", [{"group_size": 8}, {"block_size": (8, 1)},
                                    {"per_layer": {"a": {"group_size": 8}}}])
def test_group_size_larger_than_the_fan_in_is_refused_naming_the_layer(kwargs):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(4, name="b")])
    with pytest.raises(ValueError, match=_TOO_WIDE):
        tfscalpel.prune(model, sparsity=0.5, **kwargs)


def test_group_size_larger_than_an_unbuilt_layer_is_refused_when_it_builds():
    layer = tfscalpel.prune_low_magnitude(keras.layers.Dense(3, name="a"), block_size=(8, 1))
    with pytest.raises(ValueError, match=r"layer 'a': group_size 8 is larger than the layer's "
                                         r"fan-in 4"):
        layer(np.ones((2, 4), np.float32))


def test_a_targets_width_is_capped_at_a_narrow_layers_fan_in():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(5, name="a"),
                              keras.layers.Dense(3, name="b")])
    the_plan = tfscalpel.plan(model, "x86-avx2")  # float32 groups of 8
    assert [(p.name, p.group_size) for p in the_plan.layers] == [("a", 8), ("b", 4)]
    assert the_plan.layers[1].reason.endswith("; fan-in 5 < the target's g: g=4")
    pruned = tfscalpel.prune(model, target="x86-avx2", sparsity=0.5)
    assert [l.pattern.group_size for l in pruned_layers(pruned)] == [8, 4]


# ---- 7. update_pruning inside a tf.function ----------------------------------------------------

def test_update_pruning_inside_tf_function_says_to_call_it_eagerly():
    import tensorflow as tf

    model = _pruned()

    @tf.function
    def train_step():
        tfscalpel.update_pruning(model)
        return tf.constant(0)

    with pytest.raises(RuntimeError, match=r"update_pruning\(\) was called inside a tf.function: "
                                           r"it runs the schedules .* must run eagerly, between "
                                           r"training steps\. Call it before your @tf.function "
                                           r"train step"):
        train_step()
    assert tfscalpel.update_pruning(model) == 0  # eagerly it works
    assert _sparsities(model) == [0.5, 0.5]


# ---- 8. re-pruning, fixed-sparsity patterns, and arguments that used to fail deep -------------

def test_re_pruning_a_pruned_model_applies_the_new_sparsity():
    model = _pruned()
    tfscalpel.update_pruning(model)
    assert _sparsities(model) == [0.5, 0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # re-pruning is not "cannot be pruned"
        again = tfscalpel.prune(model, sparsity=0.75, pattern="unstructured")
    assert [type(l).__name__ for l in again.layers] == ["GroupPrunedDense"] * 2
    tfscalpel.update_pruning(again)
    assert _sparsities(again) == [0.75, 0.75]
    # The weights pruned before stay pruned: they score 0 in the new ranking.
    for old, new in zip(pruned_layers(model), pruned_layers(again)):
        dead = keras.ops.convert_to_numpy(old.pruning_mask) == 0
        assert not keras.ops.convert_to_numpy(new.pruning_mask)[dead].any()
    assert _sparsities(model) == [0.5, 0.5]  # the source is untouched


def test_a_schedule_sparsity_that_2_4_ignores_is_a_warning():
    with pytest.warns(UserWarning, match=r"prune: layers \['a', 'b'\]: the pattern 2:4 fixes "
                                         r"their sparsity at 0\.5, so the schedule's sparsity "
                                         r"0\.9 is not used"):
        _pruned(pattern="2:4", sparsity=0.9)


@pytest.mark.parametrize("per_layer, message", [
    ({"a": 0.8}, r"layer 'a': per_layer values are dicts with settings from \['pattern', "
                 r"'group_size', 'importance', 'schedule', 'sparsity'\], e\.g\. "
                 r"per_layer=\{'a': \{'pattern': \.\.\.\}\}, got 0\.8"),
    ([("a", {"sparsity": 0.8})], r"per_layer must be a dict \{layer name: \{setting: value\}\} "
                                 r"with settings from \['pattern'.*got a list"),
])
def test_per_layer_that_is_not_a_dict_of_dicts_says_so(per_layer, message):
    with pytest.raises(ValueError, match=message):
        _pruned(per_layer=per_layer)


def test_unbuilt_sequential_is_refused_with_the_fix():
    model = keras.Sequential([keras.layers.Dense(8), keras.layers.Dense(4)], name="seq")
    with pytest.raises(ValueError, match=r"prune\(\): the Sequential model 'seq' is not built.*"
                                         r"start it with keras\.Input\(shape\), or call "
                                         r"model\.build\(input_shape\)"):
        tfscalpel.prune(model, sparsity=0.5)


def test_prune_outside_the_strategy_scope_says_to_call_it_inside():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # conftest's two CPUs
    with strategy.scope():
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a")])
    with pytest.raises(ValueError, match=r"prune\(\): the model's variables belong to a "
                                         r"MirroredStrategy, but prune\(\) runs outside its "
                                         r"scope.*call prune\(\) inside `with strategy\.scope"):
        tfscalpel.prune(model, sparsity=0.5)
    with strategy.scope():
        pruned = tfscalpel.prune(model, sparsity=0.5)
    assert len(pruned_layers(pruned)) == 1


def test_the_default_width_is_narrowed_for_a_layer_with_a_small_fan_in():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, name="a"),
                              keras.layers.Dense(4, name="b")])
    pruned = tfscalpel.prune(model, sparsity=0.5)  # default groups of 4; 'a' sums 3 inputs
    assert [l.pattern.group_size for l in pruned_layers(pruned)] == [2, 4]
