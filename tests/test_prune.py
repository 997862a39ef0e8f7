"""prune(): cloning with weights, per-layer control, global ranking, warnings and errors."""
import keras
import numpy as np
import pytest

import tfscalpel


def _mlp():
    inputs = keras.Input((20,))
    x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc2")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _x():
    return np.random.default_rng(0).normal(size=(8, 20)).astype("float32")


def test_functional_clone_keeps_weights_and_outputs():
    model = _mlp()
    pruned = tfscalpel.prune(model, sparsity=0.5)
    assert [type(l).__name__ for l in pruned.layers[1:]] == [
        "GroupPrunedDense", "BatchNormalization", "GroupPrunedDense", "GroupPrunedDense"]
    np.testing.assert_allclose(pruned.predict(_x(), verbose=0), model.predict(_x(), verbose=0), rtol=1e-6)
    assert all(isinstance(l, keras.layers.Dense) and not isinstance(l, tfscalpel.PrunableMixin)
               for l in model.layers if l.name.startswith("fc"))  # original untouched


def test_sequential_and_per_layer_control():
    model = keras.Sequential([
        keras.Input((12,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(8, name="b"),
        keras.layers.Dense(3, name="c")])
    pruned = tfscalpel.prune(
        model, sparsity=0.5, layers=["a", "b"],
        per_layer={"b": {"pattern": "2:4", "sparsity": 0.5}, "a": {"group_size": 2}})
    a, b, c = pruned.layers
    assert a.pattern == tfscalpel.GroupPattern(2) and b.pattern == tfscalpel.NMPattern(2, 4)
    assert type(c) is keras.layers.Dense
    assert b.importance == tfscalpel.Magnitude()
    tfscalpel.update_pruning(pruned)
    assert a.mask_sparsity() == 0.5 and b.mask_sparsity() == 0.5


def test_layer_predicate():
    pruned = tfscalpel.prune(_mlp(), sparsity=0.3, layers=lambda l: l.name != "out")
    assert [l.name for l in tfscalpel.pruned_layers(pruned)] == ["fc1", "fc2"]


def test_global_sparsity_ranks_across_layers():
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(40, name="a"),
                              keras.layers.Dense(40, name="b")])
    a, b = model.layers
    a.set_weights([rng.normal(size=(40, 40)).astype("float32"), np.zeros(40, "float32")])
    # b: most weights tiny, a few huge -> after normalisation its small ones go first
    wb = rng.normal(size=(40, 40)).astype("float32") * 0.01
    wb[:4] = 10.0
    b.set_weights([wb, np.zeros(40, "float32")])
    pruned = tfscalpel.prune(model, sparsity=0.6, pattern="unstructured", global_sparsity=True)
    tfscalpel.update_pruning(pruned)
    pa, pb = pruned.layers
    total = (pa.pruning_mask.numpy().sum() + pb.pruning_mask.numpy().sum()) / 3200
    assert total == pytest.approx(0.4, abs=1e-3)
    assert pb.mask_sparsity() > 0.8 and pa.mask_sparsity() < 0.45


