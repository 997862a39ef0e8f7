"""TFS_NM_SPARSE_FC (2:4) on the host CPU vs dense XNNPACK: one table, one thread.

Per layer (LeNet's 784x300 and 300x100, the ConvNet's 1024x10, 1024x1024, 4096x1024) and batch,
microseconds per inference of
  dense   - the converted dense Keras Dense (same 2:4 weights) on LiteRT's CPU path (XNNPACK)
  2:4 rt  - the TFS_NM_SPARSE_FC model through our runtime
  2:4 k   - the kernel alone (AVX2 where available / portable), timed in C
Speedups are dense / x. Best of several C-timed loops. float32 and int8.

    python benchmarks/bench_nm_cpu.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import numpy as np  # noqa: E402

LAYERS = [(784, 300), (300, 100), (1024, 10), (1024, 1024), (4096, 1024)]


def _model(w, bias):
    import keras

    out_f, in_f = w.shape
    m = keras.Sequential([keras.Input((in_f,)), keras.layers.Dense(out_f)])
    m.layers[0].kernel.assign(w.T)
    m.layers[0].bias.assign(bias)
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    from bench_kernels import _best_kernel_time, _best_runtime_time
    from test_nm_kernels import random_2_4

    from tflite_export import flatbuffer, kernels, nm_export, runtime
    from tflite_export.kernels.nm import NMSparseFC

    impl = "avx2" if "avx2" in kernels.available_impls() else "portable"
    layers = LAYERS[:2] if args.quick else LAYERS
    batches = [1] if args.quick else [1, 16]
    rng = np.random.default_rng(0)
    print(f"TFS_NM_SPARSE_FC vs dense XNNPACK, 1 thread, kernel path {impl} (us per inference)")
    head = f"{'layer':>11}{'dtype':>9}{'batch':>7}{'dense':>9}{'2:4 rt':>9}{'2:4 k':>9}{'rt speedup':>12}{'k speedup':>11}"
    print(head)
    print("-" * len(head))
    for in_f, out_f in layers:
        w = random_2_4(rng, out_f, in_f, sparse_windows=0.0)
        bias = rng.standard_normal(out_f).astype(np.float32)
        keras_model = _model(w, bias)
        rep = rng.standard_normal((32, in_f)).astype(np.float32)
        for dtype in ("float32", "int8"):
            if dtype == "float32":
                result = nm_export.export_nm(keras_model)
            else:
                result = nm_export.export_nm(keras_model, quantize="int8", representative_data=rep, int8_io=True)
            assert [r.format for r in result.layers] == ["2:4"], result
            fb = flatbuffer.load(result.model_bytes)
            sg = fb.subgraphs[0]
            op = next(o for o in sg.operators
                      if fb.operatorCodes[o.opcodeIndex].customCode in (b"TFS_NM_SPARSE_FC", "TFS_NM_SPARSE_FC"))
            layer = NMSparseFC.from_blob(flatbuffer.tensor_data(fb, sg.tensors[int(op.inputs[1])], np.uint8))
            for batch in batches:
                if dtype == "float32":
                    x = rng.standard_normal((batch, in_f)).astype(np.float32)
                else:
                    x = rng.integers(-128, 128, (batch, in_f)).astype(np.int8)
                with runtime.load_stock(result.dense_model_bytes) as rt:
                    rt.run(x)
                    dense = _best_runtime_time(rt, x)
                with runtime.load(result.model_bytes) as rt:
                    rt.run(x)
                    nm_rt = _best_runtime_time(rt, x)
                nm_k = _best_kernel_time(type("K", (), {"time": lambda self, x, n: layer.time(x, n, impl)})(), x)
                print(f"{f'{in_f}x{out_f}':>11}{dtype:>9}{batch:>7}{dense * 1e6:>9.2f}{nm_rt * 1e6:>9.2f}"
                      f"{nm_k * 1e6:>9.2f}{dense / nm_rt:>11.2f}x{dense / nm_k:>10.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
