"""What one custom-op node costs on LiteRT beyond its kernel, and what fusing saves.

A model of N consecutive tiny layers (16 -> 16, ReLU, 30 % of groups of 4 kept) is exported
as dense builtin FULLY_CONNECTEDs, as N TFS_GROUP_SPARSE_FC nodes, and as those nodes fused into
one (tflite_export/fusion.py, N <= 16). The kernels are tiny, so the slope of the run time over
N is the per-node cost (LiteRT's buffer wrapping for every node input and output plus the
adapter's checks); the time at N = 1 adds LiteRT's fixed cost per run, which dense pays too.
Microseconds per run, batch 1, one thread, best of several C-timed loops, rounds interleaved.

    python benchmarks/bench_node_overhead.py [--rounds 5] [--dtype float32|int8]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

WIDTH = 16
COUNTS = (1, 4, 16)


def _chain_model(n: int, dtype: str, custom: bool) -> bytes:
    import keras

    from tflite_export import exporter

    rng = np.random.default_rng(n)
    names = [f"d{i}" for i in range(n)]
    model = keras.Sequential([keras.Input((WIDTH,))] + [keras.layers.Dense(WIDTH, activation="relu", name=name)
                                                          for name in names])
    for layer in model.layers:
        keep = np.repeat(rng.random((WIDTH // 4, WIDTH)) < 0.3, 4, axis=0)
        layer.kernel.assign(layer.kernel.numpy() * keep)
    rep = (lambda: ([rng.normal(size=(1, WIDTH)).astype(np.float32)] for _ in range(16))) \
        if dtype == "int8" else None
    fmt = "custom" if custom else "dense"
    with contextlib.redirect_stdout(io.StringIO()):
        return exporter.export(model, target="x86-avx2", quantize="int8" if dtype == "int8" else None,
                               representative_data=rep, formats={k: fmt for k in names},
                               group_sizes={k: 4 for k in names} if custom else None).model_bytes


def _time(model_bytes: bytes, iterations: int = 3000, reps: int = 5) -> float:
    from tflite_export import runtime

    with runtime.load(model_bytes) as rt:
        rt.run(np.zeros((1, WIDTH), rt.input_details[0].dtype))
        return min(rt.time_run(iterations) for _ in range(reps))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best is kept")
    ap.add_argument("--dtype", choices=("float32", "int8"), default="float32")
    args = ap.parse_args(argv)
    from tflite_export import fusion, host_info, kernels
    from tflite_export.quiet import converter_noise, filtered_stderr, litert_noise

    quiet = filtered_stderr(lambda line: converter_noise(line) or litert_noise(line)
                            or b"absl::InitializeLog" in line or b"cuInit" in line)
    with quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {}
        for n in COUNTS:
            custom = _chain_model(n, args.dtype, True)
            models[("dense", n)] = _chain_model(n, args.dtype, False)
            models[("custom", n)] = custom
            models[("fused", n)] = fusion.fuse(custom)
        best = {}
        for _ in range(args.rounds):
            for key, data in models.items():
                best[key] = min(best.get(key, 1.0), _time(data))
    print(host_info.describe(kernels.best_impl()))
    print(f"{args.dtype}, {WIDTH}x{WIDTH} layers, batch 1, 1 thread; microseconds per run "
          f"(best of {args.rounds} interleaved rounds)")
    head = " ".join(f"{f'N={n}':>8}" for n in COUNTS)
    print(f"{'model':<28}{head}   per layer (slope N={COUNTS[0]}..{COUNTS[-1]})")
    rows = (("dense builtin FCs", "dense"), ("custom nodes", "custom"), ("custom nodes, fused", "fused"))
    for label, kind in rows:
        ts = [best[(kind, n)] * 1e6 for n in COUNTS]
        slope = (ts[-1] - ts[0]) / (COUNTS[-1] - COUNTS[0])
        print(f"{label:<28}" + " ".join(f"{t:8.3f}" for t in ts) + f"   {slope:8.3f}")


if __name__ == "__main__":
    sys.exit(main())
