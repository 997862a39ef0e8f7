"""Built-in target profiles for the exporter's cost model: per-format costs in nanoseconds.

A profile says how long one fully-connected layer takes at batch 1 on one thread, as
`fixed_ns + row_ns * out + unit_ns * units`, where `units` is weights (dense), stored groups
(custom op, per g) or stored blocks (TFLite's block-sparse FC). Only differences between formats
matter, so the interpreter's own per-run cost is left out; every builtin op (dense or
block-sparse) gets the same fixed dispatch cost, and the custom op 0.35 us more (measured
overhead of one custom-op node, notes/litert-custom-ops.md). Underestimating dense time is the
safe direction: the contract is "never slower than dense".

Where the numbers come from (x86-avx2):
- dense (XNNPACK) and builtin_sparse: measured on this project's x86-64 dev host with the stock
  LiteRT interpreter, one thread, batch 1, on 1024x1024, 784x300 and 300x100 at 50/75/90/95 %
  block sparsity (float32: dense 84 us, 1x4 sparse 31 us at 90 % on 1024x1024; int8: dense
  24 us, 1x16 sparse 28.5 us at 90 %), fitted to the linear form above.
- custom (TFS_GROUP_SPARSE_FC): PROVISIONAL until the kernel benchmark reports; set from the
  kernel's design targets in issue 3 (float32 >= 5x dense at 90 %, int8 >= 3x at 90 %) with a
  per-group cost growing with g. `tflite_export.cost_model.calibrate` replaces them with a
  least-squares fit of measured kernel timings.
"""
from __future__ import annotations

X86_AVX2 = {
    "name": "x86-avx2",
    "source": "dense/builtin measured (stock LiteRT, 1 thread); custom provisional (issue-3 targets)",
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
                "fixed_ns": 650.0,
                "row_ns": 2.0,
                "unit_ns": {"1": 0.45, "2": 0.5, "4": 0.6, "8": 0.9, "16": 1.6},
            },
            "int8": {
                "fixed_ns": 650.0,
                "row_ns": 2.0,
                "unit_ns": {"1": 0.3, "2": 0.25, "4": 0.22, "8": 0.35, "16": 0.65},
            },
        },
    },
}

PROFILES = {"x86-avx2": X86_AVX2}
