"""Test helper: corruptions of a layer's constant arrays (a dict by name, or a list by index),
as functions ``mutate(arrays)`` that the format-violation tables of both custom ops' kernel
tests (tests/test_kernels.py, tests/test_nm_kernels.py) apply before building the layer."""


def set_at(key, index, value):
    """``arrays[key][index] = value`` on a copy of that array."""
    def mutate(a):
        a[key] = a[key].copy()
        a[key][index] = value
    return mutate


def replace(key, fn):
    """``arrays[key] = fn(arrays[key])``."""
    def mutate(a):
        a[key] = fn(a[key])
    return mutate
