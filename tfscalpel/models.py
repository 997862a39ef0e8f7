"""Reference networks of the Scalpel and Deep Compression papers, as Keras 3 functional models.

Every model outputs **logits** (no softmax layer), so the last layer is an ordinary prunable
dense layer; train with ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``
(:func:`compile_classifier` does that). Layers carry fixed names (``conv1``, ``fc1``, ...)
so pruning configs and reports can refer to them. Inputs are what
:func:`tfscalpel.datasets.to_model_inputs` produces: ``(N, 784)`` for LeNet-300-100 and
``(N, 28, 28, 1)`` for the convolutional nets.
"""
from __future__ import annotations

import keras
from keras import layers

__all__ = ["lenet_300_100", "lenet5", "convnet", "compile_classifier"]


def lenet_300_100(num_classes: int = 10) -> keras.Model:
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): 784-300-100-10 fully connected.

    Layers ``fc1`` (300, ReLU), ``fc2`` (100, ReLU), ``fc3`` (logits); input ``(784,)``.
    266,610 parameters for 10 classes.
    """
    x = inputs = keras.Input((784,), name="input")
    x = layers.Dense(300, activation="relu", name="fc1")(x)
    x = layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = layers.Dense(num_classes, name="fc3")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def lenet5(num_classes: int = 10) -> keras.Model:
    """Caffe's LeNet-5 as used by Scalpel and Deep Compression (431,080 parameters).

    ``conv1`` 20 5x5 -> ``pool1`` 2x2 max -> ``conv2`` 50 5x5 -> ``pool2`` 2x2 max ->
    ``fc1`` 500 ReLU -> ``fc2`` logits; input ``(28, 28, 1)``, valid padding. As in Caffe's
    ``lenet_train_test.prototxt`` the convolutions have no activation; only ``fc1`` has a ReLU.
    """
    x = inputs = keras.Input((28, 28, 1), name="input")
    x = layers.Conv2D(20, 5, name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, name="fc2")(x)
    return keras.Model(inputs, outputs, name="lenet5")


def convnet(num_classes: int = 10) -> keras.Model:
    """Scalpel's small ConvNet (Caffe ``cifar10_full``: 3 conv + 1 FC) for 28x28x1 inputs.

    ``conv1`` 32 5x5 ReLU -> ``pool1`` 3x3/2 max -> ``conv2`` 32 5x5 ReLU -> ``pool2`` 3x3/2
    avg -> ``conv3`` 64 5x5 ReLU -> ``pool3`` 3x3/2 avg -> ``fc1`` logits. Same padding
    throughout (28 -> 14 -> 7 -> 4). Adapted from CIFAR-10 (32x32x3, which no offline package
    ships) to Fashion-MNIST: one input channel, and Caffe's LRN layers are dropped.
    87,978 parameters for 10 classes.
    """
    x = inputs = keras.Input((28, 28, 1), name="input")
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="pool2")(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu", name="conv3")(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="fc1")(x)
    return keras.Model(inputs, outputs, name="convnet")


def compile_classifier(model: keras.Model, optimizer="adam") -> keras.Model:
    """Compile a logits model with sparse categorical cross-entropy (``from_logits=True``)."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
