"""Helpers for tests of node pruning with MaskLayer gates."""
import numpy as np


def kill(model, dead):
    """Set MaskLayer masks: ``{name: [dead indices]}``; gates follow so nothing is ambiguous."""
    for name, idx in dead.items():
        layer = model.get_layer(name)
        mask = np.ones(layer.units, "float32")
        mask[idx] = 0
        layer.node_mask.assign(mask)
        layer.set_gates(mask * 0.9 + 0.05)
