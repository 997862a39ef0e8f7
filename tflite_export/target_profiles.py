"""Built-in target profiles for the exporter's cost model: per-format costs in nanoseconds.

A profile says how long one fully-connected layer takes at batch 1 on one thread, as
`fixed_ns + row_ns * out + unit_ns * units`, where `units` is weights (dense), stored groups
(custom op, per g) or stored blocks (TFLite's block-sparse FC). Only differences between formats
matter, so the interpreter's own per-run cost is left out; every builtin op (dense or
block-sparse) gets the same fixed dispatch cost, and the custom op's fixed cost includes the
~0.8 us LiteRT adds per custom-op node over a builtin one (see calibrate.py). Underestimating dense time is the
safe direction: the contract is "never slower than dense".

Where the numbers come from (x86-avx2):
- dense (XNNPACK) and builtin_sparse: measured on this project's x86-64 dev host with the stock
  LiteRT interpreter, one thread, batch 1, on 1024x1024, 784x300 and 300x100 at 50/75/90/95 %
  block sparsity (float32: dense 84 us, 1x4 sparse 31 us at 90 % on 1024x1024; int8: dense
  24 us, 1x16 sparse 28.5 us at 90 %), fitted to the linear form above.
- custom (TFS_GROUP_SPARSE_FC): measured with `python -m tflite_export.calibrate` (the kernel
  library's C timing hook, AVX2 path, 1 thread, batch 1, 7 shapes/densities per dtype and g, best
  of 7) on the same 2-core dev host; the median of three calibrations, plus LiteRT's ~0.8 us
  extra per custom node (recalibrated 2026-11-21 after the SIMD kernels' per-slot epilogue and
  unrolled slot loops: per-row costs ~4x and g = 8 / 16 per-group costs ~1.5x lower). The host is shared and noisy (per-group costs varied up to +-40 % between
  runs), so recalibrate on the real target and pass the JSON as `target=`.
"""
from __future__ import annotations

X86_AVX2 = {
    "name": "x86-avx2",
    "source": "measured on a 2-core x86-64 AVX2 dev host: dense/builtin with stock LiteRT, "
    "custom with the kernel timing hook (see module docstring)",
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
    },
}

# Cortex-M4 (TFLite Micro): costs in estimated CPU cycles (only ratios matter), int8 only.
# From `benchmarks/mcu/bench_mcu.py --json` on QEMU mps2-an386 with the counting plugin (exact
# instruction counts, cycles from the TRM's timing table, +-20 % absolute, deterministic), on the
# LeNet-300-100 int8 layers (784x300, 300x100, 100x10) of the main job's 92 % model, exported at
# g = 1, 2, 4, 8, 16 (15 custom-op measurements, 3 dense), least squares with fixed_ns / row_ns
# shared across g (cost_model.calibrate's layout); every measurement within 10 % of the fit
# (the largest misses are the 10-row layer, the most expensive one stays within 1 %):
# - dense: the CMSIS-NN-style SMLAD kernel doing two rows per pass (benchmarks/mcu/dense_baseline.c),
#   the fair stand-in for TFLite Micro's CMSIS-NN FULLY_CONNECTED: 2.38 cycles per MAC;
# - custom: TFS_GROUP_SPARSE_FC's DSP path (input widening included in the per-node and per-row
#   terms): g = 4 costs 14.8 cycles per stored group (3.7 per stored weight), so on this core
#   g = 4 pays off from ~35 % group sparsity, not ~75 % as on x86.
# TFLite Micro's FULLY_CONNECTED has no sparse weights, so TFLite's block-sparse format is out.
CORTEX_M4 = {
    "name": "cortex-m4",
    "source": "estimated Cortex-M4 cycles on QEMU mps2-an386 (benchmarks/mcu/bench_mcu.py --json; "
    "see module comments)",
    "time_unit": "cycles",
    "dtypes": ["int8"],
    # The cycle counts are deterministic, the estimate is not exact: a small margin.
    "min_speedup": 1.1,
    "formats": {
        "dense": {"int8": {"fixed_ns": 136.4, "row_ns": 86.3, "unit_ns": 2.380}},
        "builtin_sparse": {"int8": {"unsupported": "TFLite Micro's FULLY_CONNECTED has no sparse weights"}},
        "custom": {
            "int8": {
                "fixed_ns": 799.4,
                "row_ns": 137.3,
                "unit_ns": {"1": 9.17, "2": 11.30, "4": 14.76, "8": 25.17, "16": 63.06},
            },
        },
    },
}

PROFILES = {"x86-avx2": X86_AVX2, "cortex-m4": CORTEX_M4}
