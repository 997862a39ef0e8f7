"""Reference model builders: structure, parameter counts, and a short real training run."""
import keras
import numpy as np
import pytest

from tfscalpel import datasets, models


@pytest.mark.parametrize(
    "builder, params, names, input_shape",
    [
        (models.lenet_300_100, 266_610, ["fc1", "fc2", "fc3"], (784,)),
        (models.lenet5, 431_080, ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2"], (28, 28, 1)),
        (models.convnet, 87_978,
         ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "flatten", "fc1"], (28, 28, 1)),
    ],
)
def test_structure(builder, params, names, input_shape):
    model = builder()
    assert model.count_params() == params
    assert [layer.name for layer in model.layers[1:]] == names
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, 10)
    assert model.layers[-1].get_config()["activation"] == "linear"  # logits


def test_layer_shapes():
    assert models.lenet5().get_layer("flatten").output.shape == (None, 800)
    assert models.convnet().get_layer("flatten").output.shape == (None, 1024)
    assert models.lenet5().get_layer("conv1").get_config()["activation"] == "linear"  # as in Caffe


def test_num_classes():
    assert models.lenet_300_100(num_classes=3).output_shape == (None, 3)


def test_lenet_300_100_learns_mnist():
    (x, y), (xt, yt) = datasets.load_mnist()
    model = models.compile_classifier(models.lenet_300_100(), keras.optimizers.Adam(1e-3))
    model.fit(datasets.to_model_inputs(x[:4000], flatten=True), y[:4000],
              epochs=2, batch_size=64, verbose=0, shuffle=False)
    _, acc = model.evaluate(datasets.to_model_inputs(xt[:2000], flatten=True), yt[:2000], verbose=0)
    assert acc > 0.85  # chance is 0.1; misaligned labels or images would stay near it


def test_convnet_runs_on_fashion_inputs():
    (_, _), (xt, _) = datasets.load_fashion_mnist()
    logits = models.convnet()(datasets.to_model_inputs(xt[:8]))
    assert logits.shape == (8, 10) and np.all(np.isfinite(np.asarray(logits)))
