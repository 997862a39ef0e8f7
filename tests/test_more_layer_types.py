"""Pruned twins of SeparableConv2D, Conv3D, Conv2DTranspose, Embedding, EinsumDense and
MultiHeadAttention, and the custom-layer protocol (``get_prunable_weights``): exact masks along
each layer's contraction, the mask in the forward pass, strip to the stock layer with equal
outputs, and ``.keras`` round trips."""
import keras
import numpy as np
import pytest
from keras import ops

import tfscalpel
from layer_testlib import strip_and_reload
from tfscalpel.attention_layers import (
    GroupPrunedEinsumDense,
    GroupPrunedEmbedding,
    GroupPrunedMultiHeadAttention,
    einsum_fan_in_ndim,
)
from tfscalpel.conv_layers import (
    GroupPrunedConv2DTranspose,
    GroupPrunedConv3D,
    GroupPrunedSeparableConv2D,
)
from tfscalpel.custom_layers import PrunedWeights
from tfscalpel.strip import layer_report

L = keras.layers
HALF = tfscalpel.ConstantSparsity(0.5)


def _ramp(shape, axes):
    """A kernel whose magnitude grows along the flattened ``axes`` (1, 2, 3, ...), scaled by a
    little per other position so that no two groups tie."""
    shape = tuple(shape)
    moved = np.moveaxis(np.empty(shape), axes, range(len(axes)))
    n_in = int(np.prod([shape[a] for a in axes]))
    ramp = np.arange(1, n_in + 1, dtype="float32").reshape(n_in, 1)
    other = 1 + 0.01 * np.arange(moved.size // n_in, dtype="float32").reshape(1, -1)
    return np.moveaxis((ramp * other).reshape(moved.shape), range(len(axes)), axes)


def _prune_half(layer, axes):
    """Give a built twin the ramp kernel along ``axes`` and prune it to 50 % now."""
    layer.kernel.assign(_ramp(layer.kernel.shape, axes))
    layer.prune_to(sparsity=0.5)
    return layer.pruning_mask.numpy()


def _roundtrip(model, x, tmp_path, y_dim):
    """Two fit steps, then strip and save/load both: every output equals the pruned model's."""
    rng = np.random.default_rng(0)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, rng.normal(size=(len(x), y_dim)).astype("float32"), batch_size=len(x) // 2,
              epochs=1, verbose=0, callbacks=[tfscalpel.UpdatePruningStep()])
    return strip_and_reload(model, x, tmp_path)


# -- convolutions ---------------------------------------------------------------------------------
def test_separable_prunes_the_pointwise_kernel_along_its_inputs():
    layer = GroupPrunedSeparableConv2D(4, 3, schedule=HALF, pattern=tfscalpel.GroupPattern(4))
    layer.build((None, 5, 5, 8))
    assert tuple(layer.pruning_mask.shape) == (1, 1, 8, 4)  # pointwise (1, 1, cin, cout)
    mask = _prune_half(layer, [0, 1, 2])
    np.testing.assert_array_equal(mask[0, 0, :4], 0)  # the small group of cin 0..3 goes
    np.testing.assert_array_equal(mask[0, 0, 4:], 1)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 8)).astype("float32")
    stock = L.SeparableConv2D(4, 3)
    stock.build((None, 5, 5, 8))
    stock.set_weights([layer.depthwise_kernel.numpy(), layer.kernel.numpy() * mask,
                       layer.bias.numpy()])
    np.testing.assert_allclose(layer(x).numpy(), stock(x).numpy(), rtol=1e-5, atol=1e-5)


def test_conv3d_groups_run_along_kd_kh_kw_cin():
    layer = GroupPrunedConv3D(3, 2, schedule=HALF, pattern=tfscalpel.GroupPattern(4))
    layer.build((None, 4, 4, 4, 2))
    mask = _prune_half(layer, [0, 1, 2, 3])
    # fan-in kd*kh*kw*cin = 16 row-major: the first 8 (kd = 0) score lowest
    np.testing.assert_array_equal(mask[0], 0)
    np.testing.assert_array_equal(mask[1], 1)


