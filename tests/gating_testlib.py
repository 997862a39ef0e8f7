"""Helpers for tests of node pruning with MaskLayer gates."""
import numpy as np

from tfscalpel.gates import mask_layers


def kill(model, dead):
    """Set MaskLayer masks: ``{name: [dead indices]}``; gates follow so nothing is ambiguous.
    Nested MaskLayers (a GatedMultiHeadAttention's head gates) are found by name too."""
    nested = {layer.name: layer for layer in mask_layers(model)}
    for name, idx in dead.items():
        layer = nested[name] if name in nested else model.get_layer(name)
        mask = np.ones(layer.units, "float32")
        mask[idx] = 0
        layer.node_mask.assign(mask)
        layer.set_gates(mask * 0.9 + 0.05)
