"""Hardware targets as data: what parallelism a target has, and which pruning fits which layer.

A :class:`HardwareTarget` says the SIMD group width per dtype (Scalpel's group size ``g``: how
many consecutive weights one vector load consumes, so a surviving group costs one load and one
index) and the method per layer type:

- ``"group"``: SIMD-aware group pruning of the weights (the layer keeps its shape),
- ``"node"``: node pruning with trained gates (whole units / channels removed by ``strip``),
- ``"node+2:4"``: node pruning, plus 2:4 structured sparsity where the layer's input width is a
  multiple of 4 and does not itself shrink (sparse tensor cores).

Group widths are one vector register of the target divided by the element size, capped at 16
(the widest group the project's kernels run); for Cortex-M4/M7 int8 it is the 4 int8 values one
32-bit load brings in for ``SXTB16`` + ``SMLAD`` (measured fastest in notes/cortex-m4-emulation.md).

Users add their own with :func:`register_target`; :func:`get_target` resolves names.
"""
import keras

from tfscalpel.config_objects import ConfigObject

KINDS = ("mcu", "cpu", "gpu")
METHODS = ("group", "node", "2:4", "node+2:4", "none")
LAYER_TYPES = ("dense", "conv")
_TARGETS = {}


@keras.saving.register_keras_serializable(package="tfscalpel")
class HardwareTarget(ConfigObject):
    """One hardware target.

    Args:
        name: registry name, e.g. ``"cortex-m4"``.
        kind: ``"mcu"``, ``"cpu"`` or ``"gpu"``.
        group_width: ``{dtype: g}`` SIMD group width per weight dtype.
        default_dtype: the dtype models are deployed in on this target (a key of group_width).
        methods: ``{"dense": method, "conv": method}``, each one of :data:`METHODS`.
        description: one line for tables.
    """

    def __init__(self, name, kind, group_width, default_dtype, methods, description=""):
        if not isinstance(name, str) or not name:
            raise ValueError(f"HardwareTarget: name must be a non-empty string, got {name!r}")
        if kind not in KINDS:
            raise ValueError(f"target {name!r}: kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(group_width, dict) or not group_width:
            raise ValueError(f"target {name!r}: group_width must be a non-empty {{dtype: g}} dict")
        for dtype, g in group_width.items():
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise ValueError(
                    f"target {name!r}: group_width[{dtype!r}] must be an integer >= 1, got {g!r}")
        if default_dtype not in group_width:
            raise ValueError(f"target {name!r}: default_dtype {default_dtype!r} is not one of "
                             f"its group_width dtypes {sorted(group_width)}")
        if not isinstance(methods, dict) or set(methods) != set(LAYER_TYPES):
            raise ValueError(f"target {name!r}: methods must map exactly {LAYER_TYPES} to a "
                             f"method, got {methods!r}")
        for layer_type, method in methods.items():
            if method not in METHODS:
                raise ValueError(f"target {name!r}: methods[{layer_type!r}] must be one of "
                                 f"{METHODS}, got {method!r}")
        self.name, self.kind, self.description = name, kind, description
        self.group_width = dict(group_width)
        self.default_dtype = default_dtype
        self.methods = dict(methods)

    def group_size(self, dtype=None):
        """SIMD group width for ``dtype`` (default: the target's deployment dtype)."""
        dtype = self.default_dtype if dtype is None else dtype
        if dtype not in self.group_width:
            raise ValueError(f"target {self.name!r} has no group width for dtype {dtype!r}; "
                             f"known: {sorted(self.group_width)}")
        return self.group_width[dtype]

    def get_config(self):
        return {"name": self.name, "kind": self.kind, "group_width": dict(self.group_width),
                "default_dtype": self.default_dtype, "methods": dict(self.methods),
                "description": self.description}


def register_target(target, overwrite=False):
    """Add a :class:`HardwareTarget` (or its config dict) to the registry; returns it."""
    if isinstance(target, dict):
        target = HardwareTarget(**target)
    if not isinstance(target, HardwareTarget):
        raise ValueError(f"register_target needs a HardwareTarget or its config dict, got {target!r}")
    if target.name in _TARGETS and not overwrite:
        raise ValueError(f"target {target.name!r} is already registered; pass overwrite=True")
    _TARGETS[target.name] = target
    return target


def known_targets():
    """Names of the registered targets, sorted."""
    return sorted(_TARGETS)


def get_target(spec):
    """Resolve a target from a name, a :class:`HardwareTarget` or a config dict."""
    if isinstance(spec, HardwareTarget):
        return spec
    if isinstance(spec, dict):
        return HardwareTarget(**spec)
    if isinstance(spec, str) and spec.strip().lower() in _TARGETS:
        return _TARGETS[spec.strip().lower()]
    raise ValueError(f"unknown target {spec!r}; known targets: {known_targets()} (add one with "
                     "tfscalpel.register_target)")


_MCU = {"dense": "group", "conv": "group"}
_CPU = {"dense": "group", "conv": "node"}
_GPU = {"dense": "node+2:4", "conv": "node+2:4"}
for _t in (
    HardwareTarget("cortex-m4", "mcu", {"int8": 4, "int16": 2, "float32": 1}, "int8", _MCU,
                   "Arm Cortex-M4, DSP SIMD (SMLAD on 2x16 bit)"),
    HardwareTarget("cortex-m7", "mcu", {"int8": 4, "int16": 2, "float32": 1}, "int8", _MCU,
                   "Arm Cortex-M7, DSP SIMD as M4, dual issue, caches"),
    HardwareTarget("cortex-m55", "mcu", {"int8": 16, "int16": 8, "float32": 4}, "int8", _MCU,
                   "Arm Cortex-M55, Helium (MVE) 128-bit vectors"),
    HardwareTarget("x86-avx2", "cpu", {"float32": 8, "int8": 16}, "float32", _CPU,
                   "x86-64 with AVX2 (256-bit)"),
    HardwareTarget("x86-avx512", "cpu", {"float32": 16, "int8": 16}, "float32", _CPU,
                   "x86-64 with AVX-512 (512-bit)"),
    HardwareTarget("arm-neon", "cpu", {"float32": 4, "int8": 16}, "float32", _CPU,
                   "Arm Cortex-A with NEON (128-bit)"),
    HardwareTarget("gpu-ampere", "gpu", {"float16": 1, "float32": 1, "int8": 1}, "float16", _GPU,
                   "NVIDIA Ampere or later: dense cores + 2:4 sparse tensor cores"),
):
    register_target(_t)
