"""Bazel py_test (//:smoke_test): the flow end to end from Bazel's runfiles, with the kernel
library Bazel built (//:tflite_export/kernels/_tfs_kernels.so). Not collected by pytest (no
test_ prefix); scripts/bazel_check.sh runs it."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfscalpel  # noqa: E402
import tflite_export  # noqa: E402
from tflite_export import kernels, runtime  # noqa: E402


def main():
    keras.utils.set_random_seed(0)
    # The packages and the kernel library come from Bazel's runfiles, not the source tree.
    lib = kernels._library_path()
    assert "runfiles" in lib and lib.endswith("_tfs_kernels.so"), lib
    assert "runfiles" in tfscalpel.__file__, tfscalpel.__file__

    from tfscalpel import models

    model = models.lenet_300_100()
    plan = tfscalpel.plan(model, "cortex-m4")
    assert [p.method for p in plan.layers] == ["group"] * 3, plan
    pruned = tfscalpel.prune(model, target="cortex-m4", sparsity=0.9)
    tfscalpel.update_pruning(pruned)
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    assert all(abs(r.density - 0.1) < 0.01 for r in report.layers), report

    x = np.random.default_rng(0).normal(size=(8, 784)).astype("float32")
    g = report.group_sizes()
    result = tflite_export.export(stripped, group_sizes=g, formats={name: "custom" for name in g})
    with runtime.load(result.model_bytes) as rt:
        got = rt.run(x)[0]
    want = stripped.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    print(f"OK: kernels from {lib}; {len(result.model_bytes):,} bytes, max diff "
          f"{np.max(np.abs(got - want)):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
