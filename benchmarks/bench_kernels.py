"""Group-sparse FC kernel benchmark: one table, batch 1, one thread.

Per layer (1024x1024, LeNet's 784x300 and 300x100) and group sparsity (50/75/90/95 %), float32
and int8, microseconds per inference of:
  dense    - the converted dense Keras Dense on LiteRT's CPU path (XNNPACK), our runtime
  builtin  - TFLite's own block-sparse FC (converter EXPERIMENTAL_SPARSITY; Keras blocks (4, 1)
             float32 / (16, 1) int8), same runtime
  gN rt    - TFS_GROUP_SPARSE_FC with group width N through the runtime (a one-node model)
  gN k     - the same kernel called directly (no runtime), timed in C
Speedups are dense / x. Every time is the best of several C-timed loops.

    python benchmarks/bench_kernels.py [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import numpy as np  # noqa: E402

LAYERS = [(1024, 1024), (784, 300), (300, 100)]
SPARSITIES = [0.5, 0.75, 0.9, 0.95]


def _best_runtime_time(rt, x, target_s=0.15, reps=7):
    rt.run(x)
    t = rt.time_run(20)
    iters = max(20, int(target_s / reps / max(t, 1e-7)))
    return min(rt.time_run(iters) for _ in range(reps))


def _best_kernel_time(layer, x, target_s=0.15, reps=7):
    t = layer.time(x, 20)
    iters = max(20, int(target_s / reps / max(t, 1e-7)))
    return min(layer.time(x, iters) for _ in range(reps))


def _weights(rng, in_f, out_f, g, sparsity):
    """Keras-style group pruning: exactly round(sparsity * groups) groups of g zeroed, per layer."""
    import custom_op_testlib as tl

    return tl.random_group_sparse(rng, out_f, in_f, g, 1.0 - sparsity)


def _convert(w, bias, int8, sparse_builtin=False):
    import keras
    import tensorflow as tf

    out_f, in_f = w.shape
    m = keras.Sequential([keras.Input((in_f,)), keras.layers.Dense(out_f)])
    m.layers[0].kernel.assign(w.T)
    m.layers[0].bias.assign(bias)
    c = tf.lite.TFLiteConverter.from_keras_model(m)
    opts = []
    if int8:
        rng = np.random.default_rng(0)
        opts.append(tf.lite.Optimize.DEFAULT)
        c.representative_dataset = lambda: (
            [rng.normal(size=(1, in_f)).astype(np.float32)] for _ in range(20))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
    if sparse_builtin:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    c.optimizations = opts
    from tflite_export.quiet import converter_noise, filtered_stderr

    # The export archive prints its endpoints on stdout; the converter logs on fd 2.
    with contextlib.redirect_stdout(io.StringIO()), filtered_stderr(converter_noise):
        return c.convert()


def _custom_model(data_int8, w, bias, g):
    """A custom-op model for float weights w, or for the int8 FC inside data_int8 (same quant)."""
    import custom_op_testlib as tl
    from tflite_export import flatbuffer
    from tensorflow.lite.python import schema_py_generated as schema

    if data_int8 is None:
        arrays = tl.layer_arrays(w, bias, g)
        return tl.custom_op_model(arrays), arrays
    m = flatbuffer.load(data_int8)
    sg = m.subgraphs[0]
    (op,) = [o for o in sg.operators
             if m.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED]
    t = sg.tensors
    wq = flatbuffer.tensor_data(m, t[op.inputs[1]], np.int8)
    bq = flatbuffer.tensor_data(m, t[op.inputs[2]], np.int32)
    qx, qw, qy = (t[i].quantization for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    out_f = wq.shape[0]
    scale = (np.float32(qx.scale[0]) * np.asarray(qw.scale, np.float32)) / np.float32(qy.scale[0])
    p = dict(in_zp=int(qx.zeroPoint[0]), out_zp=int(qy.zeroPoint[0]), act_min=-128, act_max=127,
             multiplier=np.full(out_f, 1 << 30), shift=np.zeros(out_f), scale=scale)
    arrays = tl.layer_arrays(wq, bq, g, int8=p)
    return tl.custom_op_model(arrays, tl._quant(qx.scale[0], p["in_zp"]),
                              tl._quant(qy.scale[0], p["out_zp"])), arrays


def bench(layers, sparsities, gs_f32=(4, 8), gs_i8=(4, 16)):
    from tflite_export import kernels, runtime

    rows = []
    for in_f, out_f in layers:
        for sp in sparsities:
            for dtype in ("float32", "int8"):
                int8 = dtype == "int8"
                rng = np.random.default_rng(in_f * 100 + int(sp * 100))
                block = 16 if int8 else 4
                bias = rng.normal(size=out_f).astype(np.float32) * 0.1
                x = (rng.integers(-128, 128, (1, in_f)).astype(np.int8) if int8
                     else rng.normal(size=(1, in_f)).astype(np.float32))
                res = {"layer": f"{in_f}x{out_f}", "sparsity": sp, "dtype": dtype}
                wb = _weights(rng, in_f, out_f, block, sp)
                dense_data = _convert(wb, bias, int8)
                with runtime.load(dense_data) as rt:
                    res["dense"] = _best_runtime_time(rt, x)
                with runtime.load(_convert(wb, bias, int8, sparse_builtin=True)) as rt:
                    res["builtin"] = _best_runtime_time(rt, x)
                for g in (gs_i8 if int8 else gs_f32):
                    w = wb if g == block else _weights(rng, in_f, out_f, g, sp)
                    data_i8 = (dense_data if g == block else _convert(w, bias, True)) if int8 else None
                    model, arrays = _custom_model(data_i8, w, bias, g)
                    with runtime.load(model) as rt:
                        res[f"g{g} rt"] = _best_runtime_time(rt, x)
                    layer = kernels.GroupSparseFC(*arrays.values())
                    res[f"g{g} k"] = _best_kernel_time(layer, x)
                rows.append(res)
                print(_fmt_row(res), flush=True)
    return rows


def _fmt_row(r):
    d = r["dense"]
    parts = [f"{r['layer']:>9} {int(r['sparsity'] * 100):>3}% {r['dtype']:>7} | dense {d * 1e6:7.2f}"
             f" | builtin {r['builtin'] * 1e6:7.2f} ({d / r['builtin']:5.2f}x)"]
    for k in r:
        if k.startswith("g") and k.endswith(" rt"):
            g = k.split()[0]
            parts.append(f"{g} rt {r[k] * 1e6:6.2f} ({d / r[k]:5.2f}x) k {r[g + ' k'] * 1e6:6.2f}"
                         f" ({d / r[g + ' k']:5.2f}x)")
    return " | ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only 1024x1024 at 90 and 95 %%")
    args = ap.parse_args(argv)
    from tflite_export import kernels

    print(f"kernel path: {kernels.best_impl()} (available: {', '.join(kernels.available_impls())});"
          " times in microseconds, batch 1, 1 thread; speedup = dense / time")
    layers, sps = (LAYERS[:1], [0.9, 0.95]) if args.quick else (LAYERS, SPARSITIES)
    bench(layers, sps)


if __name__ == "__main__":
    main()