def _two_layer_net():
    """a: 4 -> 4 with weights 1..16; out: 4 -> 2 whose column 1 is tiny next to column 0, so a
    global ranking on RMS-normalised scores puts all of column 1 below every weight of a."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="a"),
                              keras.layers.Dense(2, name="out")])
    a, out = model.layers
    a.set_weights([np.arange(1, 17, dtype="float32").reshape(4, 4), np.zeros(4, "float32")])
    out.set_weights([np.array([[10, 0.01], [10, 0.02], [10, 0.01], [10, 0.03]], "float32"),
                     np.zeros(2, "float32")])
    return model


def _globally_pruned_masks(sparsity):
    """The masks of ``_two_layer_net`` after one global unstructured ranking at ``sparsity``."""
    pruned = tfscalpel.prune(_two_layer_net(), sparsity=sparsity, pattern="unstructured",
                             global_sparsity=True)
    tfscalpel.update_pruning(pruned)
    a, out = pruned.layers
    return a.pruning_mask.numpy(), out.pruning_mask.numpy()


def test_global_ranking_keeps_one_block_per_output_unit():
    # 24 weights at 50 %: 12 go. The plain ranking would take out's column 1 (4) and a's 8
    # smallest, deleting class 1; the floor keeps that column's best weight (row 3, 0.03) and
    # a's 9th smallest (9) goes instead, so 12 still go.
    a_mask, out_mask = _globally_pruned_masks(0.5)
    np.testing.assert_array_equal(out_mask, [[1, 0], [1, 0], [1, 0], [1, 1]])
    np.testing.assert_array_equal(a_mask,
                                  [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    kept = a_mask.sum() + out_mask.sum()
    assert kept == 12  # the floor counts: the achieved sparsity is the target's 50 %


def test_global_ranking_floor_when_it_exceeds_the_budget():
    # 95 % of 24 would keep 1 weight; the floor alone is 4 + 2 (one per unit), all kept: the
    # achieved sparsity is 18 / 24, not 95 %.
    a_mask, out_mask = _globally_pruned_masks(0.95)
    np.testing.assert_array_equal(out_mask, [[1, 0], [0, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(a_mask,
                                  [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])


def test_global_threshold_keeps_one_block_per_output_unit():
    # StagedThreshold at 0.5 (normalised): out's column 1 is all below it, its best weight stays.
    schedule = tfscalpel.StagedThreshold([0.5], stage_steps=10)
    pruned = tfscalpel.prune(_two_layer_net(), schedule=schedule, pattern="unstructured",
                             global_sparsity=True)
    tfscalpel.update_pruning(pruned, step=0)
    a, out = pruned.layers
    np.testing.assert_array_equal(out.pruning_mask.numpy(), [[1, 0], [1, 0], [1, 0], [1, 1]])
    # a's normalised scores are k / 9.67 (RMS of 1..16): 1..4 are at or below 0.5, 5.. above
    np.testing.assert_array_equal(a.pruning_mask.numpy(),
                                  [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_global_ranking_floor_per_group_of_a_conv_filter():
    # Groups (g=2 over the fan-in): every output filter of both conv layers keeps its best group
    inputs = keras.Input((3, 3, 2))
    x = keras.layers.Conv2D(2, 1, name="c1")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="c2")(x))
    model.get_layer("c1").set_weights([np.array([[[[5, 6], [7, 8]]]], "float32"), np.zeros(2, "float32")])
    model.get_layer("c2").set_weights([np.array([[[[9, 0.1], [9, 0.2]]]], "float32"), np.zeros(2, "float32")])
    pruned = tfscalpel.prune(model, sparsity=0.5, group_size=2, global_sparsity=True)
    tfscalpel.update_pruning(pruned)
    # one group per filter: 4 groups in all, 2 may go, but every filter's only group is its floor
    for name in ("c1", "c2"):
        assert pruned.get_layer(name).pruning_mask.numpy().min() == 1


def test_unprunable_layers_listed_in_one_warning():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.SeparableConv2D(3, 3, name="sep")(inputs)
    x = keras.layers.Conv2DTranspose(3, 1, name="up")(x)
    x = keras.layers.DepthwiseConv2D(1, name="dw")(x)
    x = keras.layers.PReLU(name="prelu")(x)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.PReLU(name="prelu2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, x)
    with pytest.warns(UserWarning, match=r"cannot be pruned and stay dense: prelu \(PReLU\)"
                                         r", prelu2 \(PReLU\)$"):
        pruned = tfscalpel.prune(model, sparsity=0.5)
    assert [l.name for l in tfscalpel.pruned_layers(pruned)] == ["sep", "up", "dw", "conv", "fc"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sparsity=1.0), "prune\\(\\): sparsity must be a number in \\[0, 1\\)"),
        (dict(sparsity=0.5, group_size=0), "group_size must be an integer >= 1"),
        (dict(sparsity=0.5, pattern="5:4"), "n must be <= m"),
        (dict(sparsity=0.5, layers=["fc1", "nope"]), "layers names unknown layers \\['nope'\\]"),
        (dict(sparsity=0.5, per_layer={"ghost": {"sparsity": 0.1}}), "unknown layers \\['ghost'\\]"),
        (dict(sparsity=0.5, per_layer={"fc2": {"sparsity": 1.5}}), "layer 'fc2': sparsity must"),
        (dict(sparsity=0.5, per_layer={"fc2": {"sparsty": 0.5}}), "layer 'fc2': unknown per_layer keys"),
        (dict(sparsity=0.5, per_layer={"bn": {"sparsity": 0.5}}), "not pruned: \\['bn'\\]"),
        (dict(schedule=tfscalpel.ConstantSparsity(0.5), sparsity=0.5), "exactly one of schedule= or sparsity="),
        (dict(), "exactly one of schedule= or sparsity="),
        (dict(sparsity=0.5, pattern="2:4", global_sparsity=True), "layer 'fc1': a global ranking needs a free sparsity"),
        (dict(sparsity=0.5, importance="magnitude"), "layer 'fc1': importance 'magnitude'"),
    ],
)
def test_bad_arguments_name_layer_and_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfscalpel.prune(_mlp(), **kwargs)


def test_schedule_that_ends_before_it_begins():
    with pytest.raises(ValueError, match="ends before it begins"):
        tfscalpel.prune(_mlp(), schedule=tfscalpel.ConstantSparsity(0.5, begin_step=9, end_step=3))


def test_unbuilt_subclassed_model_rejected_with_advice():
    class M(keras.Model):
        def call(self, x):
            return x

    # (built subclassed models are pruned: tests/test_plans_and_subclassed.py)
    with pytest.raises(ValueError, match=r"prune\(\): the subclassed model 'm' is not built: "
                                         r"call the model on a batch"):
        tfscalpel.prune(M(name="m"), sparsity=0.5)