def test_conv2d_transpose_groups_run_along_input_channels():
    layer = GroupPrunedConv2DTranspose(3, 2, schedule=HALF, pattern=tfscalpel.GroupPattern(4))
    layer.build((None, 4, 4, 8))
    assert tuple(layer.kernel.shape) == (2, 2, 3, 8)  # (kh, kw, out, in)
    mask = _prune_half(layer, [3])
    np.testing.assert_array_equal(mask[..., :4], 0)  # per (kh, kw, out): in 0..3 go
    np.testing.assert_array_equal(mask[..., 4:], 1)
    report = layer_report("t", layer._numpy_masked_kernel(), "group", 4, fan_in_ndim=-1)
    assert (report.rows, report.cols, report.nonzero_groups) == (12, 8, 12)


def test_conv_twins_train_strip_and_reload(tmp_path):
    inputs = keras.Input((6, 6, 8))
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(inputs)
    x = L.Conv2DTranspose(8, 3, strides=2, name="tr")(x)
    x = L.Reshape((13, 13, 8, 1))(x)
    x = L.Conv3D(4, (3, 3, 2), name="c3")(x)
    x = L.GlobalAveragePooling3D()(x)
    pruned = tfscalpel.prune(keras.Model(inputs, L.Dense(3, name="out")(x)), sparsity=0.5,
                             group_size=4)
    assert [type(pruned.get_layer(n)) for n in ("sep", "tr", "c3")] == [
        GroupPrunedSeparableConv2D, GroupPrunedConv2DTranspose, GroupPrunedConv3D]
    x = np.random.default_rng(1).normal(size=(8, 6, 6, 8)).astype("float32")
    stripped, report = _roundtrip(pruned, x, tmp_path, 3)
    assert [type(stripped.get_layer(n)) for n in ("sep", "tr", "c3")] == [
        L.SeparableConv2D, L.Conv2DTranspose, L.Conv3D]
    # rows x cols (TFLite view) and groups: sep 8 filters x 8 inputs; tr 3*3*8 rows x 8 in;
    # c3 4 filters x 3*3*2*1 = 18 (5 groups, the last ragged)
    assert [(report[n].rows, report[n].cols, report[n].total_groups, report[n].nonzero_groups)
            for n in ("sep", "tr", "c3")] == [(8, 8, 16, 8), (72, 8, 144, 72), (4, 18, 20, 10)]


def test_separable_conv_loses_channels_under_node_pruning():
    from gating_testlib import kill

    inputs = keras.Input((5, 5, 3))
    x = tfscalpel.MaskLayer(name="m1")(L.Conv2D(6, 1, name="c1")(inputs))
    x = tfscalpel.MaskLayer(name="m2")(L.SeparableConv2D(4, 3, name="sep")(x))
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(x))
    kill(model, {"m1": [1, 4], "m2": [0]})
    stripped = tfscalpel.strip(model)
    sep = stripped.get_layer("sep")
    assert tuple(sep.depthwise_kernel.shape) == (3, 3, 4, 1)
    assert tuple(sep.pointwise_kernel.shape) == (1, 1, 4, 3)
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


# -- embeddings and attention ---------------------------------------------------------------------
def test_embedding_groups_run_along_each_tokens_row():
    layer = GroupPrunedEmbedding(3, 8, schedule=HALF, pattern=tfscalpel.GroupPattern(4))
    layer.build()
    mask = _prune_half(layer, [1])
    np.testing.assert_array_equal(mask[:, :4], 0)  # every token loses dims 0..3
    np.testing.assert_array_equal(mask[:, 4:], 1)
    ids = np.array([[0, 2, 1]])
    np.testing.assert_array_equal(layer(ids).numpy(), (layer.kernel.numpy() * mask)[ids])


