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
32-bit load brings in for ``SXTB16`` + ``SMLAD`` (measured fastest on the emulated Cortex-M4:
``benchmarks/mcu/bench_mcu.py``).

Each target also carries its export data, read by the deployment side (``tflite_export``):

- ``cost_profile``: the exporter's cost model for it, as data (fitted per-format costs, see the
  profiles below); ``None`` when the target has none (``gpu-ampere``: every eligible layer is
  rewritten into its one format, 2:4, and the rest is the node-pruned dense model);
- ``export_formats``: the sparse formats its runtime runs (names of ``tflite_export.formats``);
  by default the formats its cost profile prices;
- ``export_unsupported``: why the exporter cannot serve the target yet. ``tfscalpel.prune``
  refuses such a target with this reason (through :func:`tfscalpel.prune_model.apply_plan`), so a
  target ``prune()`` accepts is one the exporter can export.

Where a target's profile is borrowed from another's, the profile says so (``borrowed_from`` and
``source``) and the exporter's report prints it.

Users add their own with :func:`register_target`; :func:`get_target` resolves names.
"""
import copy

import keras

from tfscalpel.checks import is_integer
from tfscalpel.config_objects import ConfigObject

KINDS = ("mcu", "cpu", "gpu")
METHODS = ("group", "node", "2:4", "node+2:4", "none")
#: Group widths g the exporter's group-sparse kernels take (tflite_export.group_csr uses these).
GROUP_SIZES = (1, 2, 4, 8, 16)
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
        cost_profile: the exporter's cost profile (a dict in the layout of the profiles in this
            module), or None (no cost model; then ``export_formats`` names the one format every
            eligible layer is rewritten into).
        export_formats: the sparse formats the target's runtime runs; default: those its
            ``cost_profile`` prices (every entry but ``dense`` and those marked unsupported).
        export_unsupported: why the exporter cannot serve this target; ``prune(target=...)``
            refuses it with this reason. A target with neither a cost profile nor export formats
            gets a reason saying so.
    """

    def __init__(self, name, kind, group_width, default_dtype, methods, description="",
                 cost_profile=None, export_formats=None, export_unsupported=None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"HardwareTarget: name must be a non-empty string, got {name!r}")
        if kind not in KINDS:
            raise ValueError(f"target {name!r}: kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(group_width, dict) or not group_width:
            raise ValueError(f"target {name!r}: group_width must be a non-empty {{dtype: g}} dict")
        for dtype, g in group_width.items():
            if not is_integer(g) or g < 1:
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
        if cost_profile is not None and not isinstance(cost_profile, dict):
            raise ValueError(f"target {name!r}: cost_profile must be a dict or None, got "
                             f"{type(cost_profile).__name__}")
        if export_unsupported is not None and (not isinstance(export_unsupported, str)
                                               or not export_unsupported):
            raise ValueError(f"target {name!r}: export_unsupported must be a reason (a non-empty "
                             f"string) or None, got {export_unsupported!r}")
        self.cost_profile = copy.deepcopy(cost_profile)
        if export_formats is None and cost_profile is not None:
            export_formats = [fmt for fmt, by_dtype in cost_profile.get("formats", {}).items()
                              if fmt != "dense" and not all(
                                  "unsupported" in c for c in by_dtype.values())]
        self.export_formats = tuple(export_formats or ())
        if export_unsupported is None and cost_profile is None and not self.export_formats:
            export_unsupported = ("the target has no export data (a cost_profile, or the "
                                  "export_formats it runs without one)")
        self.export_unsupported = export_unsupported

    def group_size(self, dtype=None):
        """SIMD group width for ``dtype`` (default: the target's deployment dtype)."""
        dtype = self.default_dtype if dtype is None else dtype
        if dtype not in self.group_width:
            raise ValueError(f"target {self.name!r} has no group width for dtype {dtype!r}; "
                             f"known: {sorted(self.group_width)}")
        return self.group_width[dtype]

    @property
    def borrowed_from(self):
        """The target whose cost profile this one borrows, or None."""
        return (self.cost_profile or {}).get("borrowed_from")

    def get_config(self):
        return {"name": self.name, "kind": self.kind, "group_width": dict(self.group_width),
                "default_dtype": self.default_dtype, "methods": dict(self.methods),
                "description": self.description, "cost_profile": copy.deepcopy(self.cost_profile),
                "export_formats": list(self.export_formats),
                "export_unsupported": self.export_unsupported}


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


# ---------------------------------------------------------------------------------------------
# Cost profiles: how long one fully-connected layer takes at batch 1 on one thread, per format.
# ---------------------------------------------------------------------------------------------
# A profile says how long one fully-connected layer takes at batch 1 on one thread, as
# `fixed_ns + row_ns * out + unit_ns * units`, where `units` is weights (dense), stored groups
# (custom op, per g) or stored blocks (TFLite's block-sparse FC). Only differences between formats
# matter, so the interpreter's own per-run cost is left out; every builtin op (dense or
# block-sparse) gets the same fixed dispatch cost, and the custom op's fixed cost includes the
# ~0.8 us LiteRT adds per custom-op node over a builtin one (tflite_export/calibrate.py).
# Underestimating dense time is the safe direction: the contract is "never slower than dense".
#
# Where the numbers come from (x86-avx2):
# - dense (XNNPACK) and builtin_sparse: measured on this project's x86-64 dev host with the stock
#   LiteRT interpreter, one thread, batch 1, on 1024x1024, 784x300 and 300x100 at 50/75/90/95 %
#   block sparsity (float32: dense 84 us, 1x4 sparse 31 us at 90 % on 1024x1024; int8: dense
#   24 us, 1x16 sparse 28.5 us at 90 %), fitted to the linear form above.
# - custom (TFS_GROUP_SPARSE_FC): measured with `python -m tflite_export.calibrate` (the kernel
#   library's C timing hook, AVX2 path, 1 thread, batch 1, 7 shapes/densities per dtype and g, best
#   of 7) on the same 2-core dev host; the median of three calibrations, plus LiteRT's ~0.8 us
#   extra per custom node (recalibrated 2026-11-21 after the SIMD kernels' per-slot epilogue and
#   unrolled slot loops: per-row costs ~4x and g = 8 / 16 per-group costs ~1.5x lower). The host
#   is shared and noisy (per-group costs varied up to +-40 % between runs), so recalibrate on
#   the real target and pass the JSON as `target=`.

# Dense CONV_2D (XNNPACK) on the x86 host, per position: position_ns + mac_ns * K * out; one
# measurement (the AVX-512 host, described at x86-avx512's custom_conv below) serves both x86
# profiles' dense_conv.
_XNNPACK_CONV = {
    "float32": {"position_ns": 6.55, "patch_ns": 0.0, "output_ns": 0.0, "mac_ns": 0.02718},
    "int8": {"position_ns": 30.25, "patch_ns": 0.0, "output_ns": 0.0, "mac_ns": 0.006853},
}

# custom_conv (TFS_GROUP_SPARSE_CONV2D; added 2026-12-07): as x86-avx512's (below), fitted to
# `benchmarks/bench_kernels.py --conv --impl avx2` on the AVX-512 host (kernel path avx2, g = 8
# float32 / 16 int8 at 90 %). The dense side is XNNPACK on that host, which uses AVX-512 / VNNI:
# dense is priced lower than an AVX2 CPU runs it (the safe side). float32 sparse 19.2 / 14.5 us
# (conv1 / conv2, dense 11.6 / 43.9); int8 has no SpMM kernel without VNNI: 52.7 / 17.4 us
# against dense 19.4 / 12.9, so int8 convs stay dense on this target. float32 refitted
# 2026-12-07 for the host adapter's direct (im2col-free) conv path (tfs_gsconv_direct.c; conv1
# runs it, conv2's 8 x 8 output at 90 % keeps im2col): sparse 6.8 / 14.0 us against dense
# 11.7 / 43.9 (bench_kernels.py --conv[-layers] --impl avx2, load ~5); coarse beyond these shapes.
_X86_AVX2_CONV = {
    "float32": {"position_ns": 6.413, "patch_ns": 0.0, "widen_ns": 0.0, "tile_ns": 0.0,
                "host_tile": True, "row_ns": 0.0, "unit_ns": {"8": 0.6741},
                "dense_conv": _XNNPACK_CONV["float32"]},
    "int8": {"position_ns": 86.87, "patch_ns": 0.0, "widen_ns": 0.0, "tile_ns": 0.0,
             "host_tile": True, "row_ns": 0.0, "unit_ns": {"16": 1.156},
             "dense_conv": _XNNPACK_CONV["int8"]},
}
X86_AVX2 = {
    "name": "x86-avx2",
    "source": "measured on a 2-core x86-64 AVX2 dev host: dense/builtin with stock LiteRT, "
    "custom with the kernel timing hook (see tfscalpel/targets.py)",
    # A sparse format must be predicted at least this much faster than dense to be chosen,
    # because the contract is "never slower than dense" and the model has some error.
    "min_speedup": 1.15,
    "formats": {
        "dense": {
            "float32": {"fixed_ns": 300.0, "row_ns": 0.0, "unit_ns": 0.079},
            "int8": {"fixed_ns": 300.0, "row_ns": 0.0, "unit_ns": 0.023},
        },
        "builtin_sparse": {
            "float32": {"block": 4, "fixed_ns": 300.0, "row_ns": 2.0, "unit_ns": 1.15},
            "int8": {"block": 16, "fixed_ns": 300.0, "row_ns": 8.0, "unit_ns": 4.2},
        },
        "custom": {
            "float32": {
                "fixed_ns": 910.0,
                "row_ns": 1.2,
                "unit_ns": {"1": 0.48, "2": 0.54, "4": 0.37, "8": 0.58, "16": 0.95},
            },
            "int8": {
                "fixed_ns": 1055.0,
                "row_ns": 1.5,
                "unit_ns": {"1": 0.50, "2": 0.49, "4": 0.36, "8": 0.41, "16": 0.51},
            },
        },
        "custom_conv": _X86_AVX2_CONV,
    },
}

# Cortex-M4 (TFLite Micro): costs in estimated CPU cycles (only ratios matter), int8 only.
# Fitted with `python benchmarks/mcu/bench_mcu.py --fit` (2026-12-07, after the conv kernel's
# two-positions-per-decode / once-per-tile empty rows and the inline requantization): QEMU
# mps2-an386 with the counting plugin (exact instruction counts, cycles from the TRM's timing
# table, +-20 % absolute, deterministic) on LeNet-300-100's FC layers at g = 1, 2, 4, 8, 16 and
# LeNet-5's and the ConvNet's convs and FCs at g = 4, each at 50 and 90 % group sparsity (seeded
# random weights, GroupPattern's magnitude order; cycles depend on the stored groups only), every
# fit on relative errors, no safe-side scaling (the budget allocator needs the best estimate; the
# exporter keeps its min_speedup margin). --fit prints predicted vs measured per layer:
# - dense: the CMSIS-NN-style SMLAD kernel doing two rows per pass (benchmarks/mcu/dense_baseline.c),
#   the fair stand-in for TFLite Micro's CMSIS-NN FULLY_CONNECTED, fixed + per row + per weight
#   (2.375 cycles per MAC): exact on all 8 shapes;
# - custom: TFS_GROUP_SPARSE_FC's DSP path, cost_model.calibrate's least squares (fixed / row
#   shared across g): within 7 % on every layer of >= 100 rows (LeNet-5 fc1 +4.6..+6.7 %); the
#   10-row layers -30..+11 % (the int8 -> int16 widening of the input is per input, which the
#   linear form has no term for: the ConvNet's 3136x10 fc1 at 90 % is 30 % under, 3k cycles);
#   g = 4 breaks even at ~43 % group sparsity on 784x300 (~40 % measured), not ~75 % as on x86;
# - custom_conv (TFS_GROUP_SPARSE_CONV2D, tflite_export/conv_layers.py): im2col and the kernel
#   per output position and per patch byte, the patches' int16 widening, the FC core's fixed cost
#   once per tile, and per position a cost per filter that stores a group and per stored group
#   (tfscalpel.cost_profile.conv_time, the one formula the exporter and the budget allocator use):
#   all 10 conv measurements within -8.4..+5.7 % (LeNet-5 conv1 +5.7 / +2.8 %, conv2 +4.8 /
#   +2.3 %; ConvNet conv1 -0.7 / -8.4 %, conv2 -2.1 / +0.8 %, conv3 -3.1 / -3.9 % at 50 / 90 %).
#   The dense side (`dense_conv`) is TFLite Micro's own CONV_2D with CMSIS-NN (bench_tflm.py
#   --per-layer: each conv alone as a one-op model, TFLite Micro 90b983c2b3f1, CMSIS-NN
#   4ab83cc3cc98): Caffe's LeNet-5 conv1 (K = 25, 20 filters) 2,274,103 and conv2 (K = 500, 50)
#   3,512,135, the synthetic LeNet-5's (K = 25, 6) 1,427,383 and (K = 150, 16) 521,223 cycles,
#   4 points for 4 coefficients (exact on them). CMSIS-NN's conv costs ~105 cycles per output
#   and position on a 5x5x1 filter; the benchmark firmware's own im2col + SMLAD stand-in is not
#   what the exporter keeps (LeNet-5 conv1 1,971,259 cycles, 13 % under CMSIS-NN; conv2
#   4,125,367, 17 % over), so dense convs are priced from TFLite Micro, not from the stand-in.
# TFLite Micro's FULLY_CONNECTED has no sparse weights, so TFLite's block-sparse format is out.
CORTEX_M4 = {
    "name": "cortex-m4",
    "source": "estimated Cortex-M4 cycles on QEMU mps2-an386 (benchmarks/mcu/bench_mcu.py --fit; "
    "see tfscalpel/targets.py)",
    "time_unit": "cycles",
    "dtypes": ["int8"],
    # The cycle counts are deterministic, the estimate is not exact: a small margin.
    "min_speedup": 1.1,
    # TFLite Micro scratch of the custom op (tflite_export/formats/group_sparse.py,
    # tflm_workspace_bytes): int8 inputs widened to int16 once per node.
    "arena": {"custom": {"int8": {"per_input": 2, "fixed": 32}}},
    "formats": {
        "dense": {"int8": {"fixed_ns": 81.0, "row_ns": 83.5, "unit_ns": 2.375}},
        "builtin_sparse": {"int8": {"unsupported": "TFLite Micro's FULLY_CONNECTED has no sparse weights"}},
        "custom": {
            "int8": {
                "fixed_ns": 911.41,
                "row_ns": 129.89,
                "unit_ns": {"1": 9.374, "2": 11.59, "4": 16.12, "8": 25.41, "16": 62.04},
            },
        },
        "custom_conv": {"int8": {
            # im2col and the kernel's other work per output position, per patch byte; the
            # patches' int16 widening per byte
            "position_ns": 914.17, "patch_ns": 1.1874, "widen_ns": 4.2383,
            # the conv kernel's own per-position costs (two positions per weight decode, filters
            # without groups written once per tile): per filter storing a group, per stored g=4
            # group (tfscalpel.cost_profile.conv_time)
            "row_ns": 81.497, "unit_ns": {"4": 10.613},
            # TFLite Micro's CONV_2D on CMSIS-NN (arm_convolve_wrapper_s8), per output position
            "dense_conv": {"position_ns": 1673.8, "patch_ns": 6.971, "output_ns": 58.19,
                           "mac_ns": 1.8723},
        }},
    },
}


# Arm Cortex-A with NEON: estimated Neoverse N1 (Cortex-A76 class, with the dot product) cycles
# from `python benchmarks/cortex_a/bench_cortex_a.py --fit` (QEMU qemu-aarch64 -cpu neoverse-n1,
# exact instruction counts weighted by the Neoverse N1 Software Optimization Guide's issue costs,
# no cache model), 90 % group sparsity on 1024x1024, 784x300, 300x100 and 100x10, batch 1, refitted
# 2026-12-07 after the NEON kernels moved to the packed copy (8-row blocks, zero-point correction
# folded into the bias when the node is prepared), float32 refitted again the same day after its
# kernels read precomputed byte offsets of x (g = 4: an assembly block, 0.19-0.20x of dense):
# - dense: XNNPACK's FULLY_CONNECTED from the aarch64 ai-edge-litert 2.3.0 wheel, the runtime's
#   fixed cost per inference subtracted; fitted on the "best dense" column (float32 widths that
#   are not a multiple of 8 run a ~4x slower XNNPACK path, priced here as if they did not:
#   underestimating dense is the safe direction); float32 points within 2 %, int8 up to 18 %
#   under (XNNPACK's LiteRT counts move by ~100 cycles between runs, which only the 100x10 layer
#   feels);
# - custom: the NEON kernels (float32 FMLA g = 4/8/16; int8 SDOT g = 4/8/16), fixed / row costs
#   shared across g; tflite_export.calibrate's fit on relative errors, then scaled so that no
#   point is predicted below its count (float32 points come out 0-80 % above theirs, int8
#   0-63 %; the 1024x1024 layer 29-51 % and 16-29 %: the linear form cannot follow both the
#   10-row and the 1024-row layers); plus 2,000 cycles per node for
#   LiteRT's extra cost per custom node, *borrowed* from the x86 measurement (~0.8 us), not
#   measured on Arm. g = 1 / 2 have no NEON kernel (the portable C kernel runs) and are priced at
#   the portable kernel's per-group cost, so they are never chosen. TFLite's block-sparse FC was
#   not measured on Arm: unavailable. 2:4 is not offered: the NEON 2:4 kernels (no sparse hardware)
#   count 2.7x (float32) to 8x (int8) the dense cycles.
# Cores without the dot product (Cortex-A53/A72) run int8 on SMLAL, ~2-3x the SDOT cost: for them
# export float32, or int8 with target="host" on the device.
ARM_NEON = {
    "name": "arm-neon",
    "source": "estimated Neoverse N1 cycles under QEMU (benchmarks/cortex_a/bench_cortex_a.py; "
    "see tfscalpel/targets.py); LiteRT's per-node cost borrowed from x86",
    "time_unit": "cycles",
    # Emulated counts without a cache model: a wider margin than a measured profile.
    "min_speedup": 1.25,
    "formats": {
        "dense": {
            "float32": {"fixed_ns": 12.18, "row_ns": 0.0, "unit_ns": 0.2937},
            "int8": {"fixed_ns": 0.0, "row_ns": 0.0, "unit_ns": 0.0794},
        },
        "builtin_sparse": {
            "float32": {"unsupported": "TFLite's block-sparse FC was not measured on Cortex-A"},
            "int8": {"unsupported": "TFLite's block-sparse FC was not measured on Cortex-A"},
        },
        "custom": {
            "float32": {"fixed_ns": 2109.0, "row_ns": 19.08,
                        "unit_ns": {"1": 28.3, "2": 28.3, "4": 2.134, "8": 4.756, "16": 9.172}},
            "int8": {"fixed_ns": 2124.3, "row_ns": 25.01,
                     "unit_ns": {"1": 26.4, "2": 26.4, "4": 1.845, "8": 1.593, "16": 0.778}},
        },
    },
}


def _borrowed(profile, name, source):
    """A copy of ``profile`` for target ``name``, saying whose numbers it borrows and why."""
    borrowed = copy.deepcopy(profile)
    borrowed.update(name=name, borrowed_from=profile["name"], source=source)
    return borrowed


# x86-64 with AVX-512: measured with `python -m tflite_export.calibrate --base x86-avx512`
# (every format as a one-layer model through the host runtime, 1 thread, batch 1, 7 shapes and
# densities per dtype, best of 7) on a 2-core AMD EPYC with AVX-512 F/BW/VL and AVX512-VNNI
# (kernel paths avx512 / avx512_vnni), 2026-12-07, machine shared with other builds. Fitted by
# non-negative least squares, then scaled to the safe side of every measured point (dense never
# predicted slower than measured, sparse never faster): XNNPACK's float32 dense cost per weight
# varies ~2x with the shape here (0.045 ns on 1024x1024, 0.07-0.1 on LeNet's layers), which no
# line fits, so dense float32 is priced low and sparse float32 is chosen later than it could be.
# Dense int8 XNNPACK (VNNI) costs ~0.011 ns per weight here, ~2x less than on the AVX2 host.
# custom_conv (TFS_GROUP_SPARSE_CONV2D, tflite_export/conv_layers.py; added 2026-12-07): fitted
# on the same host to `benchmarks/bench_kernels.py --conv` (each conv of a LeNet-5-like model as
# a one-op model through the runtime, interleaved, load ~8 on 2 cores): conv1 K = 25, 20
# filters, 576 positions; conv2 K = 500, 50 filters, 64 positions; g = 16 at 90 %. Two points
# per dtype and side, two coefficients each (exact on them, coarse elsewhere): dense XNNPACK as
# position_ns + mac_ns * K * out per position; the conv op (host tile, SpMM kernels, node cost
# folded in) as position_ns + unit_ns[16] per stored group per position; other widths fall back
# to the FC entry's line per position (dearer: chosen only when clearly faster). float32:
# dense 11.6 / 43.9 us, sparse 13.5 / 13.1 us; int8: dense 19.4 / 12.9 us, sparse 26.0 / 5.5 us.
# float32 refitted 2026-12-07 for the host adapter's direct (im2col-free) conv path
# (tfs_gsconv_direct.c; conv1 runs it, conv2's 8 x 8 output at 90 % keeps im2col): sparse
# 6.8 / 12.5 us against dense 11.6 / 43.9 (bench_kernels.py --conv, same host, load ~5).
# The line prices every conv the same way, while the direct path's cost is stored weights x
# positions: coarse beyond these two shapes. `export(target="host")` measures instead of predicting.
_X86_AVX512_CONV = {
    "float32": {"position_ns": 7.101, "patch_ns": 0.0, "widen_ns": 0.0, "tile_ns": 0.0,
                "host_tile": True, "row_ns": 0.0, "unit_ns": {"16": 1.176},
                "dense_conv": _XNNPACK_CONV["float32"]},
    "int8": {"position_ns": 44.09, "patch_ns": 0.0, "widen_ns": 0.0, "tile_ns": 0.0,
             "host_tile": True, "row_ns": 0.0, "unit_ns": {"16": 0.2613},
             "dense_conv": _XNNPACK_CONV["int8"]},
}
X86_AVX512 = {
    "name": "x86-avx512",
    "source": "measured on a 2-core AMD EPYC with AVX-512 + VNNI through the host runtime "
    "(python -m tflite_export.calibrate; see tfscalpel/targets.py)",
    "min_speedup": 1.15,
    "formats": {
        "dense": {
            "float32": {
                "fixed_ns": 1129.6832,
                "row_ns": 0.0,
                "unit_ns": 0.0138
            },
            "int8": {
                "fixed_ns": 409.4156,
                "row_ns": 0.0,
                "unit_ns": 0.0104
            }
        },
        "builtin_sparse": {
            "float32": {
                "block": 4,
                "fixed_ns": 803.4254,
                "row_ns": 0.0,
                "unit_ns": 0.9316
            },
            "int8": {
                "block": 16,
                "fixed_ns": 4248.0655,
                "row_ns": 0.0,
                "unit_ns": 3.9404
            }
        },
        "custom": {
            "float32": {
                "fixed_ns": 1703.0079,
                "row_ns": 1.1566,
                "unit_ns": {
                    "1": 0.4406,
                    "2": 0.5017,
                    "4": 0.3022,
                    "8": 0.4909,
                    "16": 0.9422
                }
            },
            "int8": {
                "fixed_ns": 1839.8813,
                "row_ns": 0.0,
                "unit_ns": {
                    "1": 0.698,
                    "2": 0.6874,
                    "4": 0.6701,
                    "8": 0.7011,
                    "16": 0.7605
                }
            }
        },
        "custom_conv": _X86_AVX512_CONV,
    },
}
CORTEX_M7 = _borrowed(
    CORTEX_M4, "cortex-m7",
    "cortex-m4's cycle costs: the same DSP instructions (SMLAD/SXTB16) and kernel path, and "
    "TFLite Micro's dense FC uses the same CMSIS-NN DSP kernels, so the ratios carry over; the "
    "M7's dual issue and caches are not modelled (cycle counts are the M4's)")


_MCU = {"dense": "group", "conv": "group"}
_CPU = {"dense": "group", "conv": "node"}
_GPU = {"dense": "node+2:4", "conv": "node+2:4"}
for _t in (
    HardwareTarget("cortex-m4", "mcu", {"int8": 4, "int16": 2, "float32": 1}, "int8", _MCU,
                   "Arm Cortex-M4, DSP SIMD (SMLAD on 2x16 bit)", cost_profile=CORTEX_M4),
    HardwareTarget("cortex-m7", "mcu", {"int8": 4, "int16": 2, "float32": 1}, "int8", _MCU,
                   "Arm Cortex-M7, DSP SIMD as M4, dual issue, caches", cost_profile=CORTEX_M7),
    HardwareTarget("cortex-m55", "mcu", {"int8": 16, "int16": 8, "float32": 4}, "int8", _MCU,
                   "Arm Cortex-M55, Helium (MVE) 128-bit vectors", export_unsupported=(
                       "no Helium (MVE) kernels yet: its g=16 groups would run the Cortex-M4 DSP "
                       "path while TFLite Micro's dense layers run CMSIS-NN's Helium kernels, "
                       "which the cortex-m4 profile cannot price, so the exporter cannot keep "
                       "its never-slower-than-dense promise; use cortex-m4 (g=4) meanwhile")),
    HardwareTarget("x86-avx2", "cpu", {"float32": 8, "int8": 16}, "float32", _CPU,
                   "x86-64 with AVX2 (256-bit)", cost_profile=X86_AVX2),
    HardwareTarget("x86-avx512", "cpu", {"float32": 16, "int8": 16}, "float32", _CPU,
                   "x86-64 with AVX-512 (512-bit)", cost_profile=X86_AVX512),
    HardwareTarget("arm-neon", "cpu", {"float32": 4, "int8": 16}, "float32", _CPU,
                   "Arm Cortex-A with NEON (128-bit)", cost_profile=ARM_NEON),
    HardwareTarget("gpu-ampere", "gpu", {"float16": 1, "float32": 1, "int8": 1}, "float16", _GPU,
                   "NVIDIA Ampere or later: dense cores + 2:4 sparse tensor cores",
                   export_formats=("2:4",)),
):
    register_target(_t)
