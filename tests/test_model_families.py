"""One test per model family (issue 17, item 8, training side): plan -> prune -> two fit steps
-> strip -> save/load, at small input sizes (weights=None), and the stripped model's outputs equal
the pruned one's. Node plans get a third of every gate killed before strip, so node removal runs
through the family's coupling (residual Adds, squeeze-excite, depthwise convolutions).

EfficientNetB0 is marked ``slow`` (opt-in: ``pytest -m slow tests/test_model_families.py``)."""
import keras
import numpy as np
import pytest

import tfscalpel
from gating_testlib import kill

L = keras.layers


def _train_strip_reload(model, x, target, tmp_path, **prune_args):
    rng = np.random.default_rng(0)
    plan = tfscalpel.plan(model, target)
    pruned = tfscalpel.prune(model, target=target, **prune_args)
    # Eager: two steps do not pay back tracing a train function for a 150-layer graph.
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    pruned.fit(x, rng.normal(size=(len(x), 10)).astype("float32"), batch_size=len(x) // 2,
               epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])
    gates = tfscalpel.mask_layers(pruned)
    kill(pruned, {g.name: np.arange(0, g.units, 3) for g in gates})
    expected = _run(pruned, x)
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    np.testing.assert_allclose(_run(stripped, x), expected, rtol=1e-4, atol=1e-4)
    stripped.save(tmp_path / "stripped.keras")
    loaded = keras.models.load_model(tmp_path / "stripped.keras")
    np.testing.assert_allclose(_run(loaded, x), expected, rtol=1e-4, atol=1e-4)
    return plan, pruned, stripped, report


def _run(model, x):
    """Inference outputs, eagerly (no predict function to trace)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def _images(n=4, size=32):
    return np.random.default_rng(1).normal(size=(n, size, size, 3)).astype("float32")


def _kept(report):
    kept = [(r.nodes_kept, r.nodes_total) for r in report.layers if r.nodes_total is not None]
    return sum(k for k, _ in kept), sum(t for _, t in kept)


def test_mobilenet_v2(tmp_path):
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)
    plan, pruned, stripped, report = _train_strip_reload(model, _images(), "x86-avx2",
                                                         tmp_path, sparsity=0.5)
    assert {p.layer_type for p in plan.layers} == {"conv", "depthwise", "dense"}
    kept, total = _kept(report)
    assert kept < total
    assert stripped.count_params() < model.count_params()


def _resnet_like():
    inputs = keras.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization(axis=3)(L.Conv2D(16, 3, padding="same")(inputs)))
    for width, stride in ((16, 1), (32, 2)):
        y = L.ReLU()(L.BatchNormalization(axis=3)(
            L.Conv2D(width, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization(axis=3)(L.Conv2D(width, 3, padding="same")(y))
        shortcut = x if stride == 1 else L.BatchNormalization(axis=3)(
            L.Conv2D(width, 1, strides=stride)(x))
        x = L.ReLU()(L.Add()([shortcut, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10)(x))


def test_resnet_style_net_node_plan_removes_channels(tmp_path):
    model = _resnet_like()
    _, _, stripped, report = _train_strip_reload(model, _images(), "x86-avx2", tmp_path,
                                                 sparsity=0.5)
    kept, total = _kept(report)
    assert kept < total
    assert stripped.count_params() < model.count_params()


def test_resnet_style_net_gpu_plan_has_2_4_layers(tmp_path):
    plan, _, stripped, _ = _train_strip_reload(_resnet_like(), _images(), "gpu-ampere",
                                               tmp_path)
    assert sum(p.method == "node+2:4" for p in plan.layers) >= 4
    assert tfscalpel.check_nm(stripped).ok


def _encoder(seq=8, vocab=50, d=16):
    inputs = keras.Input((seq,), dtype="int32")
    x = L.Embedding(vocab, d, name="emb")(inputs)
    for i in range(2):
        a = L.MultiHeadAttention(2, d // 2, name=f"mha{i}")(x, x)
        x = L.LayerNormalization(name=f"ln{i}a")(L.Add()([x, a]))
        f = L.Dense(2 * d, activation="relu", name=f"ff{i}a")(x)
        f = L.Dense(d, name=f"ff{i}b")(f)
        x = L.LayerNormalization(name=f"ln{i}b")(L.Add()([x, f]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(10, name="head")(x))


def test_transformer_encoder(tmp_path):
    tokens = np.random.default_rng(2).integers(0, 50, size=(4, 8)).astype("int32")
    plan, pruned, stripped, report = _train_strip_reload(_encoder(), tokens, "x86-avx2",
                                                         tmp_path, sparsity=0.5)
    assert {p.name: p.method for p in plan.layers} == {
        "emb": "group", "mha0": "group", "mha1": "group", "ff0a": "group", "ff0b": "group",
        "ff1a": "group", "ff1b": "group", "head": "group"}
    names = {r.name for r in report.layers}
    assert {"emb", "mha0/query", "mha1/attention_output", "ff1b", "head"} <= names
    assert all(abs(r.nonzero_groups / r.total_groups - 0.5) < 0.05 for r in report.layers)


def test_transformer_encoder_gpu_plan_removes_heads(tmp_path):
    tokens = np.random.default_rng(2).integers(0, 50, size=(4, 8)).astype("int32")
    # ff*b write the residual stream, which the next attention (opaque to node removal) reads:
    # kept dense
    plan, pruned, stripped, report = _train_strip_reload(
        _encoder(), tokens, "gpu-ampere", tmp_path,
        per_layer={"ff0b": {"method": "none"}, "ff1b": {"method": "none"}})
    assert [plan[n].method for n in ("mha0", "mha1")] == ["node", "node"]
    assert [type(pruned.get_layer(n)).__name__ for n in ("mha0", "mha1")] == [
        "GatedMultiHeadAttention"] * 2
    # _train_strip_reload kills every third gate: head 0 of each attention's 2
    assert [stripped.get_layer(n).num_heads for n in ("mha0", "mha1")] == [1, 1]
    nodes = {r.name: (r.nodes_kept, r.nodes_total) for r in report.layers}
    assert nodes["mha0/query"] == nodes["mha1/attention_output"] == (1, 2)


@keras.saving.register_keras_serializable(package="tfscalpel_tests")
class Classifier(keras.Model):
    """A subclassed convnet."""

    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.convs = [L.Conv2D(8, 3, strides=2, activation="relu"),
                      L.Conv2D(16, 3, strides=2, activation="relu")]
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(classes)

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.head(self.pool(x))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def test_subclassed_model(tmp_path):
    x = _images()
    model = Classifier()
    model(x)
    plan, pruned, stripped, report = _train_strip_reload(model, x, "cortex-m4", tmp_path,
                                                         sparsity=0.5)
    assert [p.method for p in plan.layers] == ["group", "group", "group"]
    assert [type(layer) for layer in (*stripped.convs, stripped.head)] == [
        L.Conv2D, L.Conv2D, L.Dense]
    assert len(report.layers) == 3


@pytest.mark.slow  # opt-in (-m slow): ~240 layers, about a minute on two idle cores
def test_efficientnet_b0(tmp_path):
    model = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10)
    _, _, stripped, report = _train_strip_reload(model, _images(2), "x86-avx2", tmp_path,
                                                 sparsity=0.5)
    kept, total = _kept(report)
    assert kept < total