@pytest.mark.parametrize("equation, kernel, ndim", [
    ("abc,cd->abd", "cd", 1), ("abc,cde->abde", "cde", 1), ("abcd,cde->abe", "cde", 2),
    ("abc,dc->abd", "dc", -1)])
def test_einsum_contraction_axes_come_from_the_equation(equation, kernel, ndim):
    assert einsum_fan_in_ndim(equation) == ndim


def test_einsum_contraction_in_the_middle_is_refused_by_name():
    with pytest.raises(ValueError, match=r"layer 'e'.*'abc,dce->abde'.*\['c'\].*first or the last"):
        einsum_fan_in_ndim("abc,dce->abde", "e")


def test_einsum_dense_mha_projection_masks_groups_of_the_model_width():
    layer = GroupPrunedEinsumDense("abc,cde->abde", (None, 2, 3), schedule=HALF,
                                   pattern=tfscalpel.GroupPattern(4))
    layer.build((None, 5, 8))
    assert layer.fan_in_ndim == 1
    mask = _prune_half(layer, [0])
    np.testing.assert_array_equal(mask[:4], 0)
    np.testing.assert_array_equal(mask[4:], 1)
    out = GroupPrunedEinsumDense("abcd,cde->abe", (None, 8), schedule=HALF, pattern=tfscalpel.GroupPattern(4))
    out.build((None, 5, 2, 3))
    assert out.fan_in_ndim == 2
    # contraction heads*head_dim = 6: a group of 4 and a ragged tail of 2 per output; half of
    # the 16 groups go: the first group of every output (RMS 2.7 against the tail's 5.5)
    mask = _prune_half(out, [0, 1]).reshape(6, 8)
    np.testing.assert_array_equal(mask[:4], 0)
    np.testing.assert_array_equal(mask[4:], 1)


def _transformer():
    inputs = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 16, name="emb")(inputs)
    x = L.Add()([x, L.MultiHeadAttention(2, 8, name="mha")(x, x)])
    x = L.LayerNormalization()(x)
    x = L.EinsumDense("abc,cd->abd", (6, 12), bias_axes="d", activation="relu", name="ff")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def test_transformer_twins_train_strip_and_reload(tmp_path):
    pruned = tfscalpel.prune(_transformer(), sparsity=0.5, group_size=4)
    assert isinstance(pruned.get_layer("emb"), GroupPrunedEmbedding)
    mha = pruned.get_layer("mha")
    assert isinstance(mha, GroupPrunedMultiHeadAttention)
    assert [p.name for p in mha.projections()] == ["query", "key", "value", "attention_output"]
    assert [p.fan_in_ndim for p in mha.projections()] == [1, 1, 1, 2]
    ids = np.random.default_rng(3).integers(0, 20, size=(8, 6)).astype("int32")
    stripped, report = _roundtrip(pruned, ids, tmp_path, 3)
    assert [type(stripped.get_layer(n)) for n in ("emb", "mha", "ff")] == [
        L.Embedding, L.MultiHeadAttention, L.EinsumDense]
    for name in ("emb", "mha/query", "mha/key", "mha/value", "mha/attention_output", "ff"):
        assert report[name].nonzero_groups * 2 == report[name].total_groups, name
    # the stripped projections are the masked ones
    np.testing.assert_array_equal(stripped.get_layer("mha")._query_dense.kernel.numpy(),
                                  mha._query_dense.masked_kernel().numpy())


