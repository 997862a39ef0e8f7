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
  extra per custom node. The host is shared and noisy (per-group costs varied up to +-40 % between
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
                "fixed_ns": 800.0,
                "row_ns": 4.0,
                "unit_ns": {"1": 0.63, "2": 0.54, "4": 0.43, "8": 0.99, "16": 1.47},
            },
            "int8": {
                "fixed_ns": 1025.0,
                "row_ns": 5.5,
                "unit_ns": {"1": 0.51, "2": 0.49, "4": 0.30, "8": 0.48, "16": 0.86},
            },
        },
    },
}

PROFILES = {"x86-avx2": X86_AVX2}