# -- the custom-layer protocol --------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tfscalpel_tests")
class ScaledMatmul(keras.layers.Layer):
    """A user layer with two weights, of which one is prunable."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")

    def call(self, x):
        return ops.matmul(x, self.w) * self.scale

    def get_prunable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_layer_with_get_prunable_weights_is_pruned_without_a_twin(tmp_path):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, L.Dense(3, name="out")(ScaledMatmul(6, name="sm")(inputs)))
    pruned = tfscalpel.prune(model, sparsity=0.5, group_size=4)
    wrapper = pruned.get_layer("sm")
    assert isinstance(wrapper, PrunedWeights) and isinstance(wrapper.layer, ScaledMatmul)
    [mask] = wrapper.masks
    assert mask.kernel is wrapper.layer.w
    np.testing.assert_array_equal(wrapper.layer.w.numpy(), model.get_layer("sm").w.numpy())
    x = np.random.default_rng(4).normal(size=(8, 8)).astype("float32")
    stripped, report = _roundtrip(pruned, x, tmp_path, 3)
    assert type(stripped.get_layer("sm")) is ScaledMatmul
    w = stripped.get_layer("sm").w.numpy()
    np.testing.assert_array_equal(w, wrapper.layer.w.numpy() * mask.pruning_mask.numpy())
    # 8 inputs x 6 units = 12 groups of 4, half kept; every group all zero or all kept
    assert (report["sm/w"].total_groups, report["sm/w"].nonzero_groups) == (12, 6)
    blocks = (w.reshape(2, 4, 6) != 0)
    assert np.all(blocks.all(axis=1) | ~blocks.any(axis=1))


def test_custom_layer_returning_a_foreign_weight_is_refused():
    other = keras.Variable(np.zeros((8, 6), "float32"))

    class Bad(ScaledMatmul):
        def get_prunable_weights(self):
            return [other]

    inputs = keras.Input((8,))
    model = keras.Model(inputs, Bad(6, name="bad")(inputs))
    with pytest.raises(ValueError, match="layer 'bad'.*not one of its weights"):
        tfscalpel.prune(model, sparsity=0.5)


def test_handlers_name_the_prunable_weights_of_every_new_type():
    from tfscalpel.layer_handlers import get_handler

    inputs = keras.Input((8,))
    model = keras.Model(inputs, ScaledMatmul(6, name="sm")(inputs))
    sm = model.get_layer("sm")
    assert get_handler(sm).prunable_weights(sm) == [sm.w]
    wrapper = tfscalpel.prune(model, sparsity=0.5).get_layer("sm")
    assert get_handler(wrapper).prunable_weights(wrapper) == [wrapper.layer.w]
    mha = L.MultiHeadAttention(2, 4, name="mha")
    mha(np.zeros((1, 3, 8), "float32"), np.zeros((1, 3, 8), "float32"))
    assert [tuple(w.shape) for w in get_handler(mha).prunable_weights(mha)] == [
        (8, 2, 4), (8, 2, 4), (8, 2, 4), (2, 4, 8)]
    sep = L.SeparableConv2D(4, 3)
    sep.build((None, 5, 5, 8))
    assert get_handler(sep).prunable_weights(sep) == [sep.pointwise_kernel]
    assert get_handler(sep).group_axes(sep) == (0, 1, 2)
    tr = L.Conv2DTranspose(3, 2)
    tr.build((None, 4, 4, 8))
    assert get_handler(tr).group_axes(tr) == (3,) and get_handler(tr).fan_in(tr) == 8


def test_conv2d_transpose_and_conv3d_lose_channels_under_node_pruning():
    from gating_testlib import kill

    inputs = keras.Input((4, 4, 3))
    x = tfscalpel.MaskLayer(name="m1")(L.Conv2D(6, 1, name="c1")(inputs))
    x = tfscalpel.MaskLayer(name="m2")(L.Conv2DTranspose(5, 2, strides=2, name="tr")(x))
    x = L.Reshape((8, 8, 1, 5))(x)  # keeps the last axis: a channel-wise Reshape
    x = L.Conv3D(4, (2, 2, 1), name="c3")(x)
    model = keras.Model(inputs, x)
    kill(model, {"m1": [0, 4], "m2": [2]})
    stripped = tfscalpel.strip(model)
    # (kh, kw, out, in): 4 of 6 inputs and 4 of 5 outputs kept
    assert tuple(stripped.get_layer("tr").kernel.shape) == (2, 2, 4, 4)
    assert tuple(stripped.get_layer("c3").kernel.shape) == (2, 2, 1, 4, 4)
    x = np.random.default_rng(8).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
